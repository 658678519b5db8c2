"""What a Dask sweep costs the calling process, against a plain ``client.map`` of the runner.

The cluster (scheduler and two worker processes) runs in a process of its own, as
on a real cluster, so the CPU time measured here (``RUSAGE_SELF``: every thread of
this process) is the client's alone: submitting, gathering, and for entropic,
validation, claims, journalling and the database. Both sides run the same runner
(8 ms, writing a small file) on the same points, one after the other, on the same
cluster. Goal: entropic's CPU per point at most 1.5x the plain map's.

With ``--benchmark-disable`` (CI's smoke run) the sweep is small and only the
agreement of the outputs is checked.
"""

from __future__ import annotations

import logging
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from entropic import Base, Mapped, Store

OVERHEAD_MAX = 1.5
HERE = str(Path(__file__).resolve().parent)

CLUSTER = """
import sys, time
from distributed import LocalCluster
cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")
print(cluster.scheduler_address, flush=True)
sys.stdin.read()
cluster.close()
"""


class Remote(Base):
    __tablename__ = "bench_remote"

    i: Mapped[int]
    x: Mapped[float]


def runner(params: dict[str, Any]) -> None:
    """About 8 ms of work, then a small result file."""
    time.sleep(0.008)
    Path(params["result_file"]).write_text(f"{params['i']}")


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _cpu_of(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = _cpu()
    out = fn()
    return _cpu() - start, out


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", CLUSTER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        # The workers import this module to find the runner, as they would a user's.
        env={**os.environ, "PYTHONPATH": os.pathsep.join([HERE, os.environ.get("PYTHONPATH", "")])},
    )
    try:
        assert proc.stdout is not None
        address = proc.stdout.readline().strip()
        assert address.startswith("tcp://"), address
        yield address
    finally:
        assert proc.stdin is not None
        assert proc.stdout is not None
        proc.stdin.close()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def test_calling_process_cpu_vs_plain_client_map(
    benchmark: BenchmarkFixture, scheduler: str, tmp_path: Path
) -> None:
    from distributed import Client

    logging.getLogger("entropic").setLevel(logging.WARNING)
    n = 100 if benchmark.disabled else 2_000
    points = [{"i": i, "x": i / 7} for i in range(n)]
    with Client(scheduler) as client:
        # Both sides on a warm cluster: the workers have run each function once.
        plain_dir = tmp_path / "plain"
        plain_dir.mkdir()
        client.gather(client.map(runner, [{"i": -1, "result_file": str(plain_dir / "w")}]))
        with Store(
            runner, Remote, results_dir=tmp_path / "w", db_url=f"sqlite:///{tmp_path}/w.db"
        ) as store:
            store.sweep([{"i": -1, "x": 0.0}], client=client)

        def plain() -> list[Any]:
            calls = [{**p, "result_file": str(plain_dir / f"{p['i']}.txt")} for p in points]
            return list(client.gather(client.map(runner, calls, pure=False)))

        with Store(
            runner, Remote, results_dir=tmp_path / "e", db_url=f"sqlite:///{tmp_path}/e.db"
        ) as store:
            entropic_cpu, records = _cpu_of(
                lambda: store.sweep(points, client=client, fallback=False)
            )
        plain_cpu, _ = _cpu_of(plain)
    assert [r.i for r in records] == list(range(n))
    assert all(Path(r.result_file).read_text() == str(r.i) for r in records)
    assert sorted(p.name for p in plain_dir.glob("*.txt")) == sorted(f"{i}.txt" for i in range(n))
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    if benchmark.disabled:
        return
    ratio = entropic_cpu / plain_cpu
    benchmark.extra_info.update(
        {
            "points": n,
            "entropic_cpu_us_per_point": round(entropic_cpu / n * 1e6, 1),
            "plain_map_cpu_us_per_point": round(plain_cpu / n * 1e6, 1),
            "ratio": round(ratio, 3),
        }
    )
    print(
        f"\ncalling process CPU per point: entropic {entropic_cpu / n * 1e6:.0f} µs, plain "
        f"client.map {plain_cpu / n * 1e6:.0f} µs, ratio {ratio:.2f} (goal <= {OVERHEAD_MAX})"
    )
    assert ratio <= OVERHEAD_MAX, benchmark.extra_info

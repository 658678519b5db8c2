"""Many processes sweeping one store: each point runs once, everyone gets every record.

The processes are real (subprocesses of the test) and share an SQLite file or a
PostgreSQL database; runner calls are counted through a file every process
appends one line to per call.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from entropic import Base, Mapped, Store, hash_params
from entropic._storage.tables import CLAIMS
from entropic.models import utcnow

HERE = Path(__file__).parent


class Shared(Base):
    __tablename__ = "procs_shared"

    i: Mapped[int]
    x: Mapped[float]


class Appender:
    """Appends the id of every call to a file (one write per line, so processes never mix)."""

    def __init__(
        self, calls: str, pause: float = 0.0, hang_on: int = -1, started: str = ""
    ) -> None:
        self.calls = calls
        self.pause = pause
        self.hang_on = hang_on
        self.started = started

    def __call__(self, params: dict[str, Any]) -> None:
        with open(self.calls, "a") as handle:
            handle.write(params["id"] + "\n")
        if params["i"] == self.hang_on:
            Path(self.started).write_text("started")
            time.sleep(600)
        if self.pause:
            time.sleep(self.pause)
        Path(params["result_file"]).write_text(f"{params['i']}")


def points(start: int, stop: int) -> list[dict[str, Any]]:
    return [{"i": i, "x": i / 8} for i in range(start, stop)]


def child(
    db_url: str, results: str, calls: str, start: str, stop: str, out: str, *rest: str
) -> None:
    """A process of a batch job: sweep a range of the grid and write the ids it got back."""
    pause = float(rest[0]) if rest else 0.0
    hang_on = int(rest[1]) if len(rest) > 1 else -1
    started = rest[2] if len(rest) > 2 else ""
    runner = Appender(calls, pause, hang_on, started)
    with Store(runner, Shared, results_dir=results, file_suffix=".txt", db_url=db_url) as store:
        records = store.sweep(points(int(start), int(stop)))
        Path(out).write_text(json.dumps([r.id for r in records]))


def _spawn(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    code = (
        f"import sys; sys.path.insert(0, {str(HERE)!r}); "
        "import test_sweep_procs as m; m.child(*sys.argv[1:])"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        env={**os.environ, **(env or {})},
        stderr=subprocess.PIPE,
    )


def _calls(path: Path) -> Counter[str]:
    if not path.exists():
        return Counter()
    return Counter(path.read_text().split())


@pytest.mark.parametrize("processes", [2, 4])
def test_overlapping_grids_run_each_point_once(
    shared_db_url: str, tmp_path: Path, processes: int
) -> None:
    results, calls = tmp_path / "results", tmp_path / "calls.txt"
    # Each process sweeps 300 points; neighbours overlap by 150.
    ranges = [(k * 150, k * 150 + 300) for k in range(processes)]
    children = [
        _spawn(
            shared_db_url,
            str(results),
            str(calls),
            str(a),
            str(b),
            str(tmp_path / f"out{k}"),
            "0.002",
        )
        for k, (a, b) in enumerate(ranges)
    ]
    for proc in children:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()
    counted = _calls(calls)
    everything = {hash_params(p) for p in points(0, ranges[-1][1])}
    assert set(counted) == everything
    assert max(counted.values()) == 1, [k for k, v in counted.items() if v > 1][:5]
    for k, (a, b) in enumerate(ranges):
        got = json.loads((tmp_path / f"out{k}").read_text())
        assert got == [hash_params(p) for p in points(a, b)]
    with Store(
        Appender(str(calls)), Shared, results_dir=results, file_suffix=".txt", db_url=shared_db_url
    ) as store:
        again = store.sweep(points(0, ranges[-1][1]))
        assert [Path(r.result_file).read_text() for r in again] == [str(r.i) for r in again]
        assert store.failures() == []
        with store.engine.connect() as conn:
            assert conn.scalar(sa.select(sa.func.count()).select_from(CLAIMS)) == 0
    assert sum(_calls(calls).values()) == len(everything)


def _spawn_hung(
    db_url: str, results: Path, calls: Path, started: Path, out: Path
) -> subprocess.Popen[bytes]:
    """A child sweeping points 0..19 that hangs on point 5; returned once it has started it."""
    hung = _spawn(db_url, str(results), str(calls), "0", "20", str(out), "0", "5", str(started))
    deadline = time.monotonic() + 60
    while not started.exists():
        assert hung.poll() is None, hung.communicate()[1].decode()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return hung


def test_a_claim_of_a_killed_process_is_taken_over(shared_db_url: str, tmp_path: Path) -> None:
    results, calls, started = tmp_path / "results", tmp_path / "calls.txt", tmp_path / "started"
    hung = _spawn_hung(shared_db_url, results, calls, started, tmp_path / "out0")
    # Built while the owner lives, so its recovery leaves the claims alone.
    store = Store(
        Appender(str(calls)), Shared, results_dir=results, file_suffix=".txt", db_url=shared_db_url
    )
    with store:
        hung.send_signal(signal.SIGKILL)
        hung.communicate()  # reaped: its pid is gone
        with store.engine.connect() as conn:
            assert conn.scalar(sa.select(sa.func.count()).select_from(CLAIMS)) > 0
        start = time.monotonic()
        records = store.sweep(points(0, 20))
        assert time.monotonic() - start < 30
        with store.engine.connect() as conn:
            assert conn.scalar(sa.select(sa.func.count()).select_from(CLAIMS)) == 0
    assert [r.i for r in records] == list(range(20))
    counted = _calls(calls)
    assert counted[hash_params({"i": 5, "x": 5 / 8})] == 2  # the killed run, then ours
    assert all(n == 1 for key, n in counted.items() if key != hash_params({"i": 5, "x": 5 / 8}))


def test_a_new_store_drops_the_claims_of_processes_that_are_gone(
    shared_db_url: str, tmp_path: Path
) -> None:
    results, calls, started = tmp_path / "results", tmp_path / "calls.txt", tmp_path / "started"
    hung = _spawn_hung(shared_db_url, results, calls, started, tmp_path / "o")
    hung.send_signal(signal.SIGKILL)
    hung.communicate()
    store = Store(
        Appender(str(calls)), Shared, results_dir=results, file_suffix=".txt", db_url=shared_db_url
    )
    with store, store.engine.connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(CLAIMS)) == 0
        # Runs 0..4 finished before the kill: the journal brought them in.
        assert conn.scalar(sa.select(sa.func.count()).select_from(Shared)) == 5


def test_a_peer_on_another_host_is_waited_for_until_its_heartbeat_stops(
    shared_db_url: str, tmp_path: Path
) -> None:
    results, calls = tmp_path / "results", tmp_path / "calls.txt"
    with Store(
        Appender(str(calls)), Shared, results_dir=results, file_suffix=".txt", db_url=shared_db_url
    ) as store:
        run_id = hash_params({"i": 1, "x": 1 / 8})
        now = utcnow()
        with store.engine.begin() as conn:
            conn.execute(
                sa.insert(CLAIMS),
                {
                    "table_name": "procs_shared",
                    "id": run_id,
                    "owner": "elsewhere.example~4242~0~beef",
                    "host": "elsewhere.example",
                    "pid": 4242,
                    "claimed_at": now,
                    "heartbeat_at": now + timedelta(seconds=1),
                },
            )
    # A 2-second TTL: the sweep waits for the peer, then takes its point over.
    out = tmp_path / "out"
    proc = _spawn(
        shared_db_url, str(results), str(calls), "0", "3", str(out), env={"ENTROPIC_CLAIM_TTL": "2"}
    )
    start = time.monotonic()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    assert time.monotonic() - start >= 2.0
    assert json.loads(out.read_text()) == [hash_params(p) for p in points(0, 3)]
    assert _calls(calls)[run_id] == 1

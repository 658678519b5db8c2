"""Sweeps killed mid-way (os._exit in a runner, SIGKILL from outside; serial and on Dask).

After each kill a new Store over the same folder and database must hold every
run that finished, and sweeping again must run only what had not finished.
Runner calls are counted through a file the runner appends to ("start id" when
it begins, "done id" once its result file is written).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from distributed import Client, LocalCluster

from entropic import Base, Mapped, Store, hash_params

HERE = Path(__file__).parent


class Killed(Base):
    __tablename__ = "sweep_killed"

    i: Mapped[int]


class Logged:
    """Logs start/done lines; sleeps ``pause``; exits the process on ``exit_on``."""

    def __init__(self, calls: str, pause: float = 0.0, exit_on: int = -1) -> None:
        self.calls = calls
        self.pause = pause
        self.exit_on = exit_on

    def _log(self, what: str, run_id: str) -> None:
        with open(self.calls, "a") as handle:
            handle.write(f"{what} {run_id}\n")

    def __call__(self, params: dict[str, Any]) -> None:
        self._log("start", params["id"])
        if params["i"] == self.exit_on:
            os._exit(7)
        time.sleep(self.pause)
        Path(params["result_file"]).write_text(f"{params['i']}\n")
        self._log("done", params["id"])


def grid(n: int) -> list[dict[str, Any]]:
    return [{"i": i} for i in range(n)]


def child(
    db_url: str, results: str, calls: str, n: str, pause: str, exit_on: str, sched: str
) -> None:
    """Sweep ``n`` points (on the Dask scheduler ``sched`` if given) and never return early."""
    runner = Logged(calls, float(pause), int(exit_on))
    with Store(runner, Killed, results_dir=results, file_suffix=".txt", db_url=db_url) as store:
        if sched:
            with Client(sched) as client:
                store.sweep(grid(int(n)), client=client)
        else:
            store.sweep(grid(int(n)))


def _spawn(*args: str) -> subprocess.Popen[bytes]:
    code = (
        f"import sys; sys.path.insert(0, {str(HERE)!r}); "
        "import test_sweep_kill as m; m.child(*sys.argv[1:])"
    )
    return subprocess.Popen([sys.executable, "-c", code, *args], stderr=subprocess.PIPE)


def _lines(calls: Path, what: str) -> list[str]:
    if not calls.exists():
        return []
    return [line.split()[1] for line in calls.read_text().splitlines() if line.startswith(what)]


def _wait_for(calls: Path, done: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while len(_lines(calls, "done")) < done:
        assert proc.poll() is None, proc.communicate()[1].decode()
        assert time.monotonic() < deadline
        time.sleep(0.02)


def _resweep(db_url: str, results: Path, n: int) -> tuple[list[Killed], list[str]]:
    """A new Store over the same store, sweeping again; returns (records, ids it ran)."""
    again = tmp_calls = results.parent / "calls-again"
    with Store(
        Logged(str(tmp_calls)), Killed, results_dir=results, file_suffix=".txt", db_url=db_url
    ) as store:
        records = store.sweep(grid(n))
        assert store.failures() == []
    for record in records:
        assert Path(record.result_file).read_text() == f"{record.i}\n"
    return records, _lines(again, "start")


def test_os_exit_inside_a_runner_loses_no_finished_run(shared_db_url: str, tmp_path: Path) -> None:
    results, calls = tmp_path / "results", tmp_path / "calls"
    proc = _spawn(shared_db_url, str(results), str(calls), "50", "0", "30", "")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 7, err.decode()
    finished = _lines(calls, "done")
    assert len(finished) == 30  # ...all still in the journal: the batch had not committed
    records, ran = _resweep(shared_db_url, results, 50)
    assert [r.i for r in records] == list(range(50))
    assert ran == [hash_params(p) for p in grid(50)[30:]]


@pytest.mark.parametrize("done_before_kill", [5, 120])
def test_sigkill_from_outside_loses_no_finished_run(
    shared_db_url: str, tmp_path: Path, done_before_kill: int
) -> None:
    results, calls = tmp_path / "results", tmp_path / "calls"
    proc = _spawn(shared_db_url, str(results), str(calls), "400", "0.005", "-1", "")
    _wait_for(calls, done_before_kill, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    done = set(_lines(calls, "done"))
    assert len(done) < 400
    records, ran = _resweep(shared_db_url, results, 400)
    everything = {hash_params(p) for p in grid(400)}
    assert [r.i for r in records] == list(range(400))
    assert set(ran) | done == everything
    # At most the run that had written its file but not its journal line runs again.
    assert len(set(ran) & done) <= 1
    assert len(ran) == len(set(ran))


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",
        silence_logs=logging.ERROR,
    ) as local:
        yield local


def test_sigkill_of_a_dask_sweep_keeps_what_the_workers_finished(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    results, calls = tmp_path / "results", tmp_path / "calls"
    db_url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    proc = _spawn(db_url, str(results), str(calls), "60", "0.05", "-1", cluster.scheduler_address)
    _wait_for(calls, 10, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    # The workers finish the runs they had started; wait until the cluster is idle.
    with Client(cluster) as client:
        deadline = time.monotonic() + 60
        while any(client.processing().values()) and time.monotonic() < deadline:
            time.sleep(0.05)
    time.sleep(0.2)
    done = set(_lines(calls, "done"))
    assert set(_lines(calls, "start")) == done  # nothing was cut short on a worker
    records, ran = _resweep(db_url, results, 60)
    assert [r.i for r in records] == list(range(60))
    assert set(ran) | done == {hash_params(p) for p in grid(60)}
    assert set(ran) & done == set()

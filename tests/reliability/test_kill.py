"""Sweeps killed with SIGKILL at many moments; a new Store must find nothing lost, nothing broken.

Each case runs ``_kill_child`` (a real process sweeping 10 points in batches of 4)
and kills it at one exact moment: before any runner, at the start, middle or end
of a runner, before a batch's upsert, between the upsert and its COMMIT, after
the COMMIT before its journal is dropped, during the final flush, and during the
recovery of the next Store. Serial sweeps kill themselves at that moment; Dask
sweeps are killed from outside, process group and all. Then a new Store over the
same folder and database must show:

- every row's file exists and is complete (its checksum footer matches);
- every run that finished before the kill (its runner returned) is indexed;
- re-sweeping runs exactly the points that are not indexed, each once, after which
  every point is indexed, no claim is left and entropic's journal folders are empty.
"""

from __future__ import annotations

import contextlib
import json
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
import sqlalchemy as sa
from distributed import Client, LocalCluster

import entropic
from entropic import Base, Mapped, Store, hash_params
from entropic._storage.tables import CLAIMS

from ._kill_child import payload
from ._support import Rel, journal, read_checked, rows, write_checked

POINTS = 10  # batches of 4: commits after runs 4 and 8, and a final flush of 2
TESTS = Path(__file__).resolve().parents[1]

SERIAL_KILLS = [
    "claim@1",  # before any runner: claiming the points
    "start@1",  # the first runner, before it writes
    "mid@1",
    "end@1",  # the first runner's file is complete, it has not returned
    "start@3",  # two runs journalled, nothing committed
    "mid@3",
    "end@3",
    "start@6",  # one batch committed, one run journalled since
    "mid@6",
    "insert@1",  # the first batch: before its upsert
    "commit@1",  # after its upsert, before COMMIT
    "rotate@1",  # committed, journal not yet dropped
    "commit@2",
    "rotate@2",
    "commit@3",  # the final flush, in the sweep's finish
    "end@10",  # the last runner
]
DASK_KILLS = ["mid@3", "start@6", "commit@1"]


def runs_finished_before(kill: str) -> int:
    """How many runners had returned when a serial sweep died at ``kill``."""
    moment, _, at = kill.partition("@")
    if moment in ("start", "mid", "end"):
        return int(at) - 1
    if moment in ("insert", "commit", "rotate"):
        return min(4 * int(at), POINTS)
    return 0


def _spawn(spec: dict[str, Any]) -> subprocess.Popen[bytes]:
    package = str(Path(entropic.__file__).resolve().parents[1])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS), package, os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "reliability._kill_child", json.dumps(spec)],
        env=env,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group: Dask workers die with it
    )


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _run_until_killed(spec: dict[str, Any]) -> None:
    """Run a child until it dies at its kill point (or, on Dask, opens the gate)."""
    proc = _spawn(spec)
    gate = Path(spec["control"]) / "gate"
    deadline = time.monotonic() + 120
    try:
        while proc.poll() is None and not gate.exists():
            assert time.monotonic() < deadline, "the child neither died nor reached its kill point"
            time.sleep(0.02)
        if gate.exists():
            time.sleep(0.3)  # runs past their runner finish journalling; no new one starts
            _kill_group(proc)
        proc.wait(60)
        err = proc.stderr.read().decode() if proc.stderr else ""
        assert proc.returncode == -signal.SIGKILL, f"exit {proc.returncode}: {err}"
    finally:
        _kill_group(proc)  # the Dask workers and nannies of a killed sweep
        proc.wait(60)
        if proc.stderr:
            proc.stderr.close()


def _log(control: Path) -> tuple[set[str], set[str]]:
    """(ids whose runner started, ids whose runner returned)."""
    path = control / "log"
    lines = path.read_text().split("\n") if path.exists() else []
    started = {line.split()[1] for line in lines if line.startswith("start ")}
    ended = {line.split()[1] for line in lines if line.startswith("end ")}
    return started, ended


class Recount:
    """The checksummed runner of the re-sweep, counting what it runs."""

    def __init__(self) -> None:
        self.ran: list[str] = []

    def __call__(self, params: dict[str, Any]) -> None:
        self.ran.append(params["id"])
        write_checked(params["result_file"], payload(params))


def _check_after_kill(db_url: str, results: Path, control: Path, dask: bool) -> int:
    """The promises a new Store must keep after a kill; return how many points were indexed."""
    started, ended = _log(control)
    everything = [{"n": n} for n in range(POINTS)]
    all_ids = {hash_params(p) for p in everything}
    recount = Recount()
    with Store(recount, Rel, results_dir=results, file_suffix=".txt", db_url=db_url) as store:
        held = rows(store)
        for run_id, row in held.items():
            text = read_checked(row["result_file"])
            assert text is not None, f"the file of {run_id} is missing or incomplete"
            assert text.startswith(f"{run_id} n={row['n']} "), "a row points at another run's file"
        assert ended <= set(held), f"finished runs lost: {sorted(ended - set(held))}"
        assert set(held) <= started, "a row for a run that never started"
        if not dask:
            assert set(held) == ended  # serial: journalled exactly when the runner returned
        records = store.sweep(everything)
        assert sorted(recount.ran) == sorted(all_ids - set(held)), "re-sweep ran the wrong points"
        assert [r.id for r in records] == [hash_params(p) for p in everything]
        assert all(read_checked(r.result_file) is not None for r in records)
        assert set(rows(store)) == all_ids
        assert journal(store) == []
        with store.engine.connect() as conn:
            assert conn.scalar(sa.select(sa.func.count()).select_from(CLAIMS)) == 0
    return len(held)


@pytest.fixture
def area(tmp_path: Path) -> tuple[Path, Path]:
    control = tmp_path / "control"
    control.mkdir()
    return tmp_path / "results", control


def _spec(db_url: str, area: tuple[Path, Path], kill: str, dask: bool) -> dict[str, Any]:
    results, control = area
    return {
        "db_url": db_url,
        "results": str(results),
        "control": str(control),
        "points": POINTS,
        "dask": dask,
        "kill": kill,
    }


@pytest.mark.parametrize("kill", SERIAL_KILLS)
def test_serial_sweep_killed(shared_db_url: str, area: tuple[Path, Path], kill: str) -> None:
    _run_until_killed(_spec(shared_db_url, area, kill, dask=False))
    assert len(_log(area[1])[1]) == runs_finished_before(kill)  # died exactly there
    assert _check_after_kill(shared_db_url, *area, dask=False) == runs_finished_before(kill)


@pytest.mark.parametrize("first", ["commit@2", "rotate@1"])
def test_killed_again_while_recovering(
    shared_db_url: str, area: tuple[Path, Path], first: str
) -> None:
    _run_until_killed(_spec(shared_db_url, area, first, dask=False))
    _run_until_killed(_spec(shared_db_url, area, "recover@1", dask=False))
    _check_after_kill(shared_db_url, *area, dask=False)


@pytest.mark.slow
@pytest.mark.parametrize("kill", DASK_KILLS)
def test_dask_sweep_killed(shared_db_url: str, area: tuple[Path, Path], kill: str) -> None:
    _run_until_killed(_spec(shared_db_url, area, kill, dask=True))
    _check_after_kill(shared_db_url, *area, dask=True)


# -- killed from outside: os._exit in a runner, SIGKILL at a random moment, on Dask ---------
#
# Runner calls are counted through a file the runner appends to ("start id" when it
# begins, "done id" once its result file is written).


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


def outside_grid(n: int) -> list[dict[str, Any]]:
    return [{"i": i} for i in range(n)]


def outside_child(
    db_url: str, results: str, calls: str, n: str, pause: str, exit_on: str, sched: str
) -> None:
    """Sweep ``n`` points (on the Dask scheduler ``sched`` if given) and never return early."""
    runner = Logged(calls, float(pause), int(exit_on))
    with Store(runner, Killed, results_dir=results, file_suffix=".txt", db_url=db_url) as store:
        if sched:
            with Client(sched) as client:
                store.sweep(outside_grid(int(n)), client=client)
        else:
            store.sweep(outside_grid(int(n)))


def _spawn_outside(*args: str) -> subprocess.Popen[bytes]:
    code = (
        f"import sys; sys.path.insert(0, {str(TESTS)!r}); "
        "import reliability.test_kill as m; m.outside_child(*sys.argv[1:])"
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
        records = store.sweep(outside_grid(n))
        assert store.failures() == []
    for record in records:
        assert Path(record.result_file).read_text() == f"{record.i}\n"
    return records, _lines(again, "start")


def test_os_exit_inside_a_runner_loses_no_finished_run(shared_db_url: str, tmp_path: Path) -> None:
    results, calls = tmp_path / "results", tmp_path / "calls"
    proc = _spawn_outside(shared_db_url, str(results), str(calls), "50", "0", "30", "")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 7, err.decode()
    finished = _lines(calls, "done")
    assert len(finished) == 30  # ...all still in the journal: the batch had not committed
    records, ran = _resweep(shared_db_url, results, 50)
    assert [r.i for r in records] == list(range(50))
    assert ran == [hash_params(p) for p in outside_grid(50)[30:]]


@pytest.mark.parametrize("done_before_kill", [5, 120])
def test_sigkill_from_outside_loses_no_finished_run(
    shared_db_url: str, tmp_path: Path, done_before_kill: int
) -> None:
    results, calls = tmp_path / "results", tmp_path / "calls"
    proc = _spawn_outside(shared_db_url, str(results), str(calls), "400", "0.005", "-1", "")
    _wait_for(calls, done_before_kill, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    done = set(_lines(calls, "done"))
    assert len(done) < 400
    records, ran = _resweep(shared_db_url, results, 400)
    everything = {hash_params(p) for p in outside_grid(400)}
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
    proc = _spawn_outside(
        db_url, str(results), str(calls), "60", "0.05", "-1", cluster.scheduler_address
    )
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
    assert set(ran) | done == {hash_params(p) for p in outside_grid(60)}
    assert set(ran) & done == set()

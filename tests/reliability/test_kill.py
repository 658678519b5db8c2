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
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import entropic
from entropic import Store, hash_params
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

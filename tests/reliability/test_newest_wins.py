"""An older result never replaces a newer one: what recovery indexes is the newest run of a point.

A dead process's journal or sidecar holds the row of a run that finished but
was never committed. By the time a Store or ``entropic check --repair``
recovers it, the point may have been run again and committed. Recovery must
keep the newer row (a row matches its file: the runner notes its version in both),
and a journal or sidecar newer than the stored row (its file is the newer
file) must win. The dead processes are real: a child killed by SIGKILL just
before its commit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from entropic import Store, hash_params

from ._fault_child import VersionRunner, payload
from ._faults import entropic_check, run_child
from ._support import Rel, journal, read_checked, rows

POINT = {"n": 7}
KILLED = -9


def _open(results: Path, db_url: str, version: int) -> Store[Rel]:
    runner = VersionRunner(version)
    return Store(runner, Rel, results_dir=results, file_suffix=".txt", db_url=db_url)


def _killed_before_commit(results: Path, db_url: str, how: str, version: int) -> None:
    """A child runs POINT (``how``: sweep, a journal; run, a sidecar) and dies before commit."""
    done = run_child(
        {
            "db_url": db_url,
            "results": str(results),
            "points": [POINT],
            "how": how,
            "version": version,
            "die": "before-insert",
        }
    )
    assert done.returncode == KILLED, done.stderr


def _row_matches_file(store: Store[Any], version: int) -> None:
    """The row of POINT is version ``version``'s, and so is its file."""
    run_id = hash_params(POINT)
    row = rows(store)[run_id]
    assert row["custom_data"]["v"] == version, "the row is another run's"
    assert read_checked(row["result_file"]) == payload({"id": run_id, **POINT}, version)


def _recover(results: Path, db_url: str, via: str) -> None:
    if via == "check --repair":
        done = entropic_check("--db", db_url, "--results", str(results), "--repair")
        assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("how", ["sweep", "run"])
def test_a_dead_runs_leftover_never_replaces_a_later_run(
    shared_db_url: str, tmp_path: Path, how: str
) -> None:
    results = tmp_path / "results"
    with _open(results, shared_db_url, 2) as store:  # open before the child dies
        _killed_before_commit(results, shared_db_url, how, 1)  # v1 journalled, not committed
        assert hash_params(POINT) not in rows(store)
        store.run(POINT)  # v2, committed
        _row_matches_file(store, 2)
    with _open(results, shared_db_url, 3) as store:  # recovers the dead child's leftover
        _row_matches_file(store, 2)
        assert journal(store) == []


@pytest.mark.parametrize("via", ["Store", "check --repair"])
@pytest.mark.parametrize("how", ["sweep", "run"])
def test_a_later_sweep_over_a_dead_runs_leftover_wins(
    shared_db_url: str, tmp_path: Path, how: str, via: str
) -> None:
    results = tmp_path / "results"
    with _open(results, shared_db_url, 2) as store:
        _killed_before_commit(results, shared_db_url, how, 1)
        store.sweep([POINT])  # takes the dead claim over; v1 or v2, whichever, is committed
        committed = rows(store)[hash_params(POINT)]["custom_data"]["v"]
        _row_matches_file(store, committed)
    _recover(results, shared_db_url, via)
    with _open(results, shared_db_url, 3) as store:
        _row_matches_file(store, committed)
        assert journal(store) == []


@pytest.mark.parametrize("via", ["Store", "check --repair"])
@pytest.mark.parametrize("how", ["sweep", "run"])
def test_a_dead_runs_leftover_newer_than_the_row_wins(
    shared_db_url: str, tmp_path: Path, how: str, via: str
) -> None:
    results = tmp_path / "results"
    with _open(results, shared_db_url, 1) as store:
        record = store.run(POINT)  # v1, committed
        if how == "sweep":
            Path(record.result_file).unlink()  # lost: a sweep runs it again
        _killed_before_commit(results, shared_db_url, how, 2)  # v2 written, not committed
        assert rows(store)[record.id]["custom_data"]["v"] == 1
    _recover(results, shared_db_url, via)
    with _open(results, shared_db_url, 3) as store:
        _row_matches_file(store, 2)
        assert journal(store) == []

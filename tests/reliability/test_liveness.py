"""A dead owner's pid reused by another live process does not keep its claims alive.

An owner token carries host, pid and the process's start time. Here the pid is
a live process (a real ``sleep``) but the start time is not its own: the owner
that made the token is gone and its pid was reused. Its claims and its journal
must be taken over, by a sweep, by ``run_or_retrieve`` and by a new Store,
without waiting, and the journal's finished run indexed rather than run again.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from entropic import Store, hash_params
from entropic._storage.codec import encode_line
from entropic._storage.owner import HOST, owner_alive, proc_start
from entropic._storage.tables import CLAIMS
from entropic.models import utcnow

from ._faults import bounded
from ._support import Rel, journal, read_checked, rows, write_checked

POINTS = [{"n": n} for n in range(3)]
IDS = [hash_params(p) for p in POINTS]
BOUND = 20.0


class Counted:
    def __init__(self) -> None:
        self.ran: list[str] = []

    def __call__(self, params: dict[str, Any]) -> None:
        self.ran.append(params["id"])
        write_checked(params["result_file"], f"{params['id']} n={params['n']}")


@pytest.fixture
def reused_pid() -> Iterator[str]:
    """The token of a gone owner whose pid now belongs to a live ``sleep``."""
    proc = subprocess.Popen(["sleep", "120"])
    try:
        start = ""
        while not start:
            start = proc_start(proc.pid)[0]
        token = f"{HOST}~{proc.pid}~{int(start) + 1}~cafe0001"  # not this process's start
        assert not owner_alive(token, utcnow())
        assert owner_alive(f"{HOST}~{proc.pid}~{start}~cafe0001", utcnow())  # the real one is
        yield token
    finally:
        proc.kill()
        proc.wait(10)


def _plant(store: Store[Rel], owner: str) -> None:
    """The gone owner's claims on every point, and its journal holding point 0's run."""
    now = utcnow()
    pid = int(owner.split("~")[1])
    with store.engine.begin() as conn:
        conn.execute(
            sa.insert(CLAIMS),
            [
                {
                    "table_name": Rel.__tablename__,
                    "id": run_id,
                    "owner": owner,
                    "host": HOST,
                    "pid": pid,
                    "claimed_at": now,
                    "heartbeat_at": now,  # a fresh heartbeat: only the pid check can tell
                }
                for run_id in IDS
            ],
        )
    path = store.results_dir / f"{IDS[0]}.txt"
    write_checked(path, f"{IDS[0]} n=0")
    row = {
        "id": IDS[0],
        "n": 0,
        "x": 0.0,
        "tag": None,
        "cfg": None,
        "result_file": str(path),
        "created_at": now,
        "custom_data": {"from": "journal"},
    }
    line = encode_line(row)
    assert line is not None
    (store.results_dir / ".entropic" / "journal" / f"{owner}.0.jsonl").write_bytes(line)


def _claims(store: Store[Any]) -> int:
    with store.engine.connect() as conn:
        return int(conn.scalar(sa.select(sa.func.count()).select_from(CLAIMS)) or 0)


def _open(runner: Any, results: Path, db_url: str) -> Store[Rel]:
    return Store(runner, Rel, results_dir=results, file_suffix=".txt", db_url=db_url)


@pytest.mark.parametrize("by", ["sweep", "run_or_retrieve", "a new Store"])
def test_claims_of_an_owner_whose_pid_was_reused_are_taken_over(
    shared_db_url: str, tmp_path: Path, reused_pid: str, by: str
) -> None:
    results = tmp_path / "results"
    runner = Counted()
    with _open(runner, results, shared_db_url) as store:
        _plant(store, reused_pid)
        if by == "sweep":
            bounded(lambda: store.sweep(POINTS), BOUND, "a sweep over reused-pid claims")
            assert sorted(runner.ran) == sorted(IDS[1:])  # point 0 came from the journal
            assert rows(store)[IDS[0]]["custom_data"] == {"from": "journal"}
        elif by == "run_or_retrieve":
            for point in POINTS[1:]:
                bounded(lambda p=point: store.run_or_retrieve(p), BOUND, "run_or_retrieve")
            assert sorted(runner.ran) == sorted(IDS[1:])
    if by == "a new Store":
        with _open(runner, results, shared_db_url) as store:  # its recovery runs first
            assert _claims(store) == 0
            assert sorted(rows(store)) == [IDS[0]]
            bounded(lambda: store.sweep(POINTS), BOUND, "a sweep after recovery")
            assert sorted(runner.ran) == sorted(IDS[1:])
    with _open(runner, results, shared_db_url) as store:
        held = rows(store)
        assert set(IDS[1:]) <= set(held)
        assert all(read_checked(row["result_file"]) is not None for row in held.values())
        assert journal(store) == []
        assert _claims(store) == 0

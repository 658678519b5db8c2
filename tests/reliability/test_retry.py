"""Retrying in the same process never hangs: a failed commit leaves claims nobody waits on.

A sweep (or a ``run``) whose last commit fails leaves its claims and its journal
behind: the process could not tell the database it was done. They are this
process's own, so a retry in the same process takes them over at once (and
indexes the journal, so nothing finished runs again) instead of waiting for an
owner that will never finish. The commit fails for real: PostgreSQL connections
ended with ``pg_terminate_backend``, an SQLite database on a tmpfs that is full,
or an SQLite write lock held by another connection. A wait on a live peer is
visible: the log names who holds the point.
"""

from __future__ import annotations

import logging
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import conftest
from entropic import Store, hash_params
from entropic import sweep as sweeps
from entropic._storage import core as store_core
from entropic._storage import index as store_index
from entropic._storage.owner import HOST, proc_start
from entropic._storage.tables import CLAIMS
from entropic.models import utcnow

from ._faults import bounded, fill, small_filesystem, sqlite_path, terminate_backends
from ._support import Rel, journal, read_checked, rows, write_checked

#: Large rows: the last batch must need new pages, which a full disk cannot give.
PAD = "p" * 6000
POINTS = [{"n": n, "cfg": {"pad": PAD}} for n in range(8)]
RETRY_SECONDS = 30.0


@dataclass
class Fault:
    """A fault that makes the next commit fail, and its undoing."""

    db_url: str
    inject: Callable[[], None]
    undo: Callable[[], None]
    cleanups: list[Callable[[], None]] = field(default_factory=list)


def _sqlite_locked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Fault]:
    # A short busy timeout, so waiting for the lock fails in a moment instead of a minute.
    monkeypatch.setattr(store_index, "SQLITE_BUSY_TIMEOUT_MS", 300)
    url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    held: list[sqlite3.Connection] = []

    def inject() -> None:
        locker = sqlite3.connect(sqlite_path(url), isolation_level=None, timeout=10)
        locker.execute("BEGIN IMMEDIATE")  # the write lock, held until undo
        held.append(locker)

    def undo() -> None:
        while held:
            locker = held.pop()
            locker.rollback()
            locker.close()

    yield Fault(url, inject, undo)
    undo()


def _sqlite_full(tmp_path: Path) -> Iterator[Fault]:
    with small_filesystem(tmp_path / "small", 2048) as small:
        url = f"sqlite:///{small / 'store.sqlite3'}"
        fillers: list[Path] = []

        def undo() -> None:
            while fillers:
                fillers.pop().unlink()

        yield Fault(url, lambda: fillers.append(fill(small)), undo)


def _postgresql_terminated() -> Iterator[Fault]:
    for url in conftest.pg_database():

        def inject(url: str = url) -> None:
            assert terminate_backends(url) > 0, "no connection of the store to end"

        yield Fault(url, inject, lambda: None)


@pytest.fixture(params=["postgresql-terminated", "sqlite-full", "sqlite-locked"])
def fault(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Fault]:
    if request.param == "sqlite-locked":
        yield from _sqlite_locked(tmp_path, monkeypatch)
    elif request.param == "sqlite-full":
        yield from _sqlite_full(tmp_path)
    else:
        yield from _postgresql_terminated()


class FaultAt:
    """The checksummed runner; at its ``at``-th call, once its file is written, the fault."""

    def __init__(self, at: int, fault: Fault) -> None:
        self.at = at
        self.fault = fault
        self.calls: list[str] = []

    def __call__(self, params: dict[str, Any]) -> None:
        self.calls.append(params["id"])
        write_checked(params["result_file"], f"{params['id']} n={params['n']}")
        if len(self.calls) == self.at:
            self.fault.inject()


def _claims(store: Store[Any]) -> list[tuple[str, str]]:
    with store.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(CLAIMS.c.id, CLAIMS.c.owner))]


def _at_rest(store: Store[Any], points: list[dict[str, Any]]) -> None:
    """Every point indexed with its complete file, no claim and no journal left."""
    held = rows(store)
    assert set(held) == {hash_params(p) for p in points}
    for run_id, row in held.items():
        assert read_checked(row["result_file"]) == f"{run_id} n={row['n']}"
    assert _claims(store) == []
    assert journal(store) == []


def _open(runner: Any, results: Path, db_url: str) -> Store[Rel]:
    return Store(runner, Rel, results_dir=results, file_suffix=".txt", db_url=db_url)


def test_a_retry_after_a_failed_final_commit_takes_its_own_claims_back(
    fault: Fault, tmp_path: Path
) -> None:
    runner = FaultAt(len(POINTS), fault)
    with _open(runner, tmp_path / "results", fault.db_url) as store:
        with pytest.raises(sa.exc.OperationalError):
            store.sweep(POINTS)  # the one batch commits after the last runner: it fails
        assert len(_claims(store)) == len(POINTS)  # nobody could drop them
        fault.undo()
        records = bounded(lambda: store.sweep(POINTS), RETRY_SECONDS, "the retry sweep")
        assert len(runner.calls) == len(POINTS)  # the journal kept every finished run
        assert [r.id for r in records] == [hash_params(p) for p in POINTS]
        _at_rest(store, POINTS)


def test_a_retry_after_a_failed_run_commit_takes_its_own_claim_back(
    fault: Fault, tmp_path: Path
) -> None:
    runner = FaultAt(1, fault)
    point = POINTS[0]
    with _open(runner, tmp_path / "results", fault.db_url) as store:
        with pytest.raises(sa.exc.OperationalError):
            store.run(point)  # the commit, and releasing the claim, fail
        fault.undo()
        records = bounded(lambda: store.sweep([point]), RETRY_SECONDS, "the retry sweep")
        assert read_checked(records[0].result_file) is not None
        again = bounded(lambda: store.run_or_retrieve(point), RETRY_SECONDS, "run_or_retrieve")
        assert again.id == records[0].id
        assert len(runner.calls) == 2  # the failed run's row never reached the table
        assert _claims(store) == []
    # The failed run's sidecar is older than the retry's row: a new Store drops it.
    with _open(runner, tmp_path / "results", fault.db_url) as store:
        _at_rest(store, [point])


# -- waiting on a live peer ------------------------------------------------------------------


class Peer:
    """A live process that holds claims: a real ``sleep`` whose owner token is exact."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(["sleep", "120"])
        start = ""
        while not start:  # /proc has it as soon as the process exists
            start = proc_start(self.proc.pid)[0]
        self.owner = f"{HOST}~{self.proc.pid}~{start}~0bad0bad"

    def claim(self, store: Store[Any], ids: list[str]) -> None:
        now = utcnow()
        values = [
            {
                "table_name": Rel.__tablename__,
                "id": run_id,
                "owner": self.owner,
                "host": HOST,
                "pid": self.proc.pid,
                "claimed_at": now,
                "heartbeat_at": now,
            }
            for run_id in ids
        ]
        with store.engine.begin() as conn:
            conn.execute(sa.insert(CLAIMS), values)

    def die(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


class KillOnWaiting(logging.Handler):
    """Kills the peer once entropic logs that it is waiting for it (naming it)."""

    def __init__(self, peer: Peer) -> None:
        super().__init__(logging.WARNING)
        self.peer = peer
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("waiting") and self.peer.proc.poll() is None:
            self.seen.append(message)
            self.peer.die()


@pytest.fixture
def peer() -> Iterator[Peer]:
    alive = Peer()
    yield alive
    if alive.proc.poll() is None:
        alive.die()


@pytest.mark.parametrize("how", ["sweep", "run_or_retrieve"])
def test_a_wait_on_a_live_peer_names_it_and_ends_when_it_dies(
    shared_db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, peer: Peer, how: str
) -> None:
    monkeypatch.setattr(sweeps, "WAIT_LOG_SECONDS", 0.5)
    monkeypatch.setattr(store_core, "WAIT_LOG_SECONDS", 0.5)
    runner = FaultAt(0, Fault(shared_db_url, lambda: None, lambda: None))
    points = POINTS[:3]
    with _open(runner, tmp_path / "results", shared_db_url) as store:
        peer.claim(store, [hash_params(p) for p in points])
        handler = KillOnWaiting(peer)
        logging.getLogger("entropic").addHandler(handler)
        try:
            if how == "sweep":
                bounded(lambda: store.sweep(points), RETRY_SECONDS, "a sweep waiting on a peer")
            else:
                for point in points:
                    bounded(
                        lambda p=point: store.run_or_retrieve(p),
                        RETRY_SECONDS,
                        "run_or_retrieve waiting on a peer",
                    )
        finally:
            logging.getLogger("entropic").removeHandler(handler)
        assert handler.seen, "the wait was never logged"
        assert peer.owner in handler.seen[0]
        assert sorted(runner.calls) == sorted(hash_params(p) for p in points)
        _at_rest(store, points)

"""Claims: how processes sharing a store run each point once (docs/sweeps.md explains why).

A sweeping process claims the points it is about to run by inserting rows into
``entropic_claims`` (the primary key makes exactly one insert win), deletes each
claim in the transaction that persists the point, and refreshes a heartbeat
while it runs. A claim whose owner is gone (same host: its pid is dead or now
belongs to another process; other host: no heartbeat for ``CLAIM_TTL_SECONDS``)
is stale and is taken over with a compare-and-set UPDATE.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from entropic._tables import CLAIMS
from entropic.models import utcnow

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from entropic.store import Store

__all__ = ["CLAIM_TTL_SECONDS", "Claims", "new_owner", "owner_alive"]

log = logging.getLogger("entropic")

#: A claim held by a process on another host is stale after this long without a heartbeat.
CLAIM_TTL_SECONDS = float(os.environ.get("ENTROPIC_CLAIM_TTL", "60"))
#: Ids per claim lookup statement (bound parameters stay far under every dialect's limit).
CHUNK = 500

HOST = socket.gethostname()[:200]


def _proc_start(pid: int) -> tuple[str, bool]:
    """(start time in clock ticks, is a zombie) of ``pid`` from /proc; ("", False) elsewhere."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read().decode("ascii", "replace")
    except OSError:
        return "", False
    # The command name may contain spaces and parentheses; the fields follow the last ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    return (fields[19] if len(fields) > 19 else ""), (fields[:1] == ["Z"])


def new_owner() -> str:
    """A token naming this sweep: host, pid, process start time and a random suffix."""
    pid = os.getpid()
    return f"{HOST}~{pid}~{_proc_start(pid)[0]}~{secrets.token_hex(4)}"


def parse_owner(owner: str) -> tuple[str, int, str]:
    """(host, pid, start) of an owner token; pid -1 if it is not one."""
    parts = owner.rsplit("~", 3)
    if len(parts) != 4 or not parts[1].isdigit():
        return owner, -1, ""
    return parts[0], int(parts[1]), parts[2]


def owner_alive(owner: str, heartbeat_at: datetime | None, now: datetime | None = None) -> bool:
    """Whether the process behind ``owner`` may still be running its claims."""
    host, pid, start = parse_owner(owner)
    if host == HOST and pid > 0:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # alive, under another user
        current, zombie = _proc_start(pid)
        if zombie:
            return False
        # A different start time means the pid was reused by another process.
        return not (start and current and current != start)
    if heartbeat_at is None:
        return False
    age = (now or utcnow()) - heartbeat_at
    return age < timedelta(seconds=CLAIM_TTL_SECONDS)


def _insert_missing(dialect: str) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING on the claims table, or None for other dialects."""
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    elif dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert  # type: ignore[assignment]
    else:
        return None
    return insert(CLAIMS).on_conflict_do_nothing(index_elements=[CLAIMS.c.table_name, CLAIMS.c.id])


def _has_returning(engine: sa.Engine) -> bool:
    """Whether INSERT ... RETURNING works over executemany here (SQLite needs 3.35)."""
    if engine.dialect.name == "sqlite":
        import sqlite3

        return sqlite3.sqlite_version_info >= (3, 35)
    return bool(getattr(engine.dialect, "insert_executemany_returning", False))


class Claims:
    """The claims of one sweep in one process (a no-op when no other process can see the store)."""

    def __init__(self, store: Store[Any], *, enabled: bool) -> None:
        self.store = store
        self.enabled = enabled
        self.owner = new_owner()
        self.table_name = store._schema_table().name
        self._pid = os.getpid()
        self._insert = _insert_missing(store.engine.dialect.name)
        self._returning = None
        if self._insert is not None and _has_returning(store.engine):
            # At most ~900 bound parameters per multi-row INSERT, as everywhere else.
            rows = 900 // len(CLAIMS.columns)
            self._returning = self._insert.returning(CLAIMS.c.id).execution_options(
                insertmanyvalues_page_size=rows
            )
        self._stop = threading.Event()
        #: Owners whose claims this sweep took over (their journals may hold finished runs).
        self.taken_from: set[str] = set()
        self._thread: threading.Thread | None = None
        c = CLAIMS.c
        self._select = sa.select(c.id, c.owner, c.heartbeat_at).where(
            c.table_name == self.table_name, c.id.in_(sa.bindparam("ids", expanding=True))
        )
        self._delete = sa.delete(CLAIMS).where(
            c.table_name == self.table_name,
            c.owner == self.owner,
            c.id.in_(sa.bindparam("ids", expanding=True)),
        )

    # -- claiming --------------------------------------------------------------------------

    def claim(self, ids: Sequence[str]) -> tuple[list[str], list[str]]:
        """Claim ``ids``; return (won, held by a live peer). Stale claims are taken over."""
        if not self.enabled or not ids:
            return list(ids), []
        now = utcnow()
        values = [
            {
                "table_name": self.table_name,
                "id": run_id,
                "owner": self.owner,
                "host": HOST,
                "pid": self._pid,
                "claimed_at": now,
                "heartbeat_at": now,
            }
            # One lock order for every process: PostgreSQL deadlocks on overlapping
            # claim inserts made in different orders.
            for run_id in sorted(ids)
        ]
        won: list[str] = []
        with self.store._begin_write() as conn:
            if self._returning is not None:
                # The insert itself tells which claims are ours (RETURNING skips conflicts).
                won.extend(conn.execute(self._returning, values).scalars())
            elif self._insert is not None:
                conn.execute(self._insert, values)
            else:
                self._insert_one_by_one(conn, values)
        ours = set(won)
        check = [run_id for run_id in ids if run_id not in ours]
        busy: list[str] = []
        stale: list[tuple[str, str]] = []
        with self.store.engine.connect() as conn:
            for i in range(0, len(check), CHUNK):
                for run_id, owner, heartbeat in conn.execute(
                    self._select, {"ids": check[i : i + CHUNK]}
                ):
                    if owner == self.owner:
                        won.append(run_id)
                    elif owner_alive(owner, heartbeat, now):
                        busy.append(run_id)
                    else:
                        stale.append((run_id, owner))
        if stale:
            taken = self._take_over(stale, now)
            won.extend(taken)
            taken_set = set(taken)
            busy.extend(run_id for run_id, _ in stale if run_id not in taken_set)
        # Input order; a claim that vanished between our insert and our read counts as
        # busy, and the caller tries it again.
        mine = set(won)
        return [i for i in ids if i in mine], [i for i in ids if i not in mine]

    def _insert_one_by_one(self, conn: Connection, values: list[dict[str, Any]]) -> None:
        for value in values:
            try:
                with conn.begin_nested():
                    conn.execute(sa.insert(CLAIMS), value)
            except sa.exc.IntegrityError:
                pass

    def _take_over(self, stale: list[tuple[str, str]], now: datetime) -> list[str]:
        """Compare-and-set the owner of claims whose owners are gone; return the ids won."""
        c = CLAIMS.c
        update = (
            sa.update(CLAIMS)
            .where(
                c.table_name == self.table_name,
                c.id == sa.bindparam("claim_id"),
                c.owner == sa.bindparam("stale_owner"),
            )
            .values(owner=self.owner, host=HOST, pid=self._pid, claimed_at=now, heartbeat_at=now)
        )
        taken: list[str] = []
        with self.store._begin_write() as conn:
            for run_id, owner in sorted(stale):
                result = conn.execute(update, {"claim_id": run_id, "stale_owner": owner})
                if result.rowcount == 1:
                    taken.append(run_id)
                    self.taken_from.add(owner)
        if taken:
            log.warning(
                "entropic: took over %d point(s) claimed by processes that are gone", len(taken)
            )
        return taken

    def releaser(self, ids: list[str]) -> Callable[[Connection], None] | None:
        """A function deleting this owner's claims on ``ids`` inside a caller's transaction."""
        if not self.enabled or not ids:
            return None

        def release(conn: Connection) -> None:
            for i in range(0, len(ids), CHUNK):
                conn.execute(self._delete, {"ids": ids[i : i + CHUNK]})

        return release

    def release_all(self) -> None:
        """Drop every claim this sweep still holds (points it did not finish)."""
        if not self.enabled:
            return
        c = CLAIMS.c
        with self.store._begin_write() as conn:
            conn.execute(
                sa.delete(CLAIMS).where(c.table_name == self.table_name, c.owner == self.owner)
            )

    # -- heartbeat -------------------------------------------------------------------------

    def start_heartbeat(self) -> None:
        """Refresh this owner's heartbeat every few seconds from a background thread."""
        if not self.enabled or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._beat, name="entropic-heartbeat", daemon=True)
        self._thread.start()

    def stop_heartbeat(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def _beat(self) -> None:
        interval = min(5.0, CLAIM_TTL_SECONDS / 4)
        c = CLAIMS.c
        update = (
            sa.update(CLAIMS)
            .where(c.table_name == self.table_name, c.owner == self.owner)
            .values(heartbeat_at=sa.bindparam("now"))
        )
        while not self._stop.wait(interval):
            try:
                with self.store._begin_write() as conn:
                    conn.execute(update, {"now": utcnow()})
            except Exception as exc:  # a missed beat is retried; the TTL allows several
                log.warning("entropic: heartbeat of %s failed: %s", self.owner, exc)

    # -- recovery --------------------------------------------------------------------------

    def purge_stale(self) -> int:
        """Delete the claims of owners that are gone (their points had no row); return how many."""
        if not self.enabled:
            return 0
        c = CLAIMS.c
        owners = (
            sa.select(c.owner, sa.func.max(c.heartbeat_at))
            .where(c.table_name == self.table_name)
            .group_by(c.owner)
        )
        with self.store.engine.connect() as conn:
            now = utcnow()
            gone = [
                owner for owner, beat in conn.execute(owners) if not owner_alive(owner, beat, now)
            ]
        removed = 0
        if gone:
            with self.store._begin_write() as conn:
                for owner in gone:
                    removed += conn.execute(
                        sa.delete(CLAIMS).where(c.table_name == self.table_name, c.owner == owner)
                    ).rowcount
        return removed

    def live_ids(self, ids: Sequence[str]) -> set[str]:
        """Those of ``ids`` that a live process (another sweep) has claimed."""
        live: set[str] = set()
        if not self.enabled or not ids:
            return live
        now = utcnow()
        with self.store.engine.connect() as conn:
            for i in range(0, len(ids), CHUNK):
                for run_id, owner, heartbeat in conn.execute(
                    self._select, {"ids": list(ids[i : i + CHUNK])}
                ):
                    if owner_alive(owner, heartbeat, now):
                        live.add(run_id)
        return live

"""Claims: how processes sharing a store run each point once (docs/sweeps.md explains why).

A sweeping process claims the points it is about to run by inserting rows into
``entropic_claims`` (the primary key makes exactly one insert win), deletes each
claim in the transaction that persists the point, and refreshes a heartbeat
while it runs. A claim whose owner is gone (same host: its pid is dead or now
belongs to another process; other host: no heartbeat for ``CLAIM_TTL_SECONDS``)
is stale and is taken over with a compare-and-set UPDATE.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection

from entropic._storage.index import ID_CHUNK, ChangeMark, Index, insert_missing
from entropic._storage.owner import (
    CLAIM_TTL_SECONDS,
    HOST,
    new_owner,
    owner_alive,
    release_owner,
)
from entropic._storage.statements import DriverIds
from entropic._storage.tables import CLAIMS
from entropic.models import utcnow

__all__ = ["Claims"]

log = logging.getLogger("entropic")

#: How often the claims of a sweep have their heartbeat refreshed: a quarter of the TTL,
#: at most 5 s. A sweep refreshes it in its claims; a background thread does it only
#: when the sweep has not for this long.
HEARTBEAT_SECONDS = min(5.0, CLAIM_TTL_SECONDS / 4)

#: The most claims a sweep refreshes inside one of its claims (one statement, a few ms);
#: an owner holding more (a sweep that hands every point to Dask claims them all first)
#: leaves the refresh to the background thread, as it would stall the claims.
REFRESH_IN_CLAIM_MAX = 4096


def _has_returning(engine: sa.Engine) -> bool:
    """Whether INSERT ... RETURNING works over executemany here (SQLite needs 3.35)."""
    if engine.dialect.name == "sqlite":
        import sqlite3

        return sqlite3.sqlite_version_info >= (3, 35)
    return bool(getattr(engine.dialect, "insert_executemany_returning", False))


@cache
def _sqlite_has_json_each() -> bool:
    """Whether the sqlite3 module's SQLite has the table-valued function ``json_each``."""
    try:
        with sqlite3.connect(":memory:") as conn:
            conn.execute("SELECT value FROM json_each('[1]')").fetchall()
    except sqlite3.Error:
        return False
    return True


#: The claim columns given once per statement (all but the id).
_SHARED_COLUMNS = [column.name for column in CLAIMS.columns if column.name != "id"]


def _array_insert(engine: sa.Engine) -> Any | None:
    """``INSERT ... SELECT`` of one claim per id of one array parameter, skipping ids
    claimed already and returning the ids inserted; None where the database cannot.

    PostgreSQL takes the ids as an array (``unnest``); SQLite (3.35 and later, with
    JSON) as the JSON text of a list (``json_each``). One statement, eight
    parameters, whatever the number of claims.
    """
    dialect = engine.dialect
    if dialect.name == "postgresql":
        # unnest(...) WITH ORDINALITY AS claimed(value, place)
        source = sa.func.unnest(sa.bindparam("ids", type_=postgresql.ARRAY(sa.String)))
        ids = source.table_valued("value", with_ordinality="place").render_derived("claimed")
        place = ids.c.place
        insert: Any = postgresql.insert
    elif (
        dialect.name == "sqlite"
        and dialect.driver == "pysqlite"
        and _has_returning(engine)
        and _sqlite_has_json_each()
    ):
        source = sa.func.json_each(sa.bindparam("ids", type_=sa.String))
        ids = source.table_valued("value", "key")  # json_each's columns: key is the place
        place = ids.c.key
        insert = sqlite_dialect.insert
    else:
        return None
    shared = [sa.bindparam(name, type_=CLAIMS.c[name].type) for name in _SHARED_COLUMNS]
    # In the order given (the caller's lock order). SQLite needs a WHERE to tell the
    # upsert's ON CONFLICT from a join's ON.
    select = sa.select(*shared, ids.c.value).select_from(ids).where(sa.true()).order_by(place)
    c = CLAIMS.c
    return (
        insert(CLAIMS)
        .from_select([*_SHARED_COLUMNS, "id"], select)
        .on_conflict_do_nothing(index_elements=[c.table_name, c.id])
        .returning(c.id)
    )


class Claims:
    """The claims of one sweep in one process (a no-op when no other process can see the store)."""

    def __init__(self, index: Index, *, owner: str | None = None, one_thread: bool = False) -> None:
        self.index = index
        #: Whether one thread alone claims and releases (a sweep): then the ids this
        #: owner holds are known exactly, and releasing all of them takes one statement.
        self.one_thread = one_thread
        self.enabled = index.shared
        self.owner = owner or new_owner()
        self.table_name = index.name
        self._pid = os.getpid()
        self._insert = insert_missing(CLAIMS, index.dialect)
        self._returning = None
        if self._insert is not None and _has_returning(index.engine):
            # At most ~900 bound parameters per multi-row INSERT, as everywhere else.
            rows = 900 // len(CLAIMS.columns)
            self._returning = self._insert.returning(CLAIMS.c.id).execution_options(
                insertmanyvalues_page_size=rows
            )
        self._from_array = _array_insert(index.engine) if index.shared else None
        #: Whether ids go to the database as one JSON text (SQLite) or as an array.
        self._ids_as_json = index.dialect == "sqlite"
        self._stop = threading.Event()
        #: Whether this owner has tried to claim anything (else it holds no claim to drop).
        self._claimed = False
        #: The ids this owner has won and not released yet (kept when ``one_thread``).
        self._held: set[str] = set()
        #: Owners whose claims this sweep took over (their journals may hold finished runs).
        self.taken_from: set[str] = set()
        #: The live owner of each id the last ``claim`` found busy.
        self.holders: dict[str, str] = {}
        #: Whether the last ``claim`` found nothing but this owner's own writes committed
        #: since the mark it was given (``Index.unchanged_since``).
        self.unchanged = False
        self._thread: threading.Thread | None = None
        #: When this owner's last committed refresh of its heartbeat began (``time.monotonic``).
        self._last_beat = time.monotonic()
        #: Held by whoever refreshes the heartbeat: one refresh at a time.
        self._beating = threading.Lock()
        c = CLAIMS.c
        self._refresh = (
            sa.update(CLAIMS)
            .where(c.table_name == self.table_name, c.owner == self.owner)
            .values(heartbeat_at=sa.bindparam("now"))
        )
        self._refresh_unlocked = self._refresh
        if index.dialect == "postgresql":
            # The claims another transaction holds locks on are left out: a batch deleting
            # its finished claims locks them in an order of its own, and waiting on one
            # of them while holding others deadlocks with that batch.
            unlocked = (
                sa.select(c.id)
                .where(c.table_name == self.table_name, c.owner == self.owner)
                .with_for_update(skip_locked=True)
            )
            self._refresh_unlocked = self._refresh.where(c.id.in_(unlocked.scalar_subquery()))
        self._select = sa.select(c.id, c.owner, c.heartbeat_at).where(
            c.table_name == self.table_name, c.id.in_(sa.bindparam("ids", expanding=True))
        )
        self._delete = DriverIds(
            lambda ids: sa.delete(CLAIMS).where(
                c.table_name == sa.bindparam("t"), c.owner == sa.bindparam("o"), ids
            ),
            c.id,
            index.engine.dialect,
        )
        self._delete_values = {"t": self.table_name, "o": self.owner}
        self._delete_all = sa.delete(CLAIMS).where(
            c.table_name == self.table_name, c.owner == self.owner
        )

    # -- claiming --------------------------------------------------------------------------

    def claim(
        self, ids: Sequence[str], since: ChangeMark | None = None
    ) -> tuple[list[str], list[str]]:
        """Claim ``ids``; return (won, held by a live peer). Stale claims are taken over.

        With ``since``, ``unchanged`` tells afterwards whether anything but this
        owner's own writes was committed between that mark and the claim.
        """
        self.holders = {}
        self.unchanged = False
        if not self.enabled or not ids:
            return list(ids), []
        self._claimed = True
        now = utcnow()
        # One lock order for every process: PostgreSQL deadlocks on overlapping claim
        # inserts made in different orders.
        ordered = sorted(ids)
        won: list[str] = []
        beat = self._refresh_due()
        try:
            with self.index.begin_write(self.owner) as conn:
                if since is not None:
                    self.unchanged = self.index.unchanged_since(conn, since, self.owner)
                if self._from_array is not None:
                    won.extend(self._insert_array(conn, ordered, now))
                elif self._returning is not None:
                    # The insert itself tells which claims are ours (RETURNING skips conflicts).
                    rows = self._values(ordered, now)
                    won.extend(conn.execute(self._returning, rows).scalars())
                elif self._insert is not None:
                    conn.execute(self._insert, self._values(ordered, now))
                else:
                    self._insert_one_by_one(conn, self._values(ordered, now))
                if beat is not None:
                    conn.execute(self._refresh, {"now": now})
            if beat is not None:
                self._last_beat = beat  # committed
        finally:
            if beat is not None:
                self._beating.release()
        ours = set(won)
        check = [run_id for run_id in ids if run_id not in ours]
        busy: list[str] = []
        stale: list[tuple[str, str]] = []
        if not check:
            if self.one_thread:
                self._held.update(ids)
            return list(ids), busy  # the insert won every one
        with self.index.engine.connect() as conn:
            for i in range(0, len(check), ID_CHUNK):
                for run_id, owner, heartbeat in conn.execute(
                    self._select, {"ids": check[i : i + ID_CHUNK]}
                ):
                    if owner == self.owner:
                        won.append(run_id)
                    elif owner_alive(owner, heartbeat, now):
                        busy.append(run_id)
                        self.holders[run_id] = owner
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
        if self.one_thread:
            self._held.update(mine)
        return [i for i in ids if i in mine], [i for i in ids if i not in mine]

    def _shared(self, now: datetime) -> dict[str, Any]:
        """What every claim of one call holds but its id."""
        return {
            "table_name": self.table_name,
            "owner": self.owner,
            "host": HOST,
            "pid": self._pid,
            "claimed_at": now,
            "heartbeat_at": now,
        }

    def _values(self, ids: list[str], now: datetime) -> list[dict[str, Any]]:
        """The claim rows of ``ids``."""
        shared = self._shared(now)
        return [{**shared, "id": run_id} for run_id in ids]

    def _insert_array(self, conn: Connection, ids: list[str], now: datetime) -> list[str]:
        """Claim ``ids`` with one statement (``_array_insert``); return the ids won."""
        statement = self._from_array
        assert statement is not None
        values = self._shared(now)
        values["ids"] = json.dumps(ids, ensure_ascii=False) if self._ids_as_json else ids
        return list(conn.execute(statement, values).scalars())

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
        with self.index.begin_write(self.owner) as conn:
            for run_id, owner in sorted(stale):
                result = conn.execute(update, {"claim_id": run_id, "stale_owner": owner})
                if result.rowcount == 1:
                    taken.append(run_id)
                    self.taken_from.add(owner)
        if taken:
            log.warning("took over %d point(s) claimed by processes that are gone", len(taken))
        return taken

    def releaser(self, ids: list[str]) -> Callable[[Connection], None] | None:
        """A function deleting this owner's claims on ``ids`` inside a caller's transaction.

        When one thread claims (``one_thread``) and ``ids`` are all this owner still
        holds (a sweep's batch that finished every claim it made), one statement
        drops the owner's claims instead of naming each id.
        """
        if not self.enabled or not ids:
            return None
        if self.one_thread:
            held = self._held
            held.difference_update(ids)
            if not held:

                def release_all(conn: Connection) -> None:
                    conn.execute(self._delete_all)

                return release_all

        def release(conn: Connection) -> None:
            for i in range(0, len(ids), ID_CHUNK):
                self._delete.execute(conn, ids[i : i + ID_CHUNK], self._delete_values)

        return release

    @property
    def pid(self) -> int:
        """The process these claims belong to."""
        return self._pid

    def release(self, ids: list[str]) -> None:
        """Drop this owner's claims on ``ids`` in a transaction of their own."""
        release = self.releaser(ids)
        if release is not None:
            with self.index.begin_write(self.owner) as conn:
                release(conn)

    def release_all(self) -> None:
        """Drop every claim this sweep still holds (points it did not finish)."""
        if not self.enabled or not self._claimed:
            return
        with self.index.begin_write(self.owner) as conn:
            conn.execute(self._delete_all)
        self._held.clear()

    # -- heartbeat -------------------------------------------------------------------------

    def start_heartbeat(self) -> None:
        """Refresh this owner's heartbeat every few seconds from a background thread."""
        if not self.enabled or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="entropic-heartbeat", daemon=True)
        self._thread.start()

    def stop_heartbeat(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def _refresh_due(self) -> float | None:
        """When a claim should refresh this owner's heartbeat: the time the refresh
        begins, with ``_beating`` taken (the caller releases it); else None.

        Due half an interval after the last refresh, so that a sweep claiming more
        often than that keeps its background thread idle: that thread's write would
        take a connection of its own while the sweep holds one, and a sweep that has
        written on two connections can no longer tell its own writes from a peer's
        (``Index.unchanged_since``). Not when the owner holds more than
        ``REFRESH_IN_CLAIM_MAX`` claims, nor while the background thread refreshes.
        """
        if not self.enabled or not self.one_thread or len(self._held) > REFRESH_IN_CLAIM_MAX:
            return None
        now = time.monotonic()
        if now - self._last_beat < HEARTBEAT_SECONDS / 2 or not self._beating.acquire(False):
            return None
        return now

    def _beat(self) -> None:
        # Wakes every half interval; refreshes only when nobody has for a whole one,
        # so the heartbeat is never more than one and a half intervals old.
        while not self._stop.wait(HEARTBEAT_SECONDS / 2):
            if time.monotonic() - self._last_beat < HEARTBEAT_SECONDS:
                continue
            try:
                self.refresh_heartbeat()
            except Exception as exc:  # a missed beat is retried; the TTL allows several
                log.warning("heartbeat of %s failed: %s", self.owner, exc)

    def refresh_heartbeat(self) -> None:
        """Refresh the heartbeat of the claims this owner holds, in a transaction of its own.

        On PostgreSQL, claims locked by another transaction (the sweep's batch deleting
        them, a peer taking them over) are skipped rather than waited for.
        """
        with self._beating:
            began = time.monotonic()
            with self.index.begin_write(self.owner) as conn:
                conn.execute(self._refresh_unlocked, {"now": utcnow()})
            self._last_beat = began

    def close(self) -> None:
        """Stop the heartbeat; claims this owner still holds are stale from now on."""
        self.stop_heartbeat()
        release_owner(self.owner)
        self.index.forget_owner(self.owner)

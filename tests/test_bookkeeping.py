"""The per-run bookkeeping of a sweep, done the quick way, gives what the general way gives.

A sweep's cold path takes shortcuts on every finished run: a cheaper clock
reading, a plain point made into a ``Point`` without checking it again, the
journal line of an ordinary row written in one go, SQLite datetimes written by
``isoformat``, deletes by id sent to the driver as compiled SQL. Each is held
here to the result of the general path it stands in for.
"""

from __future__ import annotations

import enum
import json
import math
import os
import random
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session, mapped_column

import entropic._storage.claims
import entropic.sweep
from conftest import pg_database
from entropic import Base, Mapped, Store
from entropic._storage.codec import encode_any_line, encode_line
from entropic._storage.columns import json_default, json_value
from entropic._storage.index import (
    ID_CHUNK,
    create_engine,
    parse_db_url,
    sqlite_json_bind,
    upsert,
)
from entropic._storage.schema import Schema
from entropic._storage.statements import (
    SQLITE_DATETIME_FORMAT,
    DriverIds,
    bind_processor,
    compile_write,
    padded,
)
from entropic._storage.tables import CLAIMS, FAILURES
from entropic.hashing import hash_params
from entropic.models import utcnow


class Kept(Base):
    __tablename__ = "bookkeeping_kept"

    n: Mapped[int]
    x: Mapped[float]
    name: Mapped[str]


def _write(params: dict[str, Any]) -> None:
    Path(params["result_file"]).write_bytes(b"x")


# --- the clock ------------------------------------------------------------------------------


def test_utcnow_is_the_current_utc_time_without_a_zone() -> None:
    for _ in range(1000):
        before = datetime.now(timezone.utc).replace(tzinfo=None)
        now = utcnow()
        after = datetime.now(timezone.utc).replace(tzinfo=None)
        assert type(now) is datetime
        assert now.tzinfo is None
        assert before <= now <= after


# --- plain points -----------------------------------------------------------------------------


@given(n=st.integers(-(2**63), 2**63 - 1), x=st.floats(allow_nan=False), name=st.text())
def test_a_plain_point_is_the_point_prepare_gives(n: int, x: float, name: str) -> None:
    schema = Schema(Kept, "sqlite")
    params = {"n": n, "x": x, "name": name}
    [run_id] = schema.plain_ids([params])
    if run_id is None:  # not plain (a non-ASCII name, say): prepare's alone
        return
    fast = schema.plain_point(params, run_id)
    full = schema.point(params, {})
    assert (fast.id, fast.key, fast.values, fast.custom_data) == (
        full.id,
        full.key,
        full.values,
        full.custom_data,
    )
    assert fast.params is params
    assert all(fast.values[k] is v for k, v in params.items())


# --- journal lines --------------------------------------------------------------------------


class Level(enum.IntEnum):
    LOW = 1


class Stamp(datetime):
    """A datetime subclass: the general path writes it as a datetime too."""


values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(),
    st.lists(st.integers(), max_size=3),
    st.lists(st.integers(), max_size=3).map(tuple),
    st.dictionaries(st.text(max_size=3), st.floats(), max_size=3),
    st.dates(),
    st.datetimes(),
    st.datetimes().map(lambda d: Stamp(*d.timetuple()[:6], d.microsecond)),
    st.decimals(places=2, allow_nan=False),
    st.binary(max_size=6),
    st.sampled_from([Level.LOW, 2**64, "\ud800", float("nan")]),
)


@given(
    row=st.fixed_dictionaries(
        {
            "id": st.just("0123456789abcdef"),
            "result_file": st.text(),
            "created_at": st.one_of(st.datetimes(), values),
            "custom_data": st.dictionaries(st.text(max_size=4), values, max_size=3),
        },
        optional={"n": values, "x": values, "when": values},
    )
)
def test_a_finished_row_s_journal_line_is_the_general_one(row: dict[str, Any]) -> None:
    assert encode_line(row) == encode_any_line(row)


def test_a_self_containing_value_with_a_created_at_is_not_journalled() -> None:
    loop: list[Any] = []
    loop.append(loop)
    row = {"id": "0123456789abcdef", "result_file": "f", "created_at": utcnow(), "c": loop}
    assert encode_line(row) is None


# --- SQLite datetimes -----------------------------------------------------------------------


zones = st.sampled_from([None, timezone.utc, timezone(timedelta(hours=14))])


@given(
    value=st.one_of(
        st.datetimes(timezones=zones),
        st.dates(),
        st.datetimes().map(lambda d: Stamp(*d.timetuple()[:6], d.microsecond)),
        st.none(),
    )
)
def test_sqlite_datetimes_are_written_as_sqlalchemy_writes_them(value: Any) -> None:
    dialect = sqlite.dialect()
    impl = sa.DateTime().dialect_impl(dialect)
    assert impl._storage_format == SQLITE_DATETIME_FORMAT  # what the quick path writes
    theirs = impl.bind_processor(dialect)
    ours = bind_processor(sa.DateTime(), dialect)
    assert theirs is not None
    assert ours is not None
    assert ours(value) == theirs(value)


def test_a_non_datetime_is_refused_as_sqlalchemy_refuses_it() -> None:
    dialect = sqlite.dialect()
    ours = bind_processor(sa.DateTime(), dialect)
    assert ours is not None
    with pytest.raises(TypeError, match="only accepts Python datetime and date"):
        ours("2024-01-01")


def test_a_custom_sqlite_storage_format_keeps_sqlalchemy_s_processor() -> None:
    dialect = sqlite.dialect()
    custom = sqlite.DATETIME(storage_format="%(year)04d/%(month)02d/%(day)02d")
    processor = bind_processor(custom, dialect)
    assert processor is not None
    assert processor(datetime(2024, 5, 6, 7, 8, 9)) == "2024/05/06"


# --- deletes by id ----------------------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 2, 3, 5, 100, 511, 512])
def test_padding_repeats_the_last_id_up_to_a_power_of_two(count: int) -> None:
    ids = [f"{i:016x}" for i in range(count)]
    out = padded(ids)
    assert len(out) & (len(out) - 1) == 0
    assert len(out) < 2 * count or count == 1
    assert list(out[:count]) == ids
    assert set(out[count:]) <= {ids[-1]}


def test_a_sweep_clears_old_failures_and_its_claims_in_every_chunk(
    db_url: str, tmp_path: Path
) -> None:
    # More points than one statement's ids (and not a power of two): every chunk of
    # the batch deletes its failure records and releases its claims.
    points = [{"n": i, "x": 0.5, "name": "a"} for i in range(1300)]
    fail = {"on": True}

    def runner(params: dict[str, Any]) -> None:
        if fail["on"]:
            raise RuntimeError("not yet")
        _write(params)

    with Store(runner, Kept, results_dir=tmp_path / "r", db_url=db_url) as store:
        with pytest.raises(Exception, match="1300 of 1300"):
            store.sweep(points)
        assert len(store.failures()) == 1300
        fail["on"] = False
        records = store.sweep(points)
        assert len(records) == 1300
        assert store.failures() == []
        with store.engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(CLAIMS)).scalar() == 0
            failures = conn.execute(sa.select(sa.func.count()).select_from(FAILURES)).scalar()
            assert failures == 0


#: Ids of every shape a claim may hold (explicit ids are any safe file stem).
ODD_IDS = [
    "plain",
    'with "quotes"',
    "with 'apostrophes'",
    "spaces and\ttabs",
    "ünïcödé",
    "🙂",
    "[1]",
    "{}",
]


@pytest.mark.parametrize("way", ["one-array", "row-by-row"])
def test_claims_go_to_one_owner_each_whichever_way_they_are_inserted(
    way: str, shared_db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The ids as one array parameter where the database takes it (PostgreSQL, SQLite
    # with JSON), else a row of parameters per claim: both give the same claims.
    from entropic._storage.claims import Claims

    if way == "row-by-row":
        monkeypatch.setattr(entropic._storage.claims, "_array_insert", lambda engine: None)
    with Store(_write, Kept, results_dir=tmp_path / "r", db_url=shared_db_url) as store:
        index = store._core.index
        mine, theirs = Claims(index), Claims(index)
        assert (mine._from_array is not None) == (way == "one-array")
        hexes = [f"{i:016x}" for i in range(300)]
        assert mine.claim(hexes[:200] + ODD_IDS[:4]) == (hexes[:200] + ODD_IDS[:4], [])
        # The overlap stays with its first owner; the rest, odd ids too, go to the second.
        asked = ODD_IDS[2:] + hexes[100:]
        won, busy = theirs.claim(asked)
        assert won == ODD_IDS[4:] + hexes[200:]
        assert busy == ODD_IDS[2:4] + hexes[100:200]
        with store.engine.connect() as conn:
            c = CLAIMS.c
            held = dict(conn.execute(sa.select(c.id, c.owner)).all())
        assert held == {
            **{i: mine.owner for i in hexes[:200] + ODD_IDS[:4]},
            **{i: theirs.owner for i in ODD_IDS[4:] + hexes[200:]},
        }
        mine.close()
        theirs.close()


def test_overlapping_claims_in_any_order_from_many_threads_never_deadlock(
    shared_db_url: str, tmp_path: Path
) -> None:
    # Each claim inserts in one order (sorted ids) whatever order it was given: on
    # PostgreSQL, inserts of overlapping ids in different orders deadlock each other.
    from entropic._storage.claims import Claims

    ids = [f"{i:016x}" for i in range(600)]
    with Store(_write, Kept, results_dir=tmp_path / "r", db_url=shared_db_url) as store:
        index = store._core.index
        owners = [Claims(index) for _ in range(6)]
        won: dict[str, list[str]] = {claims.owner: [] for claims in owners}
        errors: list[BaseException] = []
        start = threading.Barrier(len(owners))

        def claim(claims: Claims, seed: int) -> None:
            mine = random.Random(seed).sample(ids, 400)
            start.wait()
            try:
                for i in range(0, len(mine), 100):
                    won[claims.owner].extend(claims.claim(mine[i : i + 100])[0])
            except BaseException as exc:
                errors.append(exc)

        threads = [
            threading.Thread(target=claim, args=(claims, seed))
            for seed, claims in enumerate(owners)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for claims in owners:
            claims.close()
    assert errors == []
    taken = [run_id for run_ids in won.values() for run_id in run_ids]
    assert len(taken) == len(set(taken))


def test_releasing_claims_leaves_other_owners_and_tables_alone(
    shared_db_url: str, tmp_path: Path
) -> None:
    from entropic._storage.claims import Claims

    with Store(_write, Kept, results_dir=tmp_path / "r", db_url=shared_db_url) as store:
        index = store._core.index  # the claims of this store's table
        mine, theirs = Claims(index), Claims(index)
        ids = [f"{i:016x}" for i in range(700)]
        assert mine.claim(ids[:600]) == (ids[:600], [])
        assert theirs.claim(ids[600:]) == (ids[600:], [])
        mine.release(ids[:300] + ids[600:650])  # not mine past 600: kept
        with store.engine.connect() as conn:
            c = CLAIMS.c
            left = dict(conn.execute(sa.select(c.id, c.owner)).all())
        assert sorted(left) == ids[300:]
        assert {left[i] for i in ids[300:600]} == {mine.owner}
        assert {left[i] for i in ids[600:]} == {theirs.owner}
        mine.close()
        theirs.close()


@pytest.mark.parametrize("one_thread", [True, False], ids=["one-thread", "shared"])
def test_the_last_claims_an_owner_holds_go_in_one_statement_and_no_others_with_them(
    shared_db_url: str, tmp_path: Path, one_thread: bool
) -> None:
    from entropic._storage.claims import Claims

    with Store(_write, Kept, results_dir=tmp_path / "r", db_url=shared_db_url) as store:
        index = store._core.index
        mine, theirs = Claims(index, one_thread=one_thread), Claims(index)
        ids = [f"{i:016x}" for i in range(700)]
        assert mine.claim(ids[:300]) == (ids[:300], [])
        assert theirs.claim(ids[600:]) == (ids[600:], [])
        assert mine.claim(ids[300:600]) == (ids[300:600], [])
        deletes: list[Any] = []

        def spy(conn: Any, cursor: Any, sql: str, parameters: Any, *args: Any) -> None:
            if sql.lstrip().upper().startswith("DELETE"):
                deletes.append(parameters)

        def left() -> dict[str, str]:
            with store.engine.connect() as conn:
                c = CLAIMS.c
                return dict(conn.execute(sa.select(c.id, c.owner)).all())

        sa.event.listen(store.engine, "before_cursor_execute", spy)
        mine.release(ids[:300] + ids[600:650])  # still holds 300..600: by id
        assert sorted(left()) == ids[300:]
        assert all(len(parameters) > 2 for parameters in deletes)
        deletes.clear()
        mine.release(ids[300:600])  # the last it holds
        assert len(deletes) == 1
        # The table's name and the owner only, or the ids too.
        assert (len(deletes[0]) == 2) is one_thread
        assert left() == {i: theirs.owner for i in ids[600:]}
        mine.close()
        theirs.close()


@pytest.mark.parametrize("stream", [False, True], ids=["sweep", "isweep"])
def test_a_sweep_claims_fast_points_many_at_a_time_and_slow_ones_a_few(
    stream: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from entropic._storage.claims import Claims

    sizes: list[int] = []
    claim = Claims.claim

    def counted(self: Claims, ids: Any, since: Any = None) -> Any:
        sizes.append(len(ids))
        return claim(self, ids, since)

    monkeypatch.setattr(Claims, "claim", counted)
    sweep = entropic.sweep
    url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    fast = [{"n": i, "x": 0.5, "name": "fast"} for i in range(3000)]
    with Store(_write, Kept, results_dir=tmp_path / "fast", db_url=url) as store:
        assert len(list(store.isweep(fast)) if stream else store.sweep(fast)) == len(fast)
    # From the first claim's size up by four times at most, to the largest.
    assert sizes[:4] == [sweep.FIRST_CLAIM_RUNS, 64, 256, sweep.CLAIM_RUNS]
    assert sum(sizes) == len(fast)

    def slow(params: dict[str, Any]) -> None:
        time.sleep(0.02)
        _write(params)

    monkeypatch.setattr(sweep, "CLAIM_SECONDS", 0.1)
    sizes.clear()
    points = [{"n": i, "x": 0.5, "name": "slow"} for i in range(40)]
    with Store(slow, Kept, results_dir=tmp_path / "slow", db_url=url) as store:
        assert len(list(store.isweep(points)) if stream else store.sweep(points)) == len(points)
    # The first claim, then about a tenth of a second's worth of points (5 at most).
    assert sizes[0] == sweep.FIRST_CLAIM_RUNS
    assert 1 <= max(sizes[1:]) <= 5
    assert sum(sizes) == len(points)


def test_a_serial_sweep_drops_each_batch_s_claims_by_owner(
    shared_db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Batches of BATCH_RUNS (whole claim rounds) end when every claim they made is done.
    monkeypatch.setattr(entropic.sweep, "BATCH_SECONDS", 3600.0)
    points = [{"n": i, "x": 0.5, "name": "a"} for i in range(entropic.sweep.BATCH_RUNS + 76)]
    with Store(_write, Kept, results_dir=tmp_path / "r", db_url=shared_db_url) as store:
        deletes: list[Any] = []

        def spy(conn: Any, cursor: Any, sql: str, parameters: Any, *args: Any) -> None:
            if sql.lstrip().upper().startswith("DELETE FROM ENTROPIC_CLAIMS"):
                deletes.append(parameters)

        sa.event.listen(store.engine, "before_cursor_execute", spy)
        assert len(store.sweep(points)) == len(points)
        # Both batches, then the final drop: the table's name and the owner, no ids.
        assert [len(parameters) for parameters in deletes] == [2, 2, 2]
        with store.engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(CLAIMS)).scalar() == 0


# --- the look for a leftover ------------------------------------------------------------------


def test_a_dangling_link_left_at_a_result_path_is_replaced_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    with Store(_write, Kept, results_dir=tmp_path / "r") as store:
        params = {"n": 1, "x": 0.5, "name": "a"}
        path = Path(store.results_dir) / f"{hash_params(params)}.h5"
        path.symlink_to(outside)  # a leftover no row vouches for
        record = store.sweep([params])[0]
        assert Path(record.result_file) == path
        assert not path.is_symlink()
        assert path.read_bytes() == b"x"
        assert not outside.exists()


# --- batch writes -----------------------------------------------------------------------------


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=4)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.text(max_size=3), inner, max_size=3),
    ),
    max_leaves=8,
)


@given(custom=st.one_of(st.dictionaries(st.text(max_size=4), json_values, max_size=4), json_values))
def test_batch_writes_bind_what_sqlalchemy_binds(custom: Any) -> None:
    url = parse_db_url("sqlite://")
    engine = create_engine(url)
    table = Kept.__table__
    assert isinstance(table, sa.Table)
    statement = upsert(table, "sqlite")
    keys = frozenset(column.key for column in table.columns)
    driver = compile_write(statement, engine.dialect, keys, sqlite_json_bind)
    assert driver is not None
    row = {
        "id": "0123456789abcdef",
        "result_file": "/r/0123456789abcdef.h5",
        "created_at": utcnow(),
        "custom_data": custom,
        "n": 1,
        "x": 0.5,
        "name": "a",
    }
    seen: list[Any] = []

    def spy(conn: Any, cursor: Any, sql: str, parameters: Any, *args: Any) -> None:
        if sql.startswith("INSERT"):
            seen.append(parameters)

    table.create(engine)
    sa.event.listen(engine, "before_cursor_execute", spy)
    try:
        with engine.connect() as conn:
            conn.execute(statement, [row])
            conn.rollback()
    finally:
        engine.dispose()
    [theirs] = seen
    [ours] = driver.parameters([row])
    assert ours == tuple(theirs)
    assert [type(value) for value in ours] == [type(value) for value in theirs]


# --- custom_data values ---------------------------------------------------------------------


@given(
    value=st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.text(),
        st.sampled_from([Level.LOW, "\ud800", -0.0, 2**70, float("inf")]),
        st.lists(st.integers(), max_size=2),
        st.dictionaries(st.integers(), st.text(max_size=2), max_size=2),
    )
)
def test_json_values_are_what_a_json_round_trip_gives(value: Any) -> None:
    def round_trip() -> Any:
        return json.loads(json.dumps(value, allow_nan=False, default=json_default))

    try:
        expected = round_trip()
    except ValueError:
        with pytest.raises(TypeError, match="cannot be stored as JSON"):
            json_value(value, "custom_data['k']")
        return
    got = json_value(value, "custom_data['k']")
    assert type(got) is type(expected)
    assert got == expected or (got != got and expected != expected)
    if isinstance(got, float):
        assert math.copysign(1.0, got) == math.copysign(1.0, expected)


def test_a_sweep_that_claims_nothing_writes_nothing(tmp_path: Path) -> None:
    params = [{"n": i, "x": 0.5, "name": "a"} for i in range(3)]
    with Store(_write, Kept, results_dir=tmp_path / "r") as store:
        store.sweep(params)
        writes: list[str] = []

        def spy(conn: Any, cursor: Any, sql: str, *args: Any) -> None:
            if not sql.lstrip().upper().startswith(("SELECT", "PRAGMA")):
                writes.append(sql)

        sa.event.listen(store.engine, "before_cursor_execute", spy)
        assert len(store.sweep(params)) == 3  # all cached
        assert writes == []


class Tagged(sa.types.TypeDecorator[Any]):
    """A JSON column whose type changes what it binds: the batch write must not skip it."""

    impl = sa.JSON
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        return None if value is None else {**value, "tagged": True}


class WithTagged(Base):
    __tablename__ = "bookkeeping_tagged"

    n: Mapped[int]
    data: Mapped[dict[str, Any]] = mapped_column(Tagged)


def test_a_json_type_of_the_user_s_own_binds_as_it_says(db_url: str, tmp_path: Path) -> None:
    with Store(_write, WithTagged, results_dir=tmp_path / "r", db_url=db_url) as store:
        store.sweep([{"n": i, "data": {"i": i}} for i in range(3)])
        with store.engine.connect() as conn:
            stored = conn.execute(sa.select(WithTagged.__table__.c.data)).scalars().all()
    assert sorted(stored, key=lambda d: d["i"]) == [{"i": i, "tagged": True} for i in range(3)]


def test_deletes_by_id_take_sqlalchemy_s_path_when_a_value_needs_converting(
    tmp_path: Path,
) -> None:
    engine = create_engine(parse_db_url(f"sqlite:///{tmp_path / 'ids.sqlite3'}"))
    c = CLAIMS.c
    CLAIMS.create(engine)
    when = datetime(2024, 1, 1)
    ids = [f"{i:016x}" for i in range(10)]
    claim = {"table_name": "t", "owner": "o", "host": "h", "pid": 1, "heartbeat_at": when}
    plain = DriverIds(
        lambda cond: sa.delete(CLAIMS).where(c.owner == sa.bindparam("o"), cond),
        c.id,
        engine.dialect,
    )
    # A datetime to bind: the driver's path does not convert it, so SQLAlchemy's is taken.
    dated = DriverIds(
        lambda cond: sa.delete(CLAIMS).where(c.claimed_at < sa.bindparam("before"), cond),
        c.id,
        engine.dialect,
    )
    try:
        with engine.begin() as conn:
            conn.execute(sa.insert(CLAIMS), [{**claim, "id": i, "claimed_at": when} for i in ids])
            plain.execute(conn, ids[:3], {"o": "o"})
            dated.execute(conn, ids[3:7], {"before": datetime(2025, 1, 1)})
            dated.execute(conn, ids[7:], {"before": datetime(2023, 1, 1)})  # none older
            assert plain.execute(conn, [], {"o": "o"}) is None
            left = sorted(conn.execute(sa.select(c.id)).scalars())
    finally:
        engine.dispose()
    assert left == ids[7:]


# --- the look again after a claim -------------------------------------------------------------


def _claim_rounds(rounds: int) -> list[dict[str, Any]]:
    """Points enough for at least ``rounds`` claims of a sweep (its first claims are small)."""
    return [{"n": i, "x": 0.5, "name": "a"} for i in range(rounds * 256)]


def test_a_change_mark_sees_every_writer_but_its_owner(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    with Store(_write, Kept, results_dir=tmp_path / "r", db_url=url) as store:
        index = store._core.index
        ours, theirs = "owner-ours", "owner-theirs"
        insert = sa.insert(FAILURES.metadata.tables["entropic_claims"])

        def claim_row(run_id: str, owner: str) -> dict[str, Any]:
            now = utcnow()
            return {
                "table_name": "t",
                "id": run_id,
                "owner": owner,
                "host": "h",
                "pid": 1,
                "claimed_at": now,
                "heartbeat_at": now,
            }

        def unchanged(mark: Any) -> bool:
            with index.begin_write(ours) as conn:
                return index.unchanged_since(conn, mark, ours)

        mark = index.change_mark()
        assert mark is not None
        assert unchanged(mark)
        # The owner's own commits leave the mark standing...
        with index.begin_write(ours) as conn:
            conn.execute(insert, claim_row("a", ours))
        assert unchanged(mark)
        # ...another owner's, or one of nobody's, through the same engine do not...
        with index.begin_write(theirs) as conn:
            conn.execute(insert, claim_row("b", theirs))
        assert not unchanged(mark)
        mark = index.change_mark()
        with index.begin_write() as conn:
            conn.execute(insert, claim_row("c", theirs))
        assert not unchanged(mark)
        # ...nor another connection's (another process's), which the engine never sees.
        mark = index.change_mark()
        other = sa.create_engine(url)
        with other.begin() as conn:
            conn.execute(insert, claim_row("d", theirs))
        other.dispose()
        assert not unchanged(mark)
        # A mark read on one connection says nothing of another, whatever its version.
        mark = index.change_mark()
        assert unchanged(mark)
        assert not unchanged(mark._replace(driver=object()))
        with store.engine.connect() as held:
            assert held.connection.driver_connection is mark.driver
            with index.begin_write(ours) as conn:  # the pool gives another connection
                assert not index.unchanged_since(conn, mark, ours)


def test_an_sqlite_file_s_pool_hands_out_the_connection_returned_last(tmp_path: Path) -> None:
    # So that a sweep's claims find the connection its change mark was read on.
    engine = create_engine(parse_db_url(f"sqlite:///{tmp_path / 'store.sqlite3'}"))
    try:
        with engine.connect() as first, engine.connect() as second:
            drivers = [first.connection.driver_connection, second.connection.driver_connection]
        # second went back first, then first: first comes out again, and again.
        for _ in range(3):
            with engine.connect() as again:
                assert again.connection.driver_connection is drivers[0]
    finally:
        engine.dispose()


def test_a_change_mark_is_none_where_it_cannot_tell(db_url: str, tmp_path: Path) -> None:
    with Store(_write, Kept, results_dir=tmp_path / "r", db_url=db_url) as store:
        index = store._core.index
        mark = index.change_mark()
        assert (mark is not None) == (db_url.startswith("sqlite:///"))
        with index.begin_write("x") as conn:
            assert not index.unchanged_since(conn, None, "x")


@pytest.mark.parametrize("stream", [False, True], ids=["sweep", "isweep"])
def test_a_cold_sweep_on_a_quiet_sqlite_file_looks_its_points_up_once(
    stream: bool, tmp_path: Path
) -> None:
    # Three claim rounds; nothing but the sweep writes: no look again after each claim.
    points = _claim_rounds(3)
    url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    with Store(_write, Kept, results_dir=tmp_path / "r", db_url=url) as store:
        lookups = _lookups(store.engine)
        records = list(store.isweep(points)) if stream else store.sweep(points)
        assert len(records) == len(points)
    # The plan's lookups only, ID_CHUNK ids each.
    assert len(lookups) == -(-len(points) // ID_CHUNK)


def _lookups(engine: sa.Engine) -> list[str]:
    """The SELECTs of Kept's table run on ``engine`` from now on, as they run."""
    lookups: list[str] = []

    def spy(conn: Any, cursor: Any, sql: str, *args: Any) -> None:
        if sql.lstrip().upper().startswith("SELECT") and Kept.__tablename__ in sql:
            lookups.append(sql)

    sa.event.listen(engine, "before_cursor_execute", spy)
    return lookups


def _refreshes_heartbeats(sql: str) -> bool:
    """Whether ``sql`` is a refresh of claims' heartbeats."""
    return sql.lstrip().upper().startswith("UPDATE") and "heartbeat_at" in sql


def _heartbeats(engine: sa.Engine) -> list[str]:
    """The names of the threads that refresh claims' heartbeats on ``engine``, as they do."""
    beats: list[str] = []

    def spy(conn: Any, cursor: Any, sql: str, *args: Any) -> None:
        if _refreshes_heartbeats(sql):
            beats.append(threading.current_thread().name)

    sa.event.listen(engine, "before_cursor_execute", spy)
    return beats


@pytest.mark.parametrize("stream", [False, True], ids=["sweep", "isweep"])
def test_a_sweep_refreshes_its_heartbeat_in_its_own_writes(
    stream: bool, shared_db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A sweep that claims about every third of a second, with a two-second heartbeat:
    # the sweep refreshes it in its claims (due after one second), and the background
    # thread, which refreshes after two seconds without one, never writes. Its write
    # would take a second connection whenever the sweep holds the first, and after
    # that the sweep would look its points up again after every claim.
    monkeypatch.setattr(entropic._storage.claims, "HEARTBEAT_SECONDS", 2.0)
    monkeypatch.setattr(entropic.sweep, "CLAIM_SECONDS", 0.3)
    points = _claim_rounds(10)
    # A claim of a peer on another host that stopped beating an hour ago: it must stay
    # stale (a refresh touches its owner's claims only).
    gone = utcnow() - timedelta(hours=1)
    peer = {"table_name": Kept.__tablename__, "id": "0" * 16, "owner": "elsewhere~1~1~x"}
    peer |= {"host": "elsewhere", "pid": 1, "claimed_at": gone, "heartbeat_at": gone}

    def slow(params: dict[str, Any]) -> None:
        time.sleep(0.001)
        _write(params)

    with Store(slow, Kept, results_dir=tmp_path / "r", db_url=shared_db_url) as store:
        with store.engine.begin() as conn:
            conn.execute(sa.insert(CLAIMS), peer)
        beats = _heartbeats(store.engine)
        lookups = _lookups(store.engine)
        began = time.monotonic()
        records = list(store.isweep(points)) if stream else store.sweep(points)
        took = time.monotonic() - began
        assert len(records) == len(points)
        with store.engine.connect() as conn:
            left = conn.execute(sa.select(CLAIMS.c.id, CLAIMS.c.heartbeat_at)).all()
        assert left == [(peer["id"], gone)]
    assert took > 2.5  # 2,560 points of a millisecond: long enough for a claim to refresh
    assert beats, "the heartbeat was never refreshed"
    assert set(beats) == {threading.current_thread().name}
    if shared_db_url.startswith("sqlite:"):
        assert len(lookups) == -(-len(points) // ID_CHUNK)


def test_a_slow_point_still_has_its_claims_heartbeat_refreshed(
    shared_db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A point that runs for several heartbeat intervals commits nothing meanwhile: the
    # background thread refreshes the claims, so no peer on another host takes them.
    monkeypatch.setattr(entropic._storage.claims, "HEARTBEAT_SECONDS", 0.2)
    seen: list[tuple[datetime, datetime]] = []

    def slow(params: dict[str, Any]) -> None:
        time.sleep(0.8)
        other = sa.create_engine(shared_db_url)
        try:
            with other.connect() as conn:
                seen.extend(conn.execute(sa.select(CLAIMS.c.claimed_at, CLAIMS.c.heartbeat_at)))
        finally:
            other.dispose()
        _write(params)

    with Store(slow, Kept, results_dir=tmp_path / "r", db_url=shared_db_url) as store:
        beats = _heartbeats(store.engine)
        store.sweep([{"n": 1, "x": 0.5, "name": "a"}, {"n": 2, "x": 0.5, "name": "a"}])
    assert "entropic-heartbeat" in beats
    assert seen
    for claimed_at, heartbeat_at in seen:
        assert heartbeat_at - claimed_at >= timedelta(seconds=0.2)


def test_one_refresh_at_a_time_and_none_in_the_claims_of_an_owner_holding_many(
    shared_db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An owner that claims everything before running anything (a sweep handing its
    # points to Dask) ends up refreshing thousands of claims at each beat. Inside its
    # claims, that would stall them; and two refreshes at once (a claim's and the
    # background thread's) deadlock each other on PostgreSQL.
    from entropic._storage.claims import REFRESH_IN_CLAIM_MAX, Claims

    monkeypatch.setattr(entropic._storage.claims, "HEARTBEAT_SECONDS", 0.02)
    with Store(_write, Kept, results_dir=tmp_path / "r", db_url=shared_db_url) as store:
        lock = threading.Lock()
        running: list[int] = [0, 0]  # refreshes in flight now, most at once
        by_claims: list[int] = []  # held claims at each refresh made by a claim

        def before(conn: Any, cursor: Any, sql: str, *args: Any) -> None:
            if _refreshes_heartbeats(sql):
                with lock:
                    running[0] += 1
                    running[1] = max(running)
                if threading.current_thread() is threading.main_thread():
                    by_claims.append(held)

        def after(conn: Any, cursor: Any, sql: str, *args: Any) -> None:
            if _refreshes_heartbeats(sql):
                with lock:
                    running[0] -= 1

        sa.event.listen(store.engine, "before_cursor_execute", before)
        sa.event.listen(store.engine, "after_cursor_execute", after)
        claims = Claims(store._core.index, one_thread=True)
        claims.start_heartbeat()
        held = 0
        try:
            for i in range(0, 3 * REFRESH_IN_CLAIM_MAX, 256):
                ids = [f"{j:016x}" for j in range(i, i + 256)]
                assert claims.claim(ids) == (ids, [])
                held += 256
                time.sleep(0.005)
        finally:
            claims.release_all()
            claims.close()
    assert running == [0, 1]
    assert by_claims, "no claim refreshed the heartbeat"
    assert max(by_claims) <= REFRESH_IN_CLAIM_MAX


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database (the server CI starts)."""
    yield from pg_database()


def test_the_background_heartbeat_never_deadlocks_with_a_batch_releasing_claims(
    pg_url: str, tmp_path: Path
) -> None:
    # The background thread refreshes every claim of its owner in one UPDATE, locking
    # them one by one; a batch deletes the claims it finished, in an order of its own.
    # On PostgreSQL the two then wait on each other and one of them is aborted.
    from entropic._storage.claims import Claims

    with Store(_write, Kept, results_dir=tmp_path / "r", db_url=pg_url) as store:
        claims = Claims(store._core.index, one_thread=True)
        ids = [f"{i:016x}" for i in range(200)]
        assert claims.claim(ids) == (ids, [])
        c = CLAIMS.c
        mine = (c.table_name == Kept.__tablename__) & (c.owner == claims.owner)

        def heartbeat(run_id: str) -> datetime:
            with store.engine.connect() as conn:
                query = sa.select(c.heartbeat_at).where(mine, c.id == run_id)
                at: datetime = conn.execute(query).scalar_one()
                return at

        before = heartbeat(ids[50])
        errors: list[BaseException] = []
        refreshed = threading.Event()

        def refresh() -> None:
            try:
                claims.refresh_heartbeat()
            except BaseException as exc:
                errors.append(exc)
            refreshed.set()

        def waiting_on_a_lock(conn: sa.Connection) -> bool:
            query = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            return bool(conn.exec_driver_sql(query).scalar_one())

        thread = threading.Thread(target=refresh)
        try:
            with store.engine.connect() as batch, store.engine.connect() as look:
                batch.execute(sa.delete(CLAIMS).where(mine, c.id == ids[100]))
                thread.start()
                deadline = time.monotonic() + 10
                while not refreshed.is_set() and not waiting_on_a_lock(look):
                    assert time.monotonic() < deadline, "the refresh neither ended nor waited"
                    time.sleep(0.01)
                # The refresh holds (or held) the first claims: the batch now needs one.
                batch.execute(sa.delete(CLAIMS).where(mine, c.id == ids[0]))
                batch.commit()
        finally:
            thread.join()
        assert errors == []
        assert heartbeat(ids[50]) > before
        claims.release_all()
        claims.close()


#: Peers that store a point by running it, while a sweep runs.
PEERS_RUNNING = {
    "another-store": "a second Store on the file: another connection, as another process has",
    "another-thread": "run_or_retrieve from another thread, through the sweep's own engine",
    "forked-child": "run_or_retrieve in a forked child, which opens its own connections",
}
#: Writers that store a point's row by hand (SQLite's SQL), while a sweep runs.
PEERS_BY_HAND = {
    "raw-driver": "another thread's INSERT through the engine's raw driver connection",
    "uncommitted-connect": "another thread's INSERT on engine.connect() without commit()",
    "session-in-runner": "a Session on the sweep's own engine, in the sweep's own thread",
}


def _store_by_hand(store: Store[Any], later: dict[str, Any], how: str) -> None:
    """Write ``later``'s result file and row directly, bypassing entropic's writes."""
    run_id = hash_params(later)
    path = Path(store.results_dir) / f"{run_id}.h5"
    path.write_bytes(b"peer")
    insert = (
        f"INSERT INTO {Kept.__tablename__} (id, result_file, created_at, custom_data, n, x, name) "
        "VALUES (?, ?, '2026-01-01 00:00:00.000000', '{}', ?, ?, ?)"
    )
    values = (run_id, str(path), later["n"], later["x"], later["name"])
    if how == "raw-driver":
        raw = store.engine.raw_connection()
        try:
            raw.cursor().execute(insert, values)
            raw.commit()
        finally:
            raw.close()
    elif how == "uncommitted-connect":
        with store.engine.connect() as conn:
            conn.exec_driver_sql(insert, values)  # sqlite3 commits it at once anyway
    else:
        with Session(store.engine) as session:
            session.connection().exec_driver_sql(insert, values)
            session.commit()


def _peer_stores(
    how: str, store: Store[Any], later: dict[str, Any], runner: Any, tmp_path: Path, url: str
) -> None:
    if how == "another-store":
        with Store(runner, Kept, results_dir=tmp_path / "r", db_url=url) as peer:
            peer.run_or_retrieve(later)
    elif how == "forked-child":
        pid = os.fork()
        if pid == 0:
            try:
                store.run_or_retrieve(later)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
    elif how == "session-in-runner":
        _store_by_hand(store, later, how)
    else:
        errors: list[BaseException] = []

        def run() -> None:
            try:
                if how == "another-thread":
                    store.run_or_retrieve(later)
                else:
                    _store_by_hand(store, later, how)
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        thread.join()
        assert not errors


def _sweep_while_a_peer_stores(how: str, stream: bool, db_url: str, tmp_path: Path) -> bytes:
    """A sweep whose first run has ``how`` store a point of its second claim round, after
    the sweep looked it up: the claim must see it, and the sweep must not run it again.
    Returns the content of that point's result file afterwards."""
    points = _claim_rounds(2)
    later = points[entropic.sweep.FIRST_CLAIM_RUNS + 10]  # in a later claim than the first
    later_id = hash_params(later)
    calls: list[str] = []
    holder: dict[str, Store[Any]] = {}

    def runner(params: dict[str, Any]) -> None:
        calls.append(params["id"])
        if len(calls) == 1:
            _peer_stores(how, holder["store"], later, runner, tmp_path, db_url)
        _write(params)

    with Store(runner, Kept, results_dir=tmp_path / "r", file_suffix=".h5", db_url=db_url) as store:
        holder["store"] = store
        records = list(store.isweep(points)) if stream else store.sweep(points)
        stored = store.run_or_retrieve(later)
    assert len(records) == len(points)
    # The peer's run only (a forked child's calls are in its own memory), or none.
    assert calls.count(later_id) == (1 if how in ("another-store", "another-thread") else 0)
    assert len(calls) == len(points) - 1 + calls.count(later_id)
    taken = {record.id: record for record in records}[later_id]
    assert taken.created_at == stored.created_at
    return Path(taken.result_file).read_bytes()


@pytest.mark.parametrize("stream", [False, True], ids=["sweep", "isweep"])
@pytest.mark.parametrize("how", list(PEERS_RUNNING))
def test_a_point_a_peer_runs_during_a_sweep_is_taken_not_run_again(
    how: str, stream: bool, shared_db_url: str, tmp_path: Path
) -> None:
    assert _sweep_while_a_peer_stores(how, stream, shared_db_url, tmp_path) == b"x"


@pytest.mark.parametrize("stream", [False, True], ids=["sweep", "isweep"])
@pytest.mark.parametrize("how", list(PEERS_BY_HAND))
def test_a_row_written_by_hand_during_a_sweep_is_taken_not_run_again(
    how: str, stream: bool, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    assert _sweep_while_a_peer_stores(how, stream, url, tmp_path) == b"peer"


@pytest.mark.parametrize("stream", [False, True], ids=["sweep", "isweep"])
def test_a_point_a_peer_stores_right_after_the_lookup_is_not_run_again(
    stream: bool, tmp_path: Path
) -> None:
    # Just after the plan's first lookup, before any claim: the change mark must be
    # older than the lookups it vouches for.
    points = _claim_rounds(2)
    later = points[entropic.sweep.FIRST_CLAIM_RUNS + 10]  # in a later claim than the first
    url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    calls: list[str] = []

    def runner(params: dict[str, Any]) -> None:
        calls.append(params["id"])
        _write(params)

    with Store(runner, Kept, results_dir=tmp_path / "r", db_url=url) as store:
        stored: list[Any] = []

        def after(conn: Any, cursor: Any, sql: str, *args: Any) -> None:
            lookup = sql.lstrip().upper().startswith("SELECT") and Kept.__tablename__ in sql
            if lookup and not stored:
                with Store(runner, Kept, results_dir=tmp_path / "r", db_url=url) as peer:
                    stored.append(peer.run_or_retrieve(later))

        sa.event.listen(store.engine, "after_cursor_execute", after)
        records = list(store.isweep(points)) if stream else store.sweep(points)
    assert stored
    assert len(records) == len(points)
    assert calls.count(hash_params(later)) == 1  # the peer's
    assert {record.id: record for record in records}[stored[0].id].created_at == (
        stored[0].created_at
    )

"""The serial sweep: one pass over the input, validation first, duplicates once, input order."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import entropic._storage.core
import entropic._storage.disk
import entropic._storage.index
import entropic.sweep
from entropic import (
    Base,
    Mapped,
    ParamsTypeError,
    Store,
    SweepError,
    expand_grid,
    hash_params,
    mapped_column,
)
from entropic._storage.disk import Disk, present
from entropic._storage.index import ID_CHUNK as LOOKUP_CHUNK
from entropic._storage.statements import compile_select
from entropic.models import utcnow


class Point(Base):
    __tablename__ = "sweep_point"

    a: Mapped[int]
    b: Mapped[float]


class Counter:
    def __init__(self) -> None:
        self.ids: list[str] = []

    def __call__(self, params: dict[str, Any]) -> None:
        self.ids.append(params["id"])
        Path(params["result_file"]).write_text(f"{params['a']},{params['b']}")


@pytest.fixture
def store(db_url: str, tmp_path: Path) -> Iterator[Store[Point]]:
    with Store(Counter(), Point, results_dir=tmp_path / "results", db_url=db_url) as store:
        yield store


def _calls(store: Store[Point]) -> list[str]:
    runner = store.runner
    assert isinstance(runner, Counter)
    return runner.ids


def _count(store: Store[Point]) -> int:
    with store.engine.connect() as conn:
        return int(conn.scalar(sa.select(sa.func.count()).select_from(Point.__table__)) or 0)


class OnePass:
    """An iterable that refuses a second pass."""

    def __init__(self, points: list[dict[str, Any]]) -> None:
        self.points = points
        self.passes = 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self.passes += 1
        if self.passes > 1:
            raise AssertionError("the sweep iterated its input twice")
        return iter(self.points)


def test_sweep_runs_every_point_and_returns_records_in_input_order(store: Store[Point]) -> None:
    points = expand_grid({"a": [3, 1, 2], "b": [0.5, 0.25]})
    records = store.sweep(points)
    assert [(r.a, r.b) for r in records] == [(p["a"], p["b"]) for p in points]
    assert [r.id for r in records] == [hash_params(p) for p in points]
    assert len(_calls(store)) == 6
    for record in records:
        assert Path(record.result_file).read_text() == f"{record.a},{record.b}"
        assert isinstance(record.custom_data["elapsed_seconds"], float)


def test_input_is_consumed_once_and_generators_work(store: Store[Point]) -> None:
    once = OnePass(expand_grid({"a": [1, 2], "b": [0.5]}))
    assert len(store.sweep(once)) == 2
    assert once.passes == 1
    generator = ({"a": a, "b": 1.0} for a in range(4))
    assert [r.a for r in store.sweep(generator)] == [0, 1, 2, 3]


def test_duplicates_run_once_and_appear_once(store: Store[Point]) -> None:
    points = [
        {"a": 1, "b": 0.5},
        {"b": 0.5, "a": 1},  # same id, other key order
        {"a": 2, "b": 0.5},
        {"a": 1, "b": 0.5 + 1e-15},  # same id: floats are rounded to 12 digits
        {"a": 2, "b": 0.5, "custom_data": {"x": 1}},  # reserved keys do not change the id
    ]
    records = store.sweep(points)
    assert [(r.a, r.b) for r in records] == [(1, 0.5), (2, 0.5)]
    assert len(_calls(store)) == 2
    assert len(set(_calls(store))) == 2


def test_cached_points_are_reused(store: Store[Point]) -> None:
    first = store.sweep(expand_grid({"a": [1, 2], "b": [0.5]}))
    assert len(_calls(store)) == 2
    second = store.sweep(expand_grid({"a": [0, 1, 2, 3], "b": [0.5]}))
    assert len(_calls(store)) == 4  # only a=0 and a=3 ran
    assert [r.a for r in second] == [0, 1, 2, 3]
    assert {r.id: r.created_at for r in second[1:3]} == {r.id: r.created_at for r in first}
    assert store.sweep(expand_grid({"a": [0, 1, 2, 3], "b": [0.5]})) is not None
    assert len(_calls(store)) == 4


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        ({"a": 1, "b": 0.5, "c": 1}, ValueError),
        ({"a": "1", "b": 0.5}, TypeError),
        ({"a": 1}, ValueError),
        ({"a": 1, "b": 0.5, "id": "../x"}, ValueError),
        ({"a": 1, "b": 0.5, "custom_data": {"o": object()}}, TypeError),
    ],
)
def test_a_bad_point_fails_the_sweep_before_any_point_runs(
    store: Store[Point], bad: dict[str, Any], error: type[Exception]
) -> None:
    points = [{"a": i, "b": 0.5} for i in range(5)]
    points.insert(3, bad)
    with pytest.raises(error):
        store.sweep(points)
    assert _calls(store) == []
    assert _count(store) == 0


class Loose(Base):
    __tablename__ = "sweep_loose"

    a: Mapped[int]
    extra: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)


def test_an_unhashable_point_fails_the_sweep_before_any_point_runs(
    db_url: str, tmp_path: Path
) -> None:
    runs: list[str] = []

    def runner(params: dict[str, Any]) -> None:
        runs.append(params["id"])
        Path(params["result_file"]).write_text("x")

    with Store(runner, Loose, results_dir=tmp_path / "r", db_url=db_url) as store:
        # Valid JSON, but keys of two kinds cannot be ordered for the hash.
        points = [{"a": 1}, {"a": 2, "extra": {"k": {1: "a", "b": 2}}}]
        with pytest.raises(ParamsTypeError, match="cannot be ordered"):
            store.sweep(points)
        assert runs == []


def test_lookups_are_chunked(store: Store[Point]) -> None:
    n = 2 * LOOKUP_CHUNK + 7
    points = [{"a": i, "b": 0.0} for i in range(n)]
    store.sweep(points)
    bound: list[int] = []

    def spy(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            count = len(parameters) if isinstance(parameters, (tuple, list, dict)) else 0
            bound.append(count)

    sa.event.listen(store.engine, "before_cursor_execute", spy)
    again = store.sweep(points)
    assert [r.a for r in again] == list(range(n))
    assert len(_calls(store)) == n
    assert len(bound) == 3
    assert max(bound) <= LOOKUP_CHUNK <= 512


def _reads(store: Store[Point]) -> list[str]:
    """The SELECTs of the points' table run from now on: ``scan`` (the whole table),
    ``count`` (the rows, up to a bound) or ``ids`` (rows by id)."""
    reads: list[str] = []

    def spy(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sql = statement.upper()
        if sql.lstrip().startswith("SELECT") and Point.__tablename__.upper() in sql:
            reads.append("count" if "COUNT(" in sql else "ids" if "WHERE" in sql else "scan")

    sa.event.listen(store.engine, "before_cursor_execute", spy)
    return reads


def _seen(record: Point) -> tuple[Any, ...]:
    return (
        record.id,
        record.a,
        record.b,
        record.result_file,
        record.created_at,
        type(record.custom_data),
        dict(record.custom_data),
    )


@pytest.fixture
def scan_from_8(monkeypatch: pytest.MonkeyPatch) -> None:
    """Look-ups of 8 ids or more may read the whole table (SCAN_MIN_IDS)."""
    monkeypatch.setattr(entropic._storage.index, "SCAN_MIN_IDS", 8)


def test_a_sweep_of_a_whole_table_reads_it_once_and_builds_the_same_records(
    store: Store[Point], scan_from_8: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(entropic.sweep, "INPUT_CHUNK", 5)
    points = [{"a": i, "b": 0.5} for i in range(20)]
    first = store.sweep(points)
    reads = _reads(store)
    again = store.sweep(points)  # a list: its 20 ids are looked up together
    scanned = reads[:]
    # A generator (like a stream) is looked up a chunk (here 5) at a time.
    by_id = store.sweep(iter(points))
    streamed = list(store.isweep(points))
    assert len(_calls(store)) == 20
    assert scanned == ["count", "scan"]
    assert reads[len(scanned) :] == ["ids"] * 8
    seen = [_seen(r) for r in first]
    assert [_seen(r) for r in again] == [_seen(r) for r in by_id] == [_seen(r) for r in streamed]
    assert [_seen(r) for r in again] == seen


def test_a_read_of_the_whole_table_keeps_the_sweep_s_points_only_and_runs_lost_ones_again(
    store: Store[Point], scan_from_8: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="entropic")
    first = store.sweep([{"a": i, "b": 0.5} for i in range(10)])
    # Two files gone: a=6, swept again below, and a=0, which is not.
    for record in (first[0], first[6]):
        Path(record.result_file).unlink()
    reads = _reads(store)
    records = store.sweep([{"a": i, "b": 0.5} for i in range(5, 17)])  # 12 ids, 10 rows
    assert [r.a for r in records] == list(range(5, 17))
    assert _calls(store)[10:] == [hash_params({"a": a, "b": 0.5}) for a in [6, *range(10, 17)]]
    assert reads[:2] == ["count", "scan"]
    assert "1 indexed points had lost their files" in caplog.text
    assert "(12 distinct): 4 cached, 8 ran" in caplog.text  # a=5, 7, 8, 9; none of a<5


def _looks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The result files looked at one by one (``present``), from now on."""
    looked: list[str] = []

    def looking(path: str) -> bool:
        looked.append(path)
        return present(path)

    monkeypatch.setattr(entropic._storage.disk, "present", looking)
    return looked


def test_a_read_of_the_whole_table_lists_the_folder_and_answers_as_a_look_at_each_file(
    store: Store[Point], scan_from_8: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    points = [{"a": i, "b": 0.5} for i in range(10)]
    files = [Path(r.result_file) for r in store.sweep(points)]
    shared = files[0].parent / "shared.bin"  # one file two rows point at
    shared.write_text("x")
    extra = [{"a": 10, "b": 0.5}, {"a": 11, "b": 0.5}]
    for params in extra:
        store.register(params, shared)
    inside = files[0].parent / "kept"
    inside.mkdir()
    (inside / "file").write_text("x")
    files[0].unlink()
    files[0].symlink_to(tmp_path / "nowhere")  # a dangling link: lost
    files[1].unlink()
    files[1].symlink_to(inside / "file")  # a link to a file: there, as present says
    files[2].unlink()
    files[2].mkdir()  # something there, as present says
    files[3].unlink()  # lost
    looked = _looks(monkeypatch)
    reads = _reads(store)
    records = store.sweep(points + extra)
    assert reads[:2] == ["count", "scan"]
    assert [r.a for r in records] == list(range(12))
    assert _calls(store)[10:] == [hash_params(points[0]), hash_params(points[3])]
    # Only what the listing did not show as a regular file was looked at on its own,
    # and a file asked for again (the listing answers once for each).
    assert sorted(looked) == sorted([str(shared)] + [str(f) for f in files[:4]])


@pytest.mark.parametrize(("others", "listed"), [(9, True), (10, False)])
def test_a_folder_of_more_than_twice_as_many_entries_as_ids_is_not_listed(
    store: Store[Point],
    scan_from_8: None,
    monkeypatch: pytest.MonkeyPatch,
    others: int,
    listed: bool,
) -> None:
    points = [{"a": i, "b": 0.5} for i in range(10)]
    files = [Path(r.result_file) for r in store.sweep(points)]
    # 10 result files, .entropic, and the others: 20 entries are listed, 21 are not.
    for i in range(others):
        (files[0].parent / f"other-{i}").write_text("x")
    looked = _looks(monkeypatch)
    reads = _reads(store)
    assert [r.a for r in store.sweep(points)] == list(range(10))
    assert reads[:2] == ["count", "scan"]
    assert sorted(looked) == ([] if listed else sorted(str(f) for f in files))
    assert len(_calls(store)) == 10


def _answers_as(uid: int | None, folder: Path, paths: list[str]) -> list[list[bool]]:
    """[present_many's answer, present's] for each of ``paths``, in a child as ``uid``."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(read)
            if uid is not None:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
            check = Disk(folder, ".bin", readonly=True).present_many(len(paths))
            answers = [[check(path), present(path)] for path in paths]
            os.write(write, json.dumps(answers).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        out = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return json.loads(out)  # type: ignore[no-any-return]


def test_a_folder_access_cannot_look_into_is_not_listed(tmp_path: Path) -> None:
    # Listing a folder takes read permission; looking at a path in it takes search
    # permission too: without it, present says no, and so must the listing.
    as_other = os.geteuid() == 0  # root may search any folder: ask as nobody
    # ...in a folder of its own that nobody can get to (pytest's are its owner's only).
    base = Path(tempfile.mkdtemp(prefix="entropic-perm-")) if as_other else tmp_path
    base.chmod(0o755)
    try:
        results = base / "results"
        results.mkdir()
        paths = [str(results / f"{i}.bin") for i in range(3)]
        for path in paths:
            Path(path).write_text("x")
        assert _answers_as(65534 if as_other else None, results, paths) == [[True, True]] * 3
        results.chmod(0o744 if as_other else 0o644)
        try:
            answers = _answers_as(65534 if as_other else None, results, paths)
        finally:
            results.chmod(0o755)
        assert answers == [[False, False]] * 3
    finally:
        if base != tmp_path:
            shutil.rmtree(base)


@pytest.mark.parametrize(("ids", "read"), [(17, "scan"), (16, "ids")])
def test_a_table_is_read_whole_only_when_it_holds_no_more_rows_than_ids(
    store: Store[Point], scan_from_8: None, ids: int, read: str
) -> None:
    store.sweep([{"a": i, "b": 0.5} for i in range(17)])
    reads = _reads(store)
    records = store.sweep([{"a": i, "b": 0.5} for i in range(ids)])
    assert [r.a for r in records] == list(range(ids))
    assert reads[:2] == ["count", read]
    assert len(_calls(store)) == 17


def test_a_read_of_the_whole_table_that_fails_leaves_no_read_open(
    tmp_path: Path, scan_from_8: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An open read would keep its snapshot of the file: no copy of the write-ahead log
    # back into it could get past it while the failed sweep's traceback is kept.
    url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    points = [{"a": i, "b": 0.5} for i in range(3 * entropic._storage.index.SCAN_BATCH_ROWS)]
    with Store(Counter(), Point, results_dir=tmp_path / "r", db_url=url) as store:
        store.sweep(points)
        looks: list[str] = []

        def failing(path: str) -> bool:
            looks.append(path)
            if len(looks) > entropic._storage.index.SCAN_BATCH_ROWS:
                raise OSError("the disk went away")
            return True

        monkeypatch.setattr(Disk, "present_many", lambda _disk, _count: failing)
        with pytest.raises(OSError, match="went away") as failed:
            store.sweep(points)
        assert failed.traceback  # kept, with every frame it holds
        other = sa.create_engine(url)
        try:
            with other.begin() as conn:
                conn.execute(sa.delete(Point.__table__).where(Point.__table__.c.a == 0))
            with other.connect() as conn:
                busy = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()[0]
        finally:
            other.dispose()
        assert busy == 0


class _TupleCursor(sqlite3.Cursor):
    """An SQLite cursor whose ``fetchmany`` gives a tuple, as pg8000's does."""

    def fetchmany(self, size: int | None = 1) -> Any:
        return tuple(super().fetchmany(size))


class _TupleConnection(sqlite3.Connection):
    def cursor(self, factory: Any = _TupleCursor) -> Any:
        return super().cursor(factory)


def test_a_read_of_the_whole_table_ends_with_a_driver_that_fetches_tuples(
    tmp_path: Path,
) -> None:
    # The read stops at the first empty batch, a tuple as well as a list.
    path = tmp_path / "tuples.sqlite3"
    engine = sa.create_engine(
        "sqlite://", creator=lambda: sqlite3.connect(path, factory=_TupleConnection)
    )
    table = Point.__table__
    rows = [{"id": f"{a:016x}", "result_file": "x", "a": a, "b": 0.5} for a in range(3)]
    try:
        table.create(engine)
        with engine.begin() as conn:
            conn.execute(sa.insert(table), [{**row, "created_at": utcnow()} for row in rows])
        driver = compile_select(list(table.columns), table.c.id, engine.dialect)
        assert driver is not None
        with engine.connect() as conn, driver.scan(conn, 2) as (batches, _processors):
            got = list(islice(batches, 5))
    finally:
        engine.dispose()
    assert [type(batch) for batch in got] == [tuple, tuple]
    assert [[row[4] for row in batch] for batch in got] == [[0, 1], [2]]


def test_explicit_ids_in_a_sweep(store: Store[Point]) -> None:
    records = store.sweep([{"a": 1, "b": 0.5, "id": "first"}, {"a": 1, "b": 0.5}])
    assert [r.id for r in records] == ["first", hash_params({"a": 1, "b": 0.5})]
    assert Path(records[0].result_file).name == "first.h5"


def test_sweep_of_nothing(store: Store[Point]) -> None:
    assert store.sweep([]) == []
    assert store.sweep(expand_grid({"a": [], "b": [0.5]})) == []


def test_a_runner_failure_does_not_stop_the_sweep(db_url: str, tmp_path: Path) -> None:
    def runner(params: dict[str, Any]) -> None:
        if params["a"] == 2:
            raise RuntimeError("point 2 diverged")
        Path(params["result_file"]).write_text("x")

    with Store(runner, Point, results_dir=tmp_path / "r", db_url=db_url) as store:
        with pytest.raises(SweepError, match="point 2 diverged") as info:
            store.sweep([{"a": i, "b": 0.5} for i in range(4)])
        assert [store.retrieve({"a": i, "b": 0.5}) is not None for i in range(4)] == [
            True,
            True,
            False,
            True,
        ]
        assert [r.a for r in info.value.records] == [0, 1, 3]


def test_sweep_accepts_a_client_argument(store: Store[Point]) -> None:
    # Dask dispatch is the sweeps-at-scale issue; the argument is already part of the signature.
    records = store.sweep([{"a": 1, "b": 0.5}], client=None)
    assert len(records) == 1


def test_sweep_logs_a_summary(store: Store[Point], caplog: pytest.LogCaptureFixture) -> None:
    import logging

    caplog.set_level(logging.INFO, logger="entropic")
    store.sweep([{"a": 1, "b": 0.5}, {"a": 1, "b": 0.5}, {"a": 2, "b": 0.5}])
    store.sweep([{"a": 1, "b": 0.5}])
    summaries = [r.getMessage() for r in caplog.records if "sweep of" in r.getMessage()]
    assert len(summaries) == 2
    assert "3 points (2 distinct): 0 cached, 2 ran" in summaries[0]
    assert "1 points (1 distinct): 1 cached, 0 ran" in summaries[1]

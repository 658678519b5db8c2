"""The Store: every method of the contract, on an SQLite file, in-memory SQLite and PostgreSQL."""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import pickle
import sqlite3
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

import entropic._storage.index
from entropic import (
    Base,
    Mapped,
    MissingResultError,
    SchemaDriftError,
    Store,
    hash_params,
    mapped_column,
)


class Sim(Base):
    __tablename__ = "store_sim"

    n: Mapped[int]
    dt: Mapped[float]
    method: Mapped[str] = mapped_column(sa.String(20))
    note: Mapped[str | None]
    big: Mapped[int | None] = mapped_column(sa.BigInteger)


PARAMS: dict[str, Any] = {"n": 100, "dt": 0.1, "method": "rk4"}


class Calls:
    """A runner that writes its file, records what it saw, and can be told to fail."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.fail: BaseException | None = None
        self.write = True
        self.content = "result"

    def __call__(self, params: dict[str, Any]) -> None:
        self.seen.append(copy.deepcopy(params))
        if self.write:
            Path(params["result_file"]).write_text(self.content)
        params["custom_data"]["energy"] = -1.5
        if self.fail is not None:
            raise self.fail


StoreFactory = Callable[..., "Store[Sim]"]


@pytest.fixture
def make_store(db_url: str, tmp_path: Path) -> Iterator[StoreFactory]:
    stores: list[Store[Any]] = []

    def make(runner: Callable[[dict[str, Any]], None] | None = None, **kwargs: Any) -> Store[Sim]:
        kwargs.setdefault("results_dir", tmp_path / "results")
        kwargs.setdefault("db_url", db_url)
        store = Store(runner or Calls(), Sim, **kwargs)
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()


def _rows(store: Store[Any]) -> list[dict[str, Any]]:
    with store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(store.result_cls.__table__))]


def _files(folder: Path) -> list[str]:
    # store.json names the table a results_dir belongs to; it is there from the start.
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.is_file() and p.name != "store.json"
    )


# -- construction ----------------------------------------------------------------------------


def test_build_creates_results_dir_and_table(make_store: StoreFactory, tmp_path: Path) -> None:
    store = make_store(results_dir=tmp_path / "deep" / "results")
    assert (tmp_path / "deep" / "results").is_dir()
    assert store.results_dir == tmp_path / "deep" / "results"
    assert sa.inspect(store.engine).has_table("store_sim")
    assert _rows(store) == []


def test_defaults_are_results_folder_and_sqlite_file_in_cwd(tmp_path: Path) -> None:
    with Store(Calls(), Sim) as store:  # conftest runs each test in its own cwd
        assert store.results_dir == Path.cwd() / "results"
        assert store.file_suffix == ".h5"
        assert (Path.cwd() / "db.sqlite3").is_file()
        assert store.run(PARAMS).result_file.endswith(".h5")


@pytest.mark.parametrize("suffix", ["/x", "a/b", "\\h5", ".h5\0"])
def test_file_suffix_with_a_separator_is_refused_before_anything(
    suffix: str, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="path separator"):
        Store(Calls(), Sim, results_dir=tmp_path / "r", file_suffix=suffix, db_url="sqlite://")
    assert not (tmp_path / "r").exists()


def test_bad_constructor_arguments(tmp_path: Path) -> None:
    r = tmp_path / "r"
    with pytest.raises(TypeError, match="runner must be a callable"):
        Store("not callable", Sim, results_dir=r, db_url="sqlite://")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a SQLAlchemy database URL"):
        Store(Calls(), Sim, results_dir=r, db_url="no such url")
    with pytest.raises(FileNotFoundError, match="does not exist; create it"):
        Store(Calls(), Sim, results_dir=r, db_url=f"sqlite:///{tmp_path}/nope/db.sqlite3")
    file = tmp_path / "file"
    file.write_text("")
    with pytest.raises(NotADirectoryError):
        Store(Calls(), Sim, results_dir=file, db_url="sqlite://")
    assert not r.exists()


def test_one_engine_reused_by_every_call(make_store: StoreFactory) -> None:
    store = make_store()
    engine = store.engine
    connects: list[object] = []
    sa.event.listen(engine, "connect", lambda *_: connects.append(1))
    store.run(PARAMS)
    store.run_or_retrieve(PARAMS)
    store.retrieve(PARAMS)
    store.sweep([PARAMS, {**PARAMS, "n": 1}])
    store.delete(PARAMS)
    assert store.engine is engine
    # Pooled connections are reused: at most one new DBAPI connection in all those calls.
    assert len(connects) <= 1


def test_in_memory_sqlite_keeps_data_across_calls(tmp_path: Path) -> None:
    with Store(Calls(), Sim, results_dir=tmp_path / "r", db_url="sqlite://") as store:
        first = store.run(PARAMS)
        for _ in range(3):
            got = store.retrieve(PARAMS)
            assert got is not None
            assert got.id == first.id


def test_sqlite_file_uses_wal_a_busy_timeout_and_a_large_page_cache(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.sqlite3'}"
    with (
        Store(Calls(), Sim, results_dir=tmp_path / "r", db_url=url) as store,
        store.engine.connect() as conn,
    ):
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 10_000
        # Negative: KiB. Larger than SQLite's 2 MiB default, bounded (32 MiB).
        assert conn.exec_driver_sql("PRAGMA cache_size").scalar() == -32768
        # The log is copied back every 128 MiB (SQLite's default: 1000 pages, 4 MiB).
        page_size = conn.exec_driver_sql("PRAGMA page_size").scalar()
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() * page_size == 2**27
        assert conn.exec_driver_sql("PRAGMA journal_size_limit").scalar() == 2**27


def test_sqlite_s_log_size_follows_a_file_s_own_page_size(tmp_path: Path) -> None:
    path = tmp_path / "big-pages.sqlite3"
    made = sqlite3.connect(path)
    made.execute("PRAGMA page_size = 65536")
    made.execute("CREATE TABLE other (x INTEGER)")
    made.close()
    url = f"sqlite:///{path}"
    with (
        Store(Calls(), Sim, results_dir=tmp_path / "r", db_url=url) as store,
        store.engine.connect() as conn,
    ):
        assert conn.exec_driver_sql("PRAGMA page_size").scalar() == 65536
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 2**27 // 65536


def test_sqlite_commits_copy_the_log_back_every_so_often(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'w.sqlite3'}"
    copies: list[str] = []

    def spy(conn: Any, cursor: Any, sql: str, *args: Any) -> None:
        if "wal_checkpoint" in sql:
            copies.append(sql)

    def points(first: int) -> list[dict[str, Any]]:
        return [{"n": n, "dt": 0.1, "method": "rk4"} for n in range(first, first + 3)]

    with Store(Calls(), Sim, results_dir=tmp_path / "r", db_url=url) as store:
        sa.event.listen(store.engine, "before_cursor_execute", spy)
        monkeypatch.setattr(entropic._storage.index, "SQLITE_SYNC_SECONDS", 3600.0)
        store.sweep(points(0))
        store.run({"n": 100, "dt": 0.1, "method": "rk4"})
        assert copies == []  # not yet due
        monkeypatch.setattr(entropic._storage.index, "SQLITE_SYNC_SECONDS", 0.0)
        store.sweep(points(3))
        assert copies == ["PRAGMA wal_checkpoint(PASSIVE)"]  # after the sweep's one batch
        store.run({"n": 101, "dt": 0.1, "method": "rk4"})
        assert len(copies) == 2
        assert len(store.sweep(points(0) + points(3))) == 6


def test_sqlite_writes_start_with_begin_immediate(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.sqlite3'}"
    with Store(Calls(), Sim, results_dir=tmp_path / "r", db_url=url) as store:
        statements: list[str] = []
        sa.event.listen(store.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
        store.run(PARAMS)
        assert "BEGIN IMMEDIATE" in statements
        assert statements.index("BEGIN IMMEDIATE") < next(
            i for i, s in enumerate(statements) if s.startswith("INSERT")
        )


def test_a_second_process_style_writer_waits_instead_of_failing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.sqlite3'}"
    with Store(Calls(), Sim, results_dir=tmp_path / "r", db_url=url) as one:
        two = Store(Calls(), Sim, results_dir=tmp_path / "r", db_url=url)
        try:
            import threading

            with one.engine.begin() as conn:  # hold the write lock for a moment
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                conn.execute(sa.text("UPDATE store_sim SET n = n"))
                done = threading.Event()
                thread = threading.Thread(target=lambda: (two.run(PARAMS), done.set()))
                thread.start()
                assert not done.wait(0.3)  # blocked on the lock, not failed
            thread.join(10)
            assert done.is_set()
            assert one.retrieve(PARAMS) is not None
        finally:
            two.close()


def test_store_pickles_as_its_configuration(make_store: StoreFactory, db_url: str) -> None:
    store = make_store()
    record = store.run(PARAMS)
    data = pickle.dumps(store)
    clone = pickle.loads(data)
    try:
        assert clone.results_dir == store.results_dir
        assert clone.file_suffix == store.file_suffix
        got = clone.retrieve(PARAMS)
        if db_url == "sqlite://":
            assert got is None  # an in-memory database belongs to one Store object
        else:
            assert got is not None
            assert got.id == record.id
        assert clone.engine is not store.engine
    finally:
        clone.close()
    assert b"Engine" not in data
    assert b"Connection" not in data
    assert b"Pool" not in data


def test_password_never_shows(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    url = "postgresql+psycopg://user:s3cr3t-pw@127.0.0.1:1/db"
    caplog.set_level(logging.DEBUG, logger="entropic")
    with pytest.raises(sa.exc.OperationalError) as info:
        Store(Calls(), Sim, results_dir=tmp_path / "r", db_url=url)
    assert "s3cr3t-pw" not in str(info.value)
    assert "s3cr3t-pw" not in caplog.text


# -- identity --------------------------------------------------------------------------------


def test_id_is_the_hash_of_params_without_reserved_keys(make_store: StoreFactory) -> None:
    store = make_store()
    extra = {
        "result_file": "/elsewhere/x.h5",
        "created_at": datetime(2000, 1, 1),
        "custom_data": {"tag": "a"},
    }
    record = store.run({**PARAMS, **extra})
    assert record.id == hash_params(PARAMS)
    assert len(record.id) == 16
    # Reserved keys never change the id or the path.
    assert record.result_file == str(store.results_dir / f"{record.id}.h5")
    assert record.created_at > datetime(2020, 1, 1)
    assert store.retrieve(PARAMS) is not None
    assert store.retrieve({**PARAMS, "custom_data": {"other": 1}}) is not None


def test_explicit_id_is_used_verbatim(make_store: StoreFactory) -> None:
    store = make_store()
    record = store.run({**PARAMS, "id": "my-run_1.v2"})
    assert record.id == "my-run_1.v2"
    assert record.result_file == str(store.results_dir / "my-run_1.v2.h5")
    assert store.retrieve({"id": "my-run_1.v2"}) is not None
    assert store.retrieve(PARAMS) is None  # the hash was never used


@pytest.mark.parametrize(
    ("bad_id", "error"),
    [
        ("", ValueError),
        ("a/b", ValueError),
        ("../up", ValueError),
        ("a\\b", ValueError),
        ("a\0b", ValueError),
        (".", ValueError),
        ("..", ValueError),
        ("x" * 300, ValueError),
        (12, TypeError),
    ],
)
def test_unsafe_explicit_ids_write_nothing(
    make_store: StoreFactory, bad_id: Any, error: type[Exception], tmp_path: Path
) -> None:
    runner = Calls()
    store = make_store(runner)
    before = _files(tmp_path)
    for call in (store.run, store.run_or_retrieve):
        with pytest.raises(error, match=r"params\['id'\]"):
            call({**PARAMS, "id": bad_id})
    with pytest.raises(error, match=r"params\['id'\]"):
        store.register({**PARAMS, "id": bad_id}, __file__)
    with pytest.raises(error, match=r"params\['id'\]"):
        store.sweep([PARAMS, {**PARAMS, "id": bad_id}])
    assert runner.seen == []
    assert _rows(store) == []
    assert _files(tmp_path) == before


# -- the runner contract ---------------------------------------------------------------------


def test_runner_sees_final_path_id_and_custom_data_and_caller_dict_is_untouched(
    make_store: StoreFactory,
) -> None:
    runner = Calls()
    store = make_store(runner, file_suffix=".npy")
    params = {**PARAMS, "custom_data": {"tags": ["a"]}}
    snapshot = copy.deepcopy(params)
    record = store.run(params, seed=7)
    assert params == snapshot
    (seen,) = runner.seen
    assert seen["result_file"] == record.result_file
    assert isinstance(seen["result_file"], str)
    assert seen["result_file"] == str(store.results_dir / f"{record.id}.npy")
    assert seen["id"] == record.id
    assert seen["custom_data"] == {"tags": ["a"], "seed": 7}
    assert {k: seen[k] for k in PARAMS} == PARAMS
    assert Path(record.result_file).read_text() == "result"


def test_runner_reported_custom_data_persists(make_store: StoreFactory) -> None:
    store = make_store()
    record = store.run(PARAMS, seed=7)
    assert record.custom_data["energy"] == -1.5
    assert record.custom_data["seed"] == 7
    assert isinstance(record.custom_data["elapsed_seconds"], float)
    stored = store.retrieve(PARAMS)
    assert stored is not None
    assert stored.custom_data == record.custom_data


def test_custom_data_merge_keyword_arguments_win(make_store: StoreFactory) -> None:
    store = make_store()
    record = store.run({**PARAMS, "custom_data": {"a": 1, "b": 2}}, b=3)
    assert {k: record.custom_data[k] for k in ("a", "b")} == {"a": 1, "b": 3}


# -- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "error", "message"),
    [
        ({**PARAMS, "nsteps": 3}, ValueError, r"'nsteps'.*columns are big, dt, method, n, note"),
        ({"n": 1, "dt": 0.1}, ValueError, r"lacks required columns .*'method'.*columns are"),
        ({**PARAMS, "n": "100"}, TypeError, r"params\['n'\].*str.*Integer"),
        ({**PARAMS, "n": 2.5}, ValueError, r"params\['n'\].*whole number"),
        ({**PARAMS, "n": math.nan}, ValueError, r"params\['n'\].*whole number"),
        ({**PARAMS, "n": math.inf}, ValueError, r"params\['n'\].*whole number"),
        ({**PARAMS, "n": True}, TypeError, r"params\['n'\].*bool"),
        ({**PARAMS, "n": None}, ValueError, r"params\['n'\] is None.*NOT NULL"),
        ({**PARAMS, "n": 2**70}, ValueError, r"params\['n'\].*does not fit"),
        ({**PARAMS, "big": 2**70}, ValueError, r"params\['big'\].*does not fit"),
        ({**PARAMS, "dt": "0.1"}, TypeError, r"params\['dt'\].*str.*(Float|Double)"),
        ({**PARAMS, "dt": math.nan}, ValueError, r"params\['dt'\] is NaN"),
        ({**PARAMS, "method": 4}, TypeError, r"params\['method'\].*int.*String"),
        ({**PARAMS, "method": "x" * 21}, ValueError, r"params\['method'\].*21 characters"),
        ({**PARAMS, "custom_data": {"f": object()}}, TypeError, r"custom_data\['f'\]"),
        ({**PARAMS, "custom_data": {"f": math.nan}}, TypeError, r"custom_data\['f'\]"),
        ({**PARAMS, "custom_data": {1: 2}}, TypeError, r"custom_data keys must be str"),
        ({**PARAMS, "custom_data": [1]}, TypeError, r"params\['custom_data'\] must be a dict"),
        ({**PARAMS, "result_file": 3}, TypeError, r"params\['result_file'\]"),
        ({**PARAMS, "created_at": "today"}, TypeError, r"params\['created_at'\]"),
        ([("n", 1)], TypeError, "params must be a dict"),
    ],
)
def test_bad_params_fail_before_the_runner_and_write_nothing(
    make_store: StoreFactory,
    tmp_path: Path,
    params: Any,
    error: type[Exception],
    message: str,
) -> None:
    runner = Calls()
    store = make_store(runner)
    store.run({**PARAMS, "n": 1})
    before = (_rows(store), _files(tmp_path))
    for call in (store.run, store.run_or_retrieve):
        with pytest.raises(error, match=message):
            call(params)
    with pytest.raises(error, match=message):
        store.sweep([{**PARAMS, "n": 2}, params])
    with pytest.raises(error, match=message):
        store.register(params, __file__)
    assert len(runner.seen) == 1
    assert (_rows(store), _files(tmp_path)) == before


def test_custom_data_keyword_that_is_not_json_fails_before_running(
    make_store: StoreFactory,
) -> None:
    runner = Calls()
    store = make_store(runner)
    with pytest.raises(TypeError, match=r"custom_data\['when'\]"):
        store.run(PARAMS, when=datetime.now())
    assert runner.seen == []
    assert _rows(store) == []


def test_numpy_scalars_are_accepted_and_stored_as_python_numbers(
    make_store: StoreFactory,
) -> None:
    store = make_store()
    params = {"n": np.int64(100), "dt": np.float64(0.1), "method": np.str_("rk4")}
    record = store.run(params, weight=np.float32(0.5), counts=np.arange(3))
    assert record.id == hash_params(PARAMS)
    assert record.custom_data["counts"] == [0, 1, 2]
    stored = store.retrieve(PARAMS)
    assert stored is not None
    assert type(stored.n) is int
    assert type(stored.dt) is float
    assert type(stored.method) is str
    assert (stored.n, stored.dt, stored.method) == (100, 0.1, "rk4")
    assert type(record.n) is int
    assert type(record.dt) is float


def test_integral_float_for_an_integer_column_is_stored_as_int(make_store: StoreFactory) -> None:
    store = make_store()
    record = store.run({**PARAMS, "n": 3.0})
    assert type(record.n) is int
    assert record.n == 3
    stored = store.retrieve({**PARAMS, "n": 3.0})
    assert stored is not None
    assert stored.n == 3


def test_runner_that_stores_non_json_custom_data_leaves_nothing(
    make_store: StoreFactory, tmp_path: Path
) -> None:
    def runner(params: dict[str, Any]) -> None:
        Path(params["result_file"]).write_text("x")
        params["custom_data"]["obj"] = object()

    store = make_store(runner)
    with pytest.raises(TypeError, match=r"custom_data\['obj'\]"):
        store.run(PARAMS)
    assert _rows(store) == []
    assert _files(store.results_dir) == []


# -- run -------------------------------------------------------------------------------------


def test_run_always_runs_and_upserts(make_store: StoreFactory) -> None:
    runner = Calls()
    store = make_store(runner)
    first = store.run(PARAMS, attempt=1)
    runner.content = "second"
    second = store.run(PARAMS, attempt=2)
    assert len(runner.seen) == 2
    assert second.id == first.id
    assert second.created_at >= first.created_at
    rows = _rows(store)
    assert len(rows) == 1
    assert rows[0]["custom_data"]["attempt"] == 2  # overwritten, not merged
    assert Path(second.result_file).read_text() == "second"


def test_run_is_an_upsert_not_delete_then_insert(make_store: StoreFactory) -> None:
    store = make_store()
    store.run(PARAMS)
    statements: list[str] = []
    sa.event.listen(store.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    store.run(PARAMS)
    assert not any(s.lstrip().upper().startswith("DELETE FROM STORE_SIM") for s in statements)
    assert any("ON CONFLICT" in s.upper() for s in statements)


def test_failed_rerun_keeps_the_old_row_and_file(make_store: StoreFactory) -> None:
    runner = Calls()
    store = make_store(runner)
    old = store.run(PARAMS)
    runner.content = "half-written"
    runner.fail = RuntimeError("diverged")
    with pytest.raises(RuntimeError, match="diverged") as info:
        store.run(PARAMS, attempt=2)
    assert info.value is runner.fail  # propagated unchanged
    (row,) = _rows(store)
    assert row["custom_data"] == old.custom_data
    assert row["created_at"] == old.created_at
    assert Path(old.result_file).read_text() == "result"
    assert _files(store.results_dir) == [f"{old.id}.h5"]


def test_failed_first_run_leaves_no_file_and_no_row(make_store: StoreFactory) -> None:
    runner = Calls()
    runner.fail = KeyboardInterrupt()
    store = make_store(runner)
    with pytest.raises(KeyboardInterrupt):
        store.run_or_retrieve(PARAMS)
    assert _rows(store) == []
    assert _files(store.results_dir) == []


def test_runner_that_writes_nothing_raises_missing_result(make_store: StoreFactory) -> None:
    runner = Calls()
    runner.write = False
    store = make_store(runner)
    with pytest.raises(MissingResultError) as info:
        store.run(PARAMS)
    run_id = hash_params(PARAMS)
    assert run_id in str(info.value)
    assert str(store.results_dir / f"{run_id}.h5") in str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert _rows(store) == []


def test_runner_that_writes_nothing_on_rerun_keeps_the_old_file(make_store: StoreFactory) -> None:
    runner = Calls()
    store = make_store(runner)
    old = store.run(PARAMS)
    runner.write = False
    with pytest.raises(MissingResultError):
        store.run(PARAMS)
    assert Path(old.result_file).read_text() == "result"
    assert len(_rows(store)) == 1


def test_created_at_is_naive_utc(make_store: StoreFactory) -> None:
    store = make_store()
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    record = store.run(PARAMS)
    stored = store.retrieve(PARAMS)
    assert stored is not None
    assert stored.created_at == record.created_at
    assert record.created_at.tzinfo is None
    assert abs(record.created_at - now) < timedelta(seconds=10)


# -- run_or_retrieve, retrieve, register, delete ---------------------------------------------


def test_run_or_retrieve_runs_once(make_store: StoreFactory) -> None:
    runner = Calls()
    store = make_store(runner)
    first = store.run_or_retrieve(PARAMS, seed=1)
    again = store.run_or_retrieve({"method": "rk4", "dt": 0.1, "n": 100}, seed=2)
    assert len(runner.seen) == 1
    assert again.id == first.id
    assert again.custom_data == first.custom_data  # custom_data only counts when a run happens
    assert again.created_at == first.created_at


def test_retrieve_returns_none_on_a_miss(make_store: StoreFactory) -> None:
    store = make_store()
    assert store.retrieve(PARAMS) is None
    assert store.retrieve({"id": "nothing-here"}) is None


def test_register_indexes_an_external_file(make_store: StoreFactory, tmp_path: Path) -> None:
    runner = Calls()
    store = make_store(runner)
    external = tmp_path / "made-elsewhere.csv"
    external.write_text("a,b\n")
    record = store.register(PARAMS, external, source="cluster")
    assert runner.seen == []
    assert record.result_file == str(external)
    assert record.custom_data == {"source": "cluster"}
    assert store.run_or_retrieve(PARAMS).result_file == str(external)
    assert runner.seen == []


def test_register_of_a_missing_file_writes_nothing(
    make_store: StoreFactory, tmp_path: Path
) -> None:
    store = make_store()
    with pytest.raises(FileNotFoundError, match="no such file"):
        store.register(PARAMS, tmp_path / "missing.h5")
    assert _rows(store) == []


def test_delete(make_store: StoreFactory) -> None:
    store = make_store()
    kept = store.run(PARAMS)
    assert store.delete(PARAMS) is True
    assert store.retrieve(PARAMS) is None
    assert Path(kept.result_file).exists()  # remove_file defaults to False
    assert store.delete(PARAMS) is False
    record = store.run(PARAMS)
    assert store.delete({"id": record.id}, remove_file=True) is True
    assert not Path(record.result_file).exists()
    # A file that is already gone is fine.
    record = store.run(PARAMS)
    Path(record.result_file).unlink()
    assert store.delete(PARAMS, remove_file=True) is True


def test_delete_never_removes_a_file_outside_results_dir(
    make_store: StoreFactory, tmp_path: Path
) -> None:
    store = make_store()
    external = tmp_path / "external.h5"
    external.write_text("keep me")
    store.register(PARAMS, external)
    with pytest.raises(ValueError, match="outside results_dir"):
        store.delete(PARAMS, remove_file=True)
    assert external.read_text() == "keep me"
    assert store.retrieve(PARAMS) is not None  # nothing was deleted
    assert store.delete(PARAMS) is True
    assert external.exists()


def test_records_are_detached_and_fully_loaded(make_store: StoreFactory) -> None:
    store = make_store()
    produced = [
        store.run(PARAMS),
        store.run_or_retrieve(PARAMS),
        store.retrieve(PARAMS),
        store.sweep([PARAMS])[0],
        store.register({**PARAMS, "n": 5}, __file__),
    ]
    for record in produced:
        assert record is not None
        state = sa.inspect(record)
        assert state.detached
        assert not state.unloaded
        assert not state.expired_attributes
        values = {c: getattr(record, c) for c in ("id", "result_file", "created_at", "n", "dt")}
        assert all(v is not None for v in values.values())
        assert isinstance(record.custom_data, dict)
    # A detached record can be merged into a session like any loaded row.
    with Session(store.engine) as session:
        merged = session.merge(produced[0])
        assert merged.n == 100


def test_built_records_equal_what_the_database_returns(make_store: StoreFactory) -> None:
    store = make_store()
    built = store.run({**PARAMS, "note": "hi", "big": 2**40}, tags=["a", 1.5], nested={"k": None})
    read = store.retrieve(PARAMS | {"note": "hi", "big": 2**40})
    assert read is not None
    for column in Sim.__table__.columns:
        assert getattr(built, column.key) == getattr(read, column.key), column.key
        assert type(getattr(built, column.key)) is type(getattr(read, column.key)), column.key


def test_logging_reports_runs_and_hits(
    make_store: StoreFactory, caplog: pytest.LogCaptureFixture
) -> None:
    store = make_store()
    caplog.set_level(logging.DEBUG, logger="entropic")
    record = store.run_or_retrieve(PARAMS)
    store.run_or_retrieve(PARAMS)
    messages = [r.getMessage() for r in caplog.records if r.name == "entropic"]
    assert any(f"ran {record.id} in" in m for m in messages)
    assert any(f"hit {record.id}" in m for m in messages)


def test_file_suffix_json_does_not_collide_with_sidecars(make_store: StoreFactory) -> None:
    store = make_store(file_suffix=".json")
    record = store.run(PARAMS)
    assert Path(record.result_file).read_text() == "result"
    assert _files(store.results_dir) == [f"{record.id}.json"]


def test_nothing_is_written_outside_results_dir(make_store: StoreFactory, tmp_path: Path) -> None:
    store = make_store()
    outside = sorted(p for p in tmp_path.rglob("*") if store.results_dir not in (p, *p.parents))
    record = store.run(PARAMS)
    store.run(PARAMS)
    store.sweep([{**PARAMS, "n": i} for i in range(3)])
    store.delete(PARAMS, remove_file=True)
    after = sorted(p for p in tmp_path.rglob("*") if store.results_dir not in (p, *p.parents))
    # Only the database file (and SQLite's WAL companions) may appear beside results_dir.
    new = {p.name for p in after} - {p.name for p in outside}
    assert new <= {"store.sqlite3", "store.sqlite3-wal", "store.sqlite3-shm"}
    assert not Path(record.result_file).exists()


def test_schema_drift_is_reported_with_alter_table(shared_db_url: str, tmp_path: Path) -> None:
    old = sa.MetaData()
    sa.Table(
        "store_sim",
        old,
        sa.Column("id", sa.String(255), primary_key=True),
        sa.Column("result_file", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("custom_data", sa.JSON, nullable=False),
        sa.Column("n", sa.Integer, nullable=False),
        sa.Column("dt", sa.Float, nullable=False),
    )
    engine = sa.create_engine(shared_db_url)
    try:
        old.create_all(engine)
    finally:
        engine.dispose()
    with pytest.raises(SchemaDriftError) as info:
        Store(Calls(), Sim, results_dir=tmp_path / "seed", db_url=shared_db_url)
    message = str(info.value)
    assert "method, note, big" in message
    assert "ALTER TABLE" in message
    assert "ADD COLUMN" in message
    assert "Alembic" in message
    assert isinstance(info.value, RuntimeError)
    with pytest.raises(SchemaDriftError, match="lacks column"):
        Store(Calls(), Sim, results_dir=tmp_path / "r", db_url=shared_db_url)


def test_sidecar_is_removed_after_commit(make_store: StoreFactory) -> None:
    seen: list[list[str]] = []
    store: Store[Sim]

    def runner(params: dict[str, Any]) -> None:
        Path(params["result_file"]).write_text("x")

    store = make_store(runner)
    engine = store.engine

    def spy(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith("INSERT INTO store_sim"):
            seen.append(os.listdir(store.results_dir / ".entropic" / "sidecars"))

    sa.event.listen(engine, "before_cursor_execute", spy)
    record = store.run(PARAMS)
    # The row was journalled before the database write, and the journal emptied after it.
    assert seen == [[f"{record.id}.json"]]
    assert os.listdir(store.results_dir / ".entropic" / "sidecars") == []
    sidecar = json.dumps  # noqa: F841 - the format is tested in test_recovery


class Complex(sa.types.TypeDecorator[complex]):
    """A column type whose values JSON cannot hold, to exercise runs without a sidecar."""

    impl = sa.String(64)
    cache_ok = True

    def process_bind_param(self, value: complex | None, dialect: Any) -> str | None:
        return None if value is None else repr(value)

    def process_result_value(self, value: str | None, dialect: Any) -> complex | None:
        return None if value is None else complex(value)


class Wave(Base):
    __tablename__ = "store_wave"

    k: Mapped[complex] = mapped_column(Complex)


def test_a_custom_column_type_runs_without_a_sidecar(
    db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def runner(params: dict[str, Any]) -> None:
        Path(params["result_file"]).write_text(str(params["k"]))

    with Store(runner, Wave, results_dir=tmp_path / "r", db_url=db_url) as store:
        record = store.run({"k": 1 + 2j})
        assert record.k == 1 + 2j
        stored = store.retrieve({"k": 1 + 2j})
        assert stored is not None
        assert stored.k == 1 + 2j
        assert "without a sidecar" in caplog.text


def _run_in_child(store: Store[Sim], n: int) -> tuple[str, str, int]:
    record = store.run_or_retrieve({**PARAMS, "n": n})
    return record.id, record.result_file, os.getpid()


def test_an_unpickled_store_works_in_another_process(shared_db_url: str, tmp_path: Path) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with Store(Calls(), Sim, results_dir=tmp_path / "r", db_url=shared_db_url) as store:
        store.run(PARAMS)
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(1, mp_context=context) as pool:
            run_id, result_file, pid = pool.submit(_run_in_child, store, 7).result(timeout=120)
        assert pid != os.getpid()
        record = store.retrieve({**PARAMS, "n": 7})
        assert record is not None
        assert (record.id, record.result_file) == (run_id, result_file)
        assert Path(result_file).read_text() == "result"

"""Values a database refuses, and tables that drifted from their model.

What can be known before a run is refused before the runner is called, with the
store left as it was: a table that drifted from the model (either way) at
``Store()``, text a database cannot store in a str param, and text a JSONB column
cannot store. What is known only after a run (a value the runner puts in
custom_data) costs only that run: its batch is retried row by row, the refused
run is a failure, its row is moved to the quarantine with the reason, and the
store keeps opening, checking and repairing.

Each test runs on an SQLite file and on PostgreSQL (in-memory SQLite too where
nothing is reopened). A ``CHECK`` constraint refusing custom_data that holds a
lone surrogate stands in, on both databases, for any rule of the database that
entropic cannot know; JSONB, which refuses lone surrogates and NUL itself, is
the real thing on PostgreSQL.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from entropic import Base, Mapped, SchemaDriftError, Store, SweepError, hash_params, mapped_column
from entropic import sweep as sweep_module
from entropic._storage.disk import META_DIR

from ._support import Rel, checked_runner, read_checked, rows, tree

SURROGATE = "\ud800"
NUL = "a\x00b"


class Guarded(Base):
    """A table whose database refuses a row whose custom_data holds a lone surrogate."""

    __tablename__ = "guarded_result"
    # The JSON text of custom_data holds the escape \ud800; '!' as the LIKE escape keeps
    # the backslash literal on both databases.
    __table_args__ = (
        sa.CheckConstraint(
            r"CAST(custom_data AS TEXT) NOT LIKE '%\ud800%' ESCAPE '!'", name="no_lone_surrogate"
        ),
    )

    n: Mapped[int]


class Jsonb(Base):
    """A PostgreSQL model with a JSONB column (PostgreSQL only)."""

    __tablename__ = "jsonb_result"

    n: Mapped[int]
    cfg: Mapped[Any] = mapped_column(JSONB, nullable=True)


class Runner:
    """The checksummed runner, counting calls; ``late[n]`` goes into custom_data after the run."""

    def __init__(self, late: dict[int, Any] | None = None) -> None:
        self.calls: list[int] = []
        self.late = late or {}

    def __call__(self, params: dict[str, Any]) -> None:
        self.calls.append(params["n"])
        checked_runner(params)
        if params["n"] in self.late:
            params["custom_data"]["late"] = self.late[params["n"]]


def quarantined(results: Path) -> list[tuple[Path, dict[str, Any]]]:
    """(file, its reason record) of everything in the quarantine."""
    folder = results / META_DIR / "quarantine"
    return [
        (path, json.loads(Path(f"{path}.reason.json").read_text()))
        for path in sorted(folder.iterdir())
        if not path.name.endswith(".reason.json")
    ]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the ``entropic`` command in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "entropic", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def check(url: str, results: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    done = cli("check", *extra, "--db", url, "--results", str(results))
    assert "Traceback" not in done.stderr, done.stderr
    return done


def is_postgresql(url: str) -> bool:
    return url.startswith("postgresql")


# -- 1a: a table that drifted from the model, both ways ------------------------------------

REL_COLUMNS = [(c.name, c.type, c.nullable, c.primary_key) for c in Rel.__table__.columns]


def make_table(
    url: str, *, without: tuple[str, ...] = (), extra: Sequence[sa.Column[Any]] = ()
) -> sa.Table:
    """Create Rel's table as another version of the model made it, with two rows in it."""
    columns = [
        sa.Column(name, type_, nullable=nullable, primary_key=primary)
        for name, type_, nullable, primary in REL_COLUMNS
        if name not in without
    ]
    table = sa.Table(Rel.__tablename__, sa.MetaData(), *columns, *extra)
    engine = sa.create_engine(url)
    try:
        table.create(engine)
        base = {"result_file": "/elsewhere/old.h5", "created_at": datetime(2020, 1, 1)}
        values = {"custom_data": {}, "n": 1, "x": 0.5, "tag": "old", "cfg": None, "k": 7}
        keep = {column.name for column in table.columns}
        with engine.begin() as conn:
            for run_id in ("old1", "old2"):
                row = {"id": run_id, **base, **values}
                conn.execute(table.insert(), {k: v for k, v in row.items() if k in keep})
    finally:
        engine.dispose()
    return table


def statements(message: str) -> list[str]:
    """The SQL statements a SchemaDriftError gives, one a line."""
    found = []
    for line in message.splitlines():
        line = line.strip()
        if line.startswith(("ALTER TABLE", "UPDATE")) and line.endswith(";"):
            found.append(line[:-1])
    return found


def refused_drift(url: str, results: Path) -> str:
    """Open a Store of Rel on the drifted table: the SchemaDriftError's message."""
    runner = Runner()
    with pytest.raises(SchemaDriftError) as info:
        Store(runner, Rel, results_dir=results, db_url=url)
    assert runner.calls == []
    assert result_files_in(results) == []  # nothing ran
    return str(info.value)


def result_files_in(results: Path) -> list[str]:
    return (
        sorted(p.name for p in results.iterdir() if p.name != META_DIR) if results.exists() else []
    )


def apply_fix(url: str, message: str) -> None:
    """Run the statements of the message as given, on the table with its rows."""
    fix = statements(message)
    assert fix, message
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            for statement in fix:
                conn.exec_driver_sql(statement)
    finally:
        engine.dispose()


def table_rows(url: str) -> dict[str, dict[str, Any]]:
    engine = sa.create_engine(url)
    try:
        table = sa.Table(Rel.__tablename__, sa.MetaData(), autoload_with=engine)
        with engine.connect() as conn:
            return {r.id: dict(r._mapping) for r in conn.execute(sa.select(table))}
    finally:
        engine.dispose()


def test_a_not_null_column_the_model_lacks_is_refused_and_the_given_fix_runs_on_rows(
    shared_db_url: str, tmp_path: Path
) -> None:
    # A newer model added k (NOT NULL, no default) and wrote rows; this model lacks k
    # (an older model, or one that dropped the column): none of its rows could be stored.
    make_table(shared_db_url, extra=[sa.Column("k", sa.Integer, nullable=False)])
    before = table_rows(shared_db_url)
    message = refused_drift(shared_db_url, tmp_path / "r")
    assert "NOT NULL column(s) without a default that the model Rel lacks: k" in message
    assert "Add them to the model" in message
    assert table_rows(shared_db_url) == before
    apply_fix(shared_db_url, message)
    with Store(checked_runner, Rel, results_dir=tmp_path / "r", db_url=shared_db_url) as store:
        record = store.run({"n": 2})
        assert store.count() == 3
    held = table_rows(shared_db_url)
    assert held["old1"]["k"] == 7  # the rows already there keep their values
    assert held[record.id]["k"] is None


@pytest.mark.parametrize("which", ["nullable", "server default"])
def test_a_table_column_the_model_lacks_is_no_drift_when_rows_can_do_without_it(
    shared_db_url: str, tmp_path: Path, which: str
) -> None:
    column = (
        sa.Column("k", sa.Integer, nullable=True)
        if which == "nullable"
        else sa.Column("k", sa.Integer, nullable=False, server_default="3")
    )
    make_table(shared_db_url, extra=[column])
    with Store(checked_runner, Rel, results_dir=tmp_path / "r", db_url=shared_db_url) as store:
        record = store.run({"n": 2})
    assert table_rows(shared_db_url)[record.id]["k"] == (None if which == "nullable" else 3)


def test_model_columns_the_table_lacks_are_refused_and_the_given_fix_runs_on_rows(
    shared_db_url: str, tmp_path: Path
) -> None:
    # The model gained n (NOT NULL, no default), x (NOT NULL, default 0.0) and tag (nullable).
    make_table(shared_db_url, without=("n", "x", "tag"))
    message = refused_drift(shared_db_url, tmp_path / "r")
    assert "lacks column(s) the model Rel declares: n, x, tag" in message
    fix = statements(message)
    assert len(fix) == 3, message
    # A plain ADD COLUMN ... NOT NULL fails on a table with rows (on both databases).
    assert not any(s.endswith("NOT NULL") for s in fix), fix
    apply_fix(shared_db_url, message)
    with Store(checked_runner, Rel, results_dir=tmp_path / "r", db_url=shared_db_url) as store:
        record = store.run({"n": 2, "tag": "new"})
        old = store.retrieve({"id": "old1"})
        assert old is not None
        assert (old.n, old.x, old.tag) == (None, 0.0, None)  # x: the model's default
        assert store.find(n=2)[0].id == record.id


def test_drift_both_ways_is_one_error_and_its_fix_runs_on_rows(
    shared_db_url: str, tmp_path: Path
) -> None:
    make_table(shared_db_url, without=("tag",), extra=[sa.Column("k", sa.Integer, nullable=False)])
    message = refused_drift(shared_db_url, tmp_path / "r")
    assert "lacks column(s) the model Rel declares: tag" in message
    assert "that the model Rel lacks: k" in message
    apply_fix(shared_db_url, message)
    with Store(checked_runner, Rel, results_dir=tmp_path / "r", db_url=shared_db_url) as store:
        store.sweep([{"n": 2, "tag": "a"}, {"n": 3}])
        assert store.count() == 4
    assert table_rows(shared_db_url)["old2"]["k"] == 7


# -- 1b: text a database refuses, given before the run ---------------------------------------

PARAMS_ENTRY: dict[str, Callable[[Store[Any], dict[str, Any], Path], object]] = {
    "run": lambda s, p, ext: s.run(p),
    "run_or_retrieve": lambda s, p, ext: s.run_or_retrieve(p),
    "register": lambda s, p, ext: s.register(p, ext),
    "sweep": lambda s, p, ext: s.sweep([{"n": 100}, p]),
}


@pytest.fixture
def seeded(db_url: str, tmp_path: Path) -> Iterator[tuple[Store[Rel], Runner, Path]]:
    runner = Runner()
    external = tmp_path / "external.dat"
    external.write_text("made elsewhere")
    with Store(runner, Rel, results_dir=tmp_path / "results", db_url=db_url) as store:
        store.run({"n": 0, "tag": "seed"})
        yield store, runner, external


@pytest.mark.parametrize("via", list(PARAMS_ENTRY))
@pytest.mark.parametrize(
    "text", [SURROGATE, NUL, f"ok{SURROGATE}"], ids=["surrogate", "nul", "mid"]
)
def test_text_the_database_refuses_in_a_str_param_is_refused_before_the_runner(
    seeded: tuple[Store[Rel], Runner, Path], db_url: str, text: str, via: str
) -> None:
    store, runner, external = seeded
    if text == NUL and not is_postgresql(db_url):
        pytest.skip("SQLite stores NUL in text exactly (see the round-trip test)")
    before = (rows(store), tree(store.results_dir))
    with pytest.raises(ValueError, match=r"params\['tag'\] = .*(lone surrogate|NUL)") as info:
        PARAMS_ENTRY[via](store, {"n": 1, "tag": text}, external)
    assert type(info.value) is ValueError  # a clear error, not the driver's UnicodeEncodeError
    assert runner.calls == [0]
    assert (rows(store), tree(store.results_dir)) == before


def test_nul_in_a_str_param_is_stored_exactly_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    with Store(checked_runner, Rel, results_dir=tmp_path / "r", db_url=url) as store:
        record = store.run({"n": 1, "tag": NUL})
        assert record.tag == NUL
        assert store.retrieve({"n": 1, "tag": NUL}).tag == NUL  # type: ignore[union-attr]
    with Store(checked_runner, Rel, results_dir=tmp_path / "r", db_url=url) as again:
        assert [r.tag for r in again.find(tag=NUL)] == [NUL]
        assert again.find(tag="a") == []


def given(store: Store[Any], where: str, value: Any, n: int = 1) -> Any:
    """Run point ``n`` with ``value`` given (before the run) in ``where``."""
    if where == "keyword custom_data":
        return store.run_or_retrieve({"n": n}, v=value)
    if where == "params custom_data":
        return store.run({"n": n, "custom_data": {"v": value}})
    if where == "custom_data key":
        return store.run({"n": n}, **{value: 1})
    assert where == "JSON column"
    return store.run({"n": n, "cfg": {"v": [value]}})


def stored(record: Any, where: str, value: Any) -> bool:
    if where == "custom_data key":
        return value in record.custom_data
    if where == "JSON column":
        return bool(record.cfg == {"v": [value]})
    return bool(record.custom_data.get("v") == value)


WHERE = ["keyword custom_data", "params custom_data", "custom_data key", "JSON column"]
TEXTS = {"surrogate": SURROGATE, "nul": NUL}


def test_json_holds_lone_surrogates_and_nul_exactly(shared_db_url: str, tmp_path: Path) -> None:
    # A JSON column (custom_data included) keeps text as JSON escapes: both databases
    # store these and give them back exactly, so they are not refused.
    results = tmp_path / "r"
    cases = [(where, text) for where in WHERE for text in TEXTS.values()]
    with Store(checked_runner, Rel, results_dir=results, db_url=shared_db_url) as store:
        for n, (where, text) in enumerate(cases):
            record = given(store, where, text, n)
            assert stored(record, where, text), (where, text)
            assert stored(store.retrieve({"id": record.id}), where, text), (where, text)
    late = Runner(late={n: text for n, text in enumerate(TEXTS.values(), start=100)})
    with Store(late, Rel, results_dir=results, db_url=shared_db_url) as store:
        store.sweep([{"n": 100}, {"n": 101}])  # set by the runner, after the run
    with Store(checked_runner, Rel, results_dir=results, db_url=shared_db_url) as again:
        for n, (where, text) in enumerate(cases):
            assert stored(again.find(n=n)[0], where, text), (where, text)
        for n, text in enumerate(TEXTS.values(), start=100):
            assert again.find(n=n)[0].custom_data["late"] == text
    assert check(shared_db_url, results).returncode == 0


@pytest.fixture
def pg_url() -> Iterator[str]:
    import conftest

    yield from conftest.pg_database()


def jsonb_custom_data(url: str, model: type[Base]) -> None:
    """Make the custom_data column of ``model``'s table JSONB (as a migration might)."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(
                f"ALTER TABLE {model.__tablename__} ALTER COLUMN custom_data TYPE jsonb "
                "USING custom_data::jsonb"
            )
    finally:
        engine.dispose()


@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("text", list(TEXTS.values()), ids=list(TEXTS))
def test_text_jsonb_refuses_is_refused_before_the_runner(
    pg_url: str, tmp_path: Path, where: str, text: str
) -> None:
    results = tmp_path / "r"
    runner = Runner()
    with Store(runner, Jsonb, results_dir=results, db_url=pg_url) as store:
        store.run({"n": 0})
    jsonb_custom_data(pg_url, Jsonb)  # custom_data as JSONB is learnt from the table
    with Store(runner, Jsonb, results_dir=results, db_url=pg_url) as store:
        before = (rows(store), tree(results))
        with pytest.raises(ValueError, match=r"(custom_data|params\['cfg'\]).*JSONB") as info:
            given(store, where, text)
        assert type(info.value) is ValueError
        message = str(info.value)
        assert ("lone surrogate" if text == SURROGATE else "NUL") in message
        assert runner.calls == [0]
        assert (rows(store), tree(results)) == before


# -- 1b: a value refused only after the run ------------------------------------------------


def jsonb_store(url: str, results: Path, runner: Runner) -> Store[Jsonb]:
    """A PostgreSQL store whose custom_data is JSONB, which refuses lone surrogates and NUL."""
    Store(runner, Jsonb, results_dir=results, db_url=url).close()
    jsonb_custom_data(url, Jsonb)
    return Store(runner, Jsonb, results_dir=results, db_url=url)


def guarded_store(url: str, results: Path, runner: Runner) -> Store[Guarded]:
    return Store(runner, Guarded, results_dir=results, db_url=url)


@pytest.mark.parametrize("refuser", ["check constraint", "jsonb"])
@pytest.mark.parametrize("client", ["serial", "threads"])
def test_a_run_whose_row_is_refused_in_a_sweep_costs_only_that_run(
    shared_db_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    client: str,
    refuser: str,
) -> None:
    if refuser == "jsonb" and not is_postgresql(shared_db_url):
        pytest.skip("JSONB is PostgreSQL's")
    monkeypatch.setattr(sweep_module, "BATCH_SECONDS", 600.0)  # all eight runs: one batch
    results = tmp_path / "r"
    runner = Runner(late={3: SURROGATE, 5: NUL})
    model: type[Base] = Guarded if refuser == "check constraint" else Jsonb
    make = guarded_store if refuser == "check constraint" else jsonb_store
    store: Store[Any] = make(shared_db_url, results, runner)
    bad = hash_params({"n": 3})
    points = [{"n": n} for n in range(8)]
    caplog.set_level(logging.WARNING, logger="entropic")
    pool = ThreadPoolExecutor(2) if client == "threads" else None
    with pool or nullcontext(), pytest.raises(SweepError) as info:
        store.sweep(points, pool)
    # The good rows of the same batch are indexed; only the refused run failed.
    refused_ids = {bad} | ({hash_params({"n": 5})} if refuser == "jsonb" else set())
    assert {r.id for r in store.find()} == {hash_params(p) for p in points} - refused_ids
    failures = info.value.failures
    assert sorted(p["n"] for p, _ in failures) == sorted(
        n for n in (3, 5) if hash_params({"n": n}) in refused_ids
    )
    assert all("refused the row" in str(exc) for _, exc in failures)
    assert len(info.value.records) == 8 - len(refused_ids)
    assert {f.id for f in store.failures()} == refused_ids
    assert all("quarantine" in f.message for f in store.failures())
    # Its row is in the quarantine with the reason; nothing is left in the journal folders.
    held = quarantined(results)
    assert {reason["id"] for _, reason in held} == refused_ids
    for path, reason in held:
        assert "the database refused the row" in reason["reason"]
        assert reason["from"] == ("sidecars" if client == "threads" else "journal")
        assert reason["id"] in path.read_text()
    meta = results / META_DIR
    assert [p for f in ("journal", "sidecars", "tmp", "aside") for p in (meta / f).iterdir()] == []
    # Logged once, at WARNING.
    for run_id in refused_ids:
        said = [r for r in caplog.records if run_id in r.getMessage()]
        assert [r.levelno for r in said] == [logging.WARNING], said
    store.close()
    # A new Store opens (saying nothing more about it), and the good runs are cached.
    caplog.clear()
    runner.calls.clear()
    with Store(runner, model, results_dir=results, db_url=shared_db_url) as again:
        assert not any(r.levelno >= logging.WARNING for r in caplog.records), caplog.records
        assert again.count() == 8 - len(refused_ids)
        assert read_checked(again.find(n=0)[0].result_file) is not None
    assert runner.calls == []
    # `entropic check` reports it until it is dealt with; --repair never tracebacks.
    for extra in ((), ("--repair",)):
        done = check(shared_db_url, results, *extra)
        assert done.returncode == 1, done
        assert done.stderr == ""
        assert "quarantined" in done.stdout
        assert bad in done.stdout
    assert len(quarantined(results)) == len(refused_ids)  # --repair could not index it


def test_a_quarantined_row_is_indexed_by_repair_once_the_database_accepts_it(
    pg_url: str, tmp_path: Path
) -> None:
    results = tmp_path / "r"
    runner = Runner(late={3: SURROGATE})
    with jsonb_store(pg_url, results, runner) as store, pytest.raises(SweepError):
        store.sweep([{"n": n} for n in range(5)])
    engine = sa.create_engine(pg_url)
    try:
        with engine.begin() as conn:  # the fix: a column type that stores it
            conn.exec_driver_sql("ALTER TABLE jsonb_result ALTER COLUMN custom_data TYPE json")
    finally:
        engine.dispose()
    done = check(pg_url, results, "--repair")
    assert done.returncode == 0, done
    assert "quarantine ingested: 1" in done.stdout
    assert quarantined(results) == []
    with Store(runner, Jsonb, results_dir=results, db_url=pg_url) as store:
        assert store.find(n=3)[0].custom_data["late"] == SURROGATE


def test_a_refused_single_run_is_quarantined_and_an_earlier_result_kept(
    shared_db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    results = tmp_path / "r"
    runner = Runner()
    caplog.set_level(logging.WARNING, logger="entropic")
    with guarded_store(shared_db_url, results, runner) as store:
        first = store.run({"n": 1})
        kept = read_checked(first.result_file)
        runner.late = {1: SURROGATE, 2: SURROGATE}
        # A re-run whose row is refused: the earlier row and file stay as they were.
        with pytest.raises(ValueError, match=r"refused the row.*earlier result"):
            store.run({"n": 1})
        assert store.retrieve({"n": 1}).created_at == first.created_at  # type: ignore[union-attr]
        assert read_checked(first.result_file) == kept
        # A first run whose row is refused: its sidecar goes to the quarantine.
        with pytest.raises(ValueError, match=r"refused the row.*quarantine"):
            store.run_or_retrieve({"n": 2})
        assert store.retrieve({"n": 2}) is None
    bad = hash_params({"n": 2})
    assert [(r["id"], r["from"]) for _, r in quarantined(results)] == [(bad, "sidecars")]
    assert [r.levelno for r in caplog.records if bad in r.getMessage()] == [logging.WARNING]
    with guarded_store(shared_db_url, results, runner) as again:
        assert again.count() == 1
    done = check(shared_db_url, results, "--repair")
    assert done.returncode == 1
    assert bad in done.stdout


def test_a_sidecar_the_driver_cannot_bind_is_quarantined_not_fatal(tmp_path: Path) -> None:
    # What a sidecar holds never stops a Store: here an int too large for SQLite, which
    # the sqlite3 module refuses with OverflowError before the database sees it.
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    results = tmp_path / "r"
    Store(checked_runner, Rel, results_dir=results, db_url=url).close()
    run_id = "0123456789abcdef"
    result = results / f"{run_id}.h5"
    result.write_text("made")
    row = {"id": run_id, "result_file": str(result), "created_at": "2024-01-01T00:00:00"}
    row |= {"custom_data": {}, "n": 2**70, "x": 0.0}
    sidecar = {"entropic_sidecar": 1, "id": run_id, "row": row, "types": {"created_at": "datetime"}}
    (results / META_DIR / "sidecars" / f"{run_id}.json").write_text(json.dumps(sidecar))
    done = check(url, results, "--repair")
    assert done.returncode == 1, done
    assert "quarantined" in done.stdout
    assert [r["id"] for _, r in quarantined(results)] == [run_id]
    with Store(checked_runner, Rel, results_dir=results, db_url=url) as store:
        assert store.count() == 0
    # The same through a new Store instead of the command.
    for path, _ in quarantined(results):
        os.replace(path, results / META_DIR / "sidecars" / f"{run_id}.json")
    with Store(checked_runner, Rel, results_dir=results, db_url=url) as store:
        assert store.count() == 0
    assert [r["id"] for _, r in quarantined(results)] == [run_id]


# -- 2: bare numbers in JSON columns read back exactly -------------------------------------


class Numbers(Base):
    __tablename__ = "json_numbers"

    n: Mapped[int]
    cfg: Mapped[Any] = mapped_column(sa.JSON, nullable=True)


EXACT = [10**30, 2**63, 2**63 - 1, -(2**63), 1.0, -0.0, 0.1, 1e300, 5, True, "1.0", None]


def same(a: Any, b: Any) -> bool:
    """Equal, of the same type, and with the same sign for zeros (repr tells -0.0 from 0.0)."""
    return type(a) is type(b) and repr(a) == repr(b)


@pytest.mark.parametrize("value", EXACT, ids=repr)
def test_a_bare_number_in_a_json_column_reads_back_exactly(
    db_url: str, tmp_path: Path, value: Any
) -> None:
    results = tmp_path / "r"
    with Store(checked_runner, Numbers, results_dir=results, db_url=db_url) as store:
        record = store.run({"n": 1, "cfg": value}, v=value)
        assert same(record.cfg, value)
        found = store.retrieve({"n": 1, "cfg": value})
        assert found is not None
        assert same(found.cfg, value)
        assert same(found.custom_data["v"], value)
        if db_url == "sqlite://":
            return  # in memory: nothing to reopen
    with Store(checked_runner, Numbers, results_dir=results, db_url=db_url) as again:
        (found,) = again.find(n=1)
        assert same(found.cfg, value)
        assert same(found.custom_data["v"], value)


# -- 4: invalid explicit ids ---------------------------------------------------------------

BAD_IDS = {
    "lone surrogate": (SURROGATE, "lone surrogate"),
    "surrogate inside": (f"run{SURROGATE}1", "lone surrogate"),
    "empty": ("", "is empty"),
    "too long": ("x" * 240, "longer than 239 bytes"),
    "too long in bytes": ("é" * 120, "longer than 239 bytes"),
    "slash": ("a/b", "path separator"),
    "backslash": ("a\\b", "path separator"),
    "NUL": ("a\x00b", "NUL"),
    "dot first": (".hidden", "starts with '.'"),
}
ID_ENTRY: dict[str, Callable[[Store[Any], dict[str, Any], Path], object]] = {
    **PARAMS_ENTRY,
    "retrieve": lambda s, p, ext: s.retrieve(p),
    "delete": lambda s, p, ext: s.delete(p, remove_file=True),
}


@pytest.mark.parametrize("via", list(ID_ENTRY))
@pytest.mark.parametrize("bad", list(BAD_IDS))
def test_an_invalid_explicit_id_is_a_clear_error_before_anything_runs(
    seeded: tuple[Store[Rel], Runner, Path], bad: str, via: str
) -> None:
    store, runner, external = seeded
    run_id, problem = BAD_IDS[bad]
    before = (rows(store), tree(store.results_dir))
    with pytest.raises(ValueError, match=r"^params\['id'\] ") as info:
        ID_ENTRY[via](store, {"n": 1, "id": run_id}, external)
    assert type(info.value) is ValueError  # not the UnicodeEncodeError of a file name
    message = str(info.value)
    assert problem in message
    assert "or leave 'id' out" in message
    assert runner.calls == [0]
    assert (rows(store), tree(store.results_dir)) == before


@pytest.mark.parametrize(
    "longest", ["é" * 119 + "x", "\U0001f600" * 59 + "abc"], ids=["2-byte", "4-byte"]
)
def test_the_longest_explicit_id_works_everywhere(
    shared_db_url: str, tmp_path: Path, longest: str
) -> None:
    # 239 bytes leave room for a 15-byte file_suffix; every file entropic names after
    # the id (sidecars, their temporary files, quarantined rows) must fit in 255 bytes.
    assert len(longest.encode()) == 239
    results = tmp_path / "r"
    runner = Runner(late={2: SURROGATE})
    with guarded_store(shared_db_url, results, runner) as store:
        record = store.run({"n": 1, "id": longest})
        assert record.id == longest
        assert Path(record.result_file).name == f"{longest}.h5"
        assert [r.id for r in store.sweep([{"n": 1, "id": longest}])] == [longest]
        assert store.delete({"id": longest}) is True
        for act in (
            lambda: store.sweep([{"n": 2, "id": longest}]),  # a journal line
            lambda: store.run({"n": 2, "id": longest}),  # a sidecar
        ):
            with pytest.raises((SweepError, ValueError), match="refused the row"):
                act()  # refused: its row goes to the quarantine
        assert store.retrieve({"id": longest}) is None
    assert [r["id"] for _, r in quarantined(results)] == [longest, longest]
    with guarded_store(shared_db_url, results, runner) as again:
        assert again.count() == 0
    done = check(shared_db_url, results)
    assert done.returncode == 1
    assert longest in done.stdout


# -- 6: reserved keys are harmless in lookups -----------------------------------------------

RESERVED_JUNK: list[dict[str, Any]] = [
    {"created_at": "yesterday"},
    {"result_file": 3},
    {"result_file": "/etc/passwd"},
    {"custom_data": [1, 2]},
    {"custom_data": {"a": SURROGATE}},
    {"created_at": None, "result_file": None, "custom_data": None},
    {"created_at": object(), "result_file": object(), "custom_data": object()},
]


@pytest.mark.parametrize("junk", RESERVED_JUNK, ids=lambda j: ",".join(j))
def test_reserved_keys_in_a_lookup_are_stripped_whatever_their_value(
    db_url: str, tmp_path: Path, junk: dict[str, Any]
) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("not the store's")
    junk = {k: (str(outside) if v == "/etc/passwd" else v) for k, v in junk.items()}
    with Store(checked_runner, Rel, results_dir=tmp_path / "r", db_url=db_url) as store:
        params = {"n": 1, "tag": "t"}
        record = store.run(params)
        found = store.retrieve({**params, **junk})
        assert found is not None
        assert found.id == record.id
        assert store.retrieve({"id": record.id, **junk}) is not None
        assert store.delete({**params, **junk}, remove_file=True) is True
        assert store.retrieve(params) is None
        assert not Path(record.result_file).exists()  # its own file, never the one named
        assert outside.read_text() == "not the store's"
        assert store.delete({**params, **junk}) is False

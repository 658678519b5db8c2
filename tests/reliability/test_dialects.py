"""SQLite and PostgreSQL, side by side: upserts, bound-parameter limits, JSON, UTC, schema drift."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from entropic import SchemaDriftError, Store
from entropic._storage.core import StoreCore
from entropic.sweep import assign_ids

from ._support import Rel, checked_runner, rows

#: Most bound parameters one statement may carry: SQLite's compiled-in default
#: (SQLITE_MAX_VARIABLE_NUMBER since 3.32) and PostgreSQL's wire protocol (int16 count).
PARAM_LIMIT = {"sqlite": 32_766, "postgresql": 65_535}


@pytest.fixture
def store(db_url: str, tmp_path: Path) -> Iterator[Store[Rel]]:
    with Store(checked_runner, Rel, results_dir=tmp_path / "results", db_url=db_url) as store:
        yield store


class Statements:
    """Every SQL statement the engine sends, with the bound parameters of its largest call."""

    def __init__(self, engine: sa.Engine) -> None:
        self.seen: list[tuple[str, int]] = []
        self.engine = engine
        sa.event.listen(engine, "before_cursor_execute", self._on_execute)

    def _on_execute(
        self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        # SQLAlchemy's "insertmanyvalues" batches send many=True with one flat tuple.
        flat = many and not isinstance(next(iter(parameters), None), (tuple, list, dict))
        sets = [parameters] if not many or flat else parameters
        bound = max((len(p) for p in sets if p is not None), default=0)
        self.seen.append((" ".join(statement.split()).upper(), bound))

    def close(self) -> None:
        sa.event.remove(self.engine, "before_cursor_execute", self._on_execute)


def test_postgresql_runs_on_psycopg_3(store: Store[Rel], db_url: str) -> None:
    if not db_url.startswith("postgresql"):
        assert store.engine.dialect.name == "sqlite"
        return
    assert store.engine.dialect.name == "postgresql"
    assert store.engine.dialect.driver == "psycopg"
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("SHOW server_version").scalar()


def test_run_twice_is_one_on_conflict_upsert(store: Store[Rel]) -> None:
    first = store.run({"n": 1}, note="first")
    watch = Statements(store.engine)
    try:
        second = store.run({"n": 1}, note="second")
    finally:
        watch.close()
    writes = [
        s
        for s, _ in watch.seen
        if s.startswith(("INSERT", "UPDATE", "DELETE")) and "RELIABILITY_RESULT" in s.split("(")[0]
    ]
    assert len(writes) == 1, writes
    assert writes[0].startswith("INSERT INTO RELIABILITY_RESULT")
    assert "ON CONFLICT (ID) DO UPDATE" in writes[0]
    held = rows(store)
    assert list(held) == [first.id]
    assert held[first.id]["custom_data"]["note"] == "second"
    assert held[first.id]["created_at"] >= first.created_at
    assert second.created_at == held[first.id]["created_at"]


def test_100000_rows_upserted_and_looked_up_under_the_parameter_limit(
    shared_db_url: str, tmp_path: Path
) -> None:
    with Store(checked_runner, Rel, results_dir=tmp_path / "r", db_url=shared_db_url) as store:
        core = StoreCore(checked_runner, Rel, tmp_path / "r", ".h5", shared_db_url)
        try:
            _upsert_and_look_up(store, core, 100_000)
        finally:
            core.close()


def _upsert_and_look_up(store: Store[Rel], core: StoreCore, count: int) -> None:
    points = [core.schema.prepare({"n": i, "x": i / 7}, {}) for i in range(count)]
    assign_ids(points)
    held = [
        core.schema.spec.row(p, str(store.results_dir / f"{p.id}.h5"), {"i": i})
        for i, p in enumerate(points)
    ]
    for row in held:  # a row counts as a hit only while its file exists
        Path(row["result_file"]).touch()
    limit = PARAM_LIMIT[store.engine.dialect.name]
    watch = Statements(store.engine)
    core_watch = Statements(core.index.engine)
    try:
        # The batch write path: one transaction for all rows, then an overwrite of some.
        assert core.index.persist(held) == []
        assert core.index.persist(held[::1000]) == []
        records = store.sweep({"n": i, "x": i / 7} for i in range(count))
    finally:
        watch.close()
        core_watch.close()
    assert [r.id for r in records] == [p.id for p in points]
    step = count // 10
    assert [r.custom_data["i"] for r in records[::step]] == list(range(0, count, step))
    assert records[-1].n == count - 1
    biggest = max(bound for _, bound in watch.seen + core_watch.seen)
    assert 0 < biggest <= limit, (biggest, limit)
    with store.engine.connect() as conn:
        table = Rel.__table__
        assert conn.execute(sa.select(sa.func.count()).select_from(table)).scalar() == count


NESTED: dict[str, Any] = {
    "ключ": "значение",
    "emoji": "🧪 ∆t → 0",
    'quote"and\\back': "a'b\"c\\d\n\t",
    "nested": {"a": [1, 2.5, None, True, {"deep": {"deeper": ["x", {"y": []}]}}], "b": {}},
    "big": 2**62,
    "negative": -1e-300,
    "empty": "",
    "list_of_lists": [[1, 2], [], [[3]]],
    "zero_width": "a\u200bb",
}


def test_custom_data_json_round_trips_nested_and_unicode(
    store: Store[Rel], db_url: str, tmp_path: Path
) -> None:
    record = store.run({"n": 3, "cfg": {"π": [3.14, {"ψ": "ok"}]}}, **NESTED)
    expected = {**NESTED, "elapsed_seconds": record.custom_data["elapsed_seconds"]}
    assert record.custom_data == expected
    assert store.retrieve({"n": 3, "cfg": {"π": [3.14, {"ψ": "ok"}]}}).custom_data == expected  # type: ignore[union-attr]
    assert rows(store)[record.id]["custom_data"] == expected
    assert rows(store)[record.id]["cfg"] == {"π": [3.14, {"ψ": "ok"}]}
    if db_url != "sqlite://":
        # A second Store (a new engine and connections) reads the same JSON back.
        with Store(checked_runner, Rel, results_dir=tmp_path / "results", db_url=db_url) as other:
            again = other.retrieve({"n": 3, "cfg": {"π": [3.14, {"ψ": "ok"}]}})
            assert again is not None
            assert again.custom_data == expected
    if store.engine.dialect.name == "postgresql":
        # Stored as real JSON the server can query, not as an opaque string.
        with store.engine.connect() as conn:
            got = conn.exec_driver_sql(
                "SELECT custom_data -> 'nested' -> 'a' -> 4 -> 'deep' ->> 'deeper', "
                "custom_data ->> 'ключ', json_typeof(custom_data) FROM reliability_result"
            ).one()
        assert tuple(got) == ('["x", {"y": []}]', "значение", "object")


@pytest.mark.parametrize("zone", ["Pacific/Kiritimati", "America/Adak"])
def test_created_at_is_naive_utc_whatever_the_local_or_session_time_zone(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, zone: str
) -> None:
    # Far from UTC both ways (+14 h and -10 h), so a local-time bug cannot hide.
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    url = db_url
    if db_url.startswith("postgresql"):
        url = str(
            sa.make_url(db_url)
            .update_query_dict({"options": f"-c timezone={zone}"})
            .render_as_string(hide_password=False)
        )
    try:
        with Store(checked_runner, Rel, results_dir=tmp_path / "r", db_url=url) as store:
            before = datetime.now(timezone.utc).replace(tzinfo=None)
            record = store.run({"n": 1})
            after = datetime.now(timezone.utc).replace(tzinfo=None)
            stored = rows(store)[record.id]["created_at"]
            if store.engine.dialect.name == "postgresql":
                with store.engine.connect() as conn:
                    assert conn.exec_driver_sql("SHOW timezone").scalar() == zone
                    kind = conn.exec_driver_sql(
                        "SELECT data_type FROM information_schema.columns "
                        "WHERE table_name = 'reliability_result' AND column_name = 'created_at'"
                    ).scalar()
                assert kind == "timestamp without time zone"
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    for value in (record.created_at, stored):
        assert value.tzinfo is None
        assert before - timedelta(seconds=1) <= value <= after + timedelta(seconds=1)
    assert stored == record.created_at


def _old_table() -> sa.MetaData:
    """The model's table as an older version of the code made it: without tag and cfg."""
    old = sa.MetaData()
    sa.Table(
        "reliability_result",
        old,
        sa.Column("id", sa.String(255), primary_key=True),
        sa.Column("result_file", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("custom_data", sa.JSON, nullable=False),
        sa.Column("n", sa.Integer, nullable=False),
        sa.Column("x", sa.Float, nullable=False),
    )
    return old


def test_schema_drift_names_the_columns_and_its_alter_table_fixes_it(
    shared_db_url: str, tmp_path: Path
) -> None:
    engine = sa.create_engine(shared_db_url)
    try:
        old = _old_table()
        old.create_all(engine)
        with engine.begin() as conn:
            conn.execute(
                old.tables["reliability_result"].insert(),
                {"id": "old", "result_file": "/nowhere", "created_at": datetime(2020, 1, 1)}
                | {"custom_data": {}, "n": 1, "x": 0.5},
            )
        with pytest.raises(SchemaDriftError) as info:
            Store(checked_runner, Rel, results_dir=tmp_path / "r", db_url=shared_db_url)
        message = str(info.value)
        assert "lacks column(s) the model Rel declares: tag, cfg" in message
        assert "Alembic" in message
        statements = [
            line.strip() for line in message.splitlines() if line.strip().startswith("ALTER TABLE")
        ]
        assert len(statements) == 2
        assert "n" not in os.listdir(tmp_path / "r")  # nothing ran
        # The statements in the message are real SQL for this dialect: run them as given.
        with engine.begin() as conn:
            for statement in statements:
                conn.exec_driver_sql(statement.rstrip(";"))
        with Store(checked_runner, Rel, results_dir=tmp_path / "r", db_url=shared_db_url) as store:
            record = store.run({"n": 2, "tag": "new", "cfg": {"a": 1}})
            held = rows(store)
            assert held["old"]["n"] == 1
            assert held["old"]["tag"] is None
            assert held[record.id]["cfg"] == {"a": 1}
    finally:
        engine.dispose()

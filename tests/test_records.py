"""The records a store builds: the same detached ORM instances whatever path built them.

Records are built without the ORM's constructor (``RecordBuilder``), and when
custom_data's change tracking is the model's only load listener, without
dispatching the load event. These tests hold both paths to what SQLAlchemy
itself gives: change tracking in a Session, user listeners still called, and
custom_data read back exactly as ``json.loads`` reads it.
"""

from __future__ import annotations

import copy
import gc
import json
import math
import pickle
import traceback
import weakref
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import event
from sqlalchemy.orm import Session, column_property, mapped_column
from sqlalchemy.orm.attributes import instance_state

import entropic._storage.records
from entropic import Base, Mapped, Store
from entropic._storage.codec import loads as json_loads
from entropic._storage.index import create_engine, sqlite_json_result
from entropic._storage.records import _compiled, _maker_source
from entropic.models import CustomData, tracks_only_custom_data


class Tracked(Base):
    __tablename__ = "records_tracked"

    n: Mapped[int]


class Listened(Base):
    __tablename__ = "records_listened"

    n: Mapped[int]


class Late(Base):
    __tablename__ = "records_late"

    n: Mapped[int]


LOADED: list[int] = []


@event.listens_for(Listened, "load")
def _count_load(target: Listened, _context: Any) -> None:
    LOADED.append(target.n)


def _write(params: dict[str, Any]) -> None:
    Path(params["result_file"]).write_text("x")


def _listeners(model: type[Base]) -> tuple[Any, ...]:
    sa.orm.configure_mappers()
    return tuple(sa.inspect(model).class_manager.dispatch.load)


def test_the_plain_model_takes_the_direct_path_and_a_listened_one_does_not() -> None:
    assert tracks_only_custom_data(_listeners(Tracked))
    assert not tracks_only_custom_data(_listeners(Listened))
    assert not tracks_only_custom_data(())


def _records_of_every_path(store: Store[Any]) -> dict[str, Any]:
    """A record of n=1 from each way a store hands records out."""
    cold = store.sweep([{"n": 1, "custom_data": {"k": 0}}])[0]
    warm = store.sweep([{"n": 1}])[0]
    streamed = next(iter(store.isweep([{"n": 1}])))
    retrieved = store.retrieve({"n": 1})
    found = store.find(n=1)[0]
    return {"cold": cold, "warm": warm, "isweep": streamed, "retrieve": retrieved, "find": found}


@pytest.mark.parametrize("model", [Tracked, Listened], ids=["direct", "dispatched"])
def test_every_record_tracks_changes_to_its_custom_data_in_a_session(
    model: type[Base], db_url: str, tmp_path: Path
) -> None:
    with Store(_write, model, results_dir=tmp_path / "r", db_url=db_url) as store:
        for path, record in _records_of_every_path(store).items():
            assert type(record.custom_data) is CustomData, path
            assert instance_state(record).detached, path
            with Session(store.engine) as session:
                session.add(record)
                record.custom_data[path] = True  # an in-place change, nothing assigned
                assert record in session.dirty, path
                session.commit()
            again = store.retrieve({"n": 1})
            assert again is not None
            assert again.custom_data[path] is True, path


def _state_of(record: Any) -> dict[str, Any]:
    """Everything an instance state holds: its weak reference to the record as the
    record, and whether the state itself is weakly referred to."""
    state = instance_state(record)
    held = {}
    for name in type(state).__slots__:
        if hasattr(state, name):
            value = getattr(state, name)
            if name == "obj":
                held[name] = value()
            elif name == "__weakref__":  # whether anything refers to the state weakly
                held[name] = value is not None
            else:
                held[name] = value
    return held


@pytest.mark.parametrize("model", [Tracked, Listened])
def test_records_made_in_line_are_what_new_instance_makes(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: type[Tracked | Listened]
) -> None:
    # The in-line path (a loop written for the model) is taken for entropic's models; a
    # store told the instrumentation is not the default one (no _Making) builds
    # through new_instance instead. Listened's load listener takes the dispatched path.
    with Store(_write, model, results_dir=tmp_path / "r", db_url=db_url) as store:
        # Records from the rows just written, from a look-up by id (the driver's
        # rows and processors) and from find (SQLAlchemy's rows).
        written = store.sweep([{"n": 1, "custom_data": {"k": 0}}, {"n": 2}])
        assert store._core.index.builder._making is not None
        LOADED.clear()
        in_line = [*written, *store.sweep([{"n": 1}, {"n": 2}]), *store.find()]
        expected = [] if model is Tracked else [1, 2, 1, 2]
        assert expected == LOADED
        monkeypatch.setattr(entropic._storage.records, "_making_of", lambda _manager: None)
        del store._core.index.builder._making  # worked out again, now without it
        # Six records made anew (each is changed and committed below).
        made = [*store.sweep([{"n": 1}, {"n": 2}]), *store.sweep([{"n": 1}, {"n": 2}])]
        made.extend(store.find())
        assert store._core.index.builder._making is None
        assert expected * 2 + expected[:2] == LOADED
        for i, (a, b) in enumerate(zip(in_line, made, strict=True)):
            assert type(a) is type(b)
            assert list(vars(a)) == list(vars(b))  # the same keys, in the same order
            values_a = {k: v for k, v in vars(a).items() if k != "_sa_instance_state"}
            values_b = {k: v for k, v in vars(b).items() if k != "_sa_instance_state"}
            assert values_a == values_b
            assert {k: type(v) for k, v in values_a.items()} == {
                k: type(v) for k, v in values_b.items()
            }
            assert type(a.custom_data) is CustomData
            state_a, state_b = _state_of(a), _state_of(b)
            assert state_a.pop("obj") is a
            assert state_b.pop("obj") is b
            assert state_a == state_b
            # Each tracks changes to its custom_data in a Session, made either way.
            for record, mark in ((a, f"a{i}"), (b, f"b{i}")):
                assert instance_state(record).detached
                with Session(store.engine) as session:
                    session.add(record)
                    record.custom_data[mark] = True
                    record.n = record.n  # an assignment of the same value changes nothing
                    assert record in session.dirty
                    session.commit()
        for n in (1, 2):
            again = store.retrieve({"n": n})
            assert again is not None
            # The last commit of each row wins: b's, made through new_instance.
            assert again.custom_data[f"b{n + 3}"] is True


class Derived(Base):
    """A model with attributes of SQL expressions: one with a bound literal, one without."""

    __tablename__ = "records_derived"

    n: Mapped[int] = mapped_column()
    double: Mapped[int] = column_property(n * 2)
    twice: Mapped[int] = column_property(n + n)


def test_attributes_of_sql_expressions_are_loaded_into_every_record(
    db_url: str, tmp_path: Path
) -> None:
    points = [{"n": n} for n in range(5)]
    with Store(_write, Derived, results_dir=tmp_path / "r", db_url=db_url) as store:
        for records in (
            store.sweep(points),  # the rows just written, read back
            store.sweep(points),  # looked up by id
            [store.retrieve({"n": n}) for n in range(5)],
            store.find(),
            list(store.isweep(points)),
        ):
            assert [(r.n, r.double, r.twice) for r in records] == [
                (n, 2 * n, 2 * n) for n in range(5)
            ]
            assert all(instance_state(r).detached for r in records)
            assert all("double" in vars(r) for r in records)  # loaded, not deferred


class Audited(Base):
    """A model whose own ``__setattr__`` sees every attribute set on it."""

    __tablename__ = "records_audited"

    n: Mapped[int]

    def __setattr__(self, name: str, value: Any) -> None:
        SET.append(name)
        super().__setattr__(name, value)


SET: list[str] = []


def test_a_model_with_its_own_setattr_gets_its_records_from_new_instance(
    db_url: str, tmp_path: Path
) -> None:
    # new_instance assigns the state as an attribute: the model's __setattr__ sees it.
    with Store(_write, Audited, results_dir=tmp_path / "r", db_url=db_url) as store:
        store.sweep([{"n": 1}, {"n": 2}])
        SET.clear()
        records = store.sweep([{"n": 1}, {"n": 2}])
        assert store._core.index.builder._making is None
        assert SET.count("_sa_instance_state") == len(records) == 2
        assert [r.n for r in records] == [1, 2]


def test_loaded_custom_data_shared_with_another_record_marks_both(
    db_url: str, tmp_path: Path
) -> None:
    with Store(_write, Tracked, results_dir=tmp_path / "r", db_url=db_url) as store:
        store.sweep([{"n": 1}, {"n": 2}])
        first, second = store.sweep([{"n": 1}, {"n": 2}])
        with Session(store.engine) as session:
            session.add_all([first, second])
            shared = first.custom_data
            second.custom_data = shared  # the same dict, now in two records
            session.flush()
            shared["shared"] = 1  # an in-place change, after the assignment was flushed
            assert first in session.dirty
            assert second in session.dirty
            session.commit()
        for n in (1, 2):
            again = store.retrieve({"n": n})
            assert again is not None
            assert again.custom_data["shared"] == 1


def test_loaded_custom_data_outliving_its_record_can_still_be_changed(
    db_url: str, tmp_path: Path
) -> None:
    with Store(_write, Tracked, results_dir=tmp_path / "r", db_url=db_url) as store:
        store.sweep([{"n": 1}])
        record = store.sweep([{"n": 1}])[0]
        data, gone = record.custom_data, weakref.ref(record)
        del record
        gc.collect()
        assert gone() is None  # the dict does not keep its record alive
        assert copy.deepcopy(data) == data
        assert pickle.loads(pickle.dumps(data)) == data
        data["later"] = 1  # tracks no record any more: nothing to mark, nothing raised
        assert data["later"] == 1
        again = store.retrieve({"n": 1})
        assert again is not None
        assert "later" not in again.custom_data


def test_a_user_load_listener_is_called_for_every_record_built(db_url: str, tmp_path: Path) -> None:
    with Store(_write, Listened, results_dir=tmp_path / "r", db_url=db_url) as store:
        LOADED.clear()
        records = _records_of_every_path(store)
        assert len(LOADED) == len(records)
        assert set(LOADED) == {1}


def test_a_listener_added_after_the_store_opened_is_called_too(db_url: str, tmp_path: Path) -> None:
    with Store(_write, Late, results_dir=tmp_path / "r", db_url=db_url) as store:
        store.sweep([{"n": 1}, {"n": 2}])
        assert len(store.sweep([{"n": 1}, {"n": 2}])) == 2  # the direct path, seen
        seen: list[int] = []

        def late(target: Late, _context: Any) -> None:
            seen.append(target.n)

        event.listen(Late, "load", late)
        try:
            store.sweep([{"n": 1}, {"n": 2}])
            store.retrieve({"n": 2})
        finally:
            event.remove(Late, "load", late)
        assert seen == [1, 2, 2]
        record = store.sweep([{"n": 3}])[0]
        assert type(record.custom_data) is CustomData


def _outcome(function: Any, text: Any) -> tuple[str, Any]:
    try:
        value = function(text)
    except Exception as exc:
        return type(exc).__name__, str(exc)
    # NaN is not equal to itself: compare the values by their JSON text.
    return "value", json.dumps(value, sort_keys=True)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
PADDING = st.sampled_from(["", " ", "\n", "\t ", "\ufeff", "x", "}", " 1"])


@given(value=JSON_VALUES, before=PADDING, after=PADDING)
def test_custom_data_is_read_exactly_as_json_loads_reads_it(
    value: Any, before: str, after: str
) -> None:
    text = before + json.dumps(value) + after
    assert _outcome(json_loads, text) == _outcome(json.loads, text)
    raw = text.encode("utf-8")
    assert _outcome(json_loads, raw) == _outcome(json.loads, raw)


@given(text=st.text(max_size=30))
def test_any_text_is_read_or_refused_as_json_loads_does(text: str) -> None:
    assert _outcome(json_loads, text) == _outcome(json.loads, text)


def test_bare_numbers_and_constants_read_as_json_loads_reads_them() -> None:
    for text in ("1", "1.5", "1e400", "-0.0", "NaN", "Infinity", "null", '"s"', "[]", "{}"):
        assert _outcome(json_loads, text) == _outcome(json.loads, text)
    assert math.isnan(json_loads("NaN"))


def _sqlalchemy_json_result() -> Any:
    """What SQLAlchemy reads a JSON column of entropic's SQLite engines with."""
    dialect = create_engine(sa.make_url("sqlite://")).dialect
    return sa.JSON().dialect_impl(dialect).result_processor(dialect, None)


@given(
    value=st.one_of(
        JSON_VALUES.map(json.dumps),
        JSON_VALUES.map(lambda v: json.dumps(v).encode("utf-8")),
        st.none(),
        st.integers(),
        st.floats(allow_nan=True),
        st.text(max_size=10),
        st.sampled_from(["{}", " {}", "{} ", "{ }", b"{}", "[]", "", b"", 1, 1.5]),
    )
)
def test_sqlite_json_columns_read_as_sqlalchemy_reads_them(value: Any) -> None:
    assert _outcome(sqlite_json_result, value) == _outcome(_sqlalchemy_json_result(), value)


class _Shown(str):
    """A name whose repr is code: a loop that wrote names into its source would run it."""

    def __repr__(self) -> str:
        return "__import__('sys').exit('ran')"


def test_a_loop_written_for_a_model_holds_no_name_of_it_and_stores_each_name_given() -> None:
    odd = ["a'b", 'c"d', "e\\nf\n", "g}h{", _Shown("shown")]
    names = ["id", "result_file", "custom_data", *odd]
    source = _maker_source(len(names), 2, processed=(3, 2), direct=True, by_id=True)
    assert not any(repr(name) in source or str(name) in source for name in odd)
    namespace: dict[str, Any] = {}
    exec(source, namespace)

    class Record:
        pass

    class State:
        def __init__(self, record: Record, manager: str) -> None:
            self.made = (record, manager)
            self.key: Any = None

    def loaded(data: Any, state: State) -> Any:
        return ("loaded", data, state)

    out: dict[str, Any] = {}
    rows = [("r1", "f1", '{"k": 1}', "x", 4, 5, 6, 7), ("r2", "f2", "null", "y", 4, 5, 6, 7)]
    keys = ("_held", *names)
    make = namespace["make"]
    make(rows, out, keys, Record, State, "manager", "ident", None, loaded, str.upper, json_loads)
    assert list(out) == ["r1", "r2"]
    first, second = out["r1"], out["r2"]
    state = vars(first)["_held"]
    assert state.made == (first, "manager")
    assert state.key == ("ident", ("r1",), None)
    assert vars(first) == {
        "_held": state,
        "id": "r1",
        "result_file": "f1",
        "custom_data": ("loaded", {"k": 1}, state),
        "a'b": "X",
        'c"d': 4,
        "e\\nf\n": 5,
        "g}h{": 6,
        "shown": 7,
    }
    # The keys are the very objects given, in the order given.
    assert all(a is b for a, b in zip(vars(first), keys, strict=True))
    assert vars(second)["custom_data"] is None  # null stays None, as the listener leaves it


def test_a_traceback_through_the_loop_shows_its_lines() -> None:
    shape = (4, 3, (2,), True, False)
    make = _compiled(_maker_source(*shape), f"<entropic records loop {shape}>")

    def refuse(value: Any) -> Any:
        raise ValueError(f"cannot read {value!r}")

    class Record:
        pass

    with pytest.raises(ValueError, match="cannot read") as raised:
        make(
            [("r1", "f1", "x", None)],
            [],
            ("s", "id", "result_file", "b", "custom_data"),
            Record,
            lambda record, manager: None,
            None,
            None,
            None,
            None,
            refuse,
        )
    assert "held[k2] = p0(a2)" in "".join(traceback.format_tb(raised.tb))

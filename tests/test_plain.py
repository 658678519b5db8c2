"""Points of plain values: checked and hashed in one call, never trusted beyond ``prepare``.

A sweep hashes the points whose every value its column takes as it is through
``hashing.hash_plain`` and validates only the others (and the points that run)
with ``Schema.prepare``. These tests hold it to that: the compiled test and its
Python reference agree value for value, and whenever ``hash_plain`` gives an id,
``prepare`` accepts the point unchanged and hashes it to the same id.
"""

from __future__ import annotations

import enum
import gc
import json
import math
import os
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.orm import mapped_column

from compiled import core as _core
from entropic import Base, Mapped, Store, _pyhash, hashing
from entropic._storage.codec import encode_line, encode_row
from entropic._storage.disk import is_file, lexists, present
from entropic._storage.schema import Schema


class Colour(enum.Enum):
    RED = "red"


class Everything(Base):
    __tablename__ = "plain_everything"

    n: Mapped[int]
    big: Mapped[int] = mapped_column(sa.BigInteger)
    small: Mapped[int | None] = mapped_column(sa.SmallInteger)
    x: Mapped[float]
    money: Mapped[Decimal | None] = mapped_column(sa.Numeric(10, 2))
    name: Mapped[str] = mapped_column(sa.String(8))
    text: Mapped[str | None]
    flag: Mapped[bool] = mapped_column(default=False)
    colour: Mapped[Colour | None]
    when: Mapped[datetime | None]


class Stamped(Base):
    """A required column with no plain kind: every point takes the full validation."""

    __tablename__ = "plain_stamped"

    n: Mapped[int]
    when: Mapped[datetime]


class Grid(Base):
    __tablename__ = "plain_grid"

    n: Mapped[int]
    dt: Mapped[float]
    method: Mapped[str]


NAMES = ["n", "big", "small", "x", "money", "name", "text", "flag", "colour", "when"]

values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([2**15, -(2**15) - 1, 2**31 - 1, 2**31, -(2**31) - 1, 2**63 - 1, 2**63]),
    st.floats(),
    st.decimals(allow_nan=False, allow_infinity=False, places=2),
    st.text(max_size=10),
    st.sampled_from(["", "a\0b", "\ud800", "é", "abcdefgh", "abcdefghi", "red"]),
    st.sampled_from([Colour.RED, datetime(2024, 5, 1), [1, 2], {"a": 1}, b"x"]),
    st.builds(lambda text: type("Sub", (str,), {})(text), st.text(max_size=3)),
)
keys = st.one_of(st.sampled_from(NAMES), st.sampled_from(["id", "custom_data", "other", 1]))
points = st.one_of(
    st.fixed_dictionaries(
        {"n": st.integers(-10, 10), "big": st.integers(), "x": st.floats(), "name": st.text()},
        optional={name: values for name in NAMES if name not in ("n", "big", "x", "name")},
    ),
    st.dictionaries(keys, values, max_size=12),
)


def _prepared(schema: Schema, params: dict[Any, Any]) -> tuple[str, dict[str, Any]] | None:
    """(id, column values) of a point ``prepare`` accepts, else None."""
    try:
        point = schema.point(params, {})
    except (TypeError, ValueError, LookupError):
        return None
    return point.id, point.values


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
@given(params=points)
def test_a_plain_id_is_only_given_to_points_prepare_takes_unchanged(
    dialect: str, params: dict[Any, Any]
) -> None:
    schema = Schema(Everything, dialect)
    [run_id] = schema.plain_ids([params])
    if run_id is None:
        return
    prepared = _prepared(schema, params)
    assert prepared is not None, params
    assert prepared[0] == run_id
    # The values go to the database exactly as given: no conversion was skipped.
    assert prepared[1].keys() == params.keys()
    assert all(prepared[1][name] is value for name, value in params.items())


@pytest.mark.skipif(_core is None, reason="entropic._core is not built (pure run)")
@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
@given(batch=st.lists(points, max_size=8))
def test_the_compiled_plain_test_matches_the_reference(
    dialect: str, batch: list[dict[Any, Any]]
) -> None:
    spec = Schema(Everything, dialect).plain
    assert spec is not None
    assert _core.hash_plain(batch, spec) == _pyhash.hash_plain(batch, spec)


@given(n=st.integers(), dt=st.floats(allow_nan=False), method=st.text())
def test_plain_ids_are_the_hash_of_the_params(n: int, dt: float, method: str) -> None:
    schema = Schema(Grid, "sqlite")
    params = {"n": n, "dt": dt, "method": method}
    [run_id] = schema.plain_ids([params])
    if run_id is not None:
        assert run_id == hashing.hash_params(params)


def test_a_grid_of_plain_values_is_hashed_without_prepare() -> None:
    # The fast path must engage for the points users sweep, or it silently costs nothing.
    schema = Schema(Grid, "sqlite")
    grid = [{"n": i, "dt": 0.1 * i, "method": f"m{i}"} for i in range(50)]
    assert schema.plain_ids(grid) == hashing.hash_many(grid)


@pytest.mark.parametrize(
    ("params", "why"),
    [
        ({"n": True, "dt": 0.1, "method": "a"}, "a bool in an int column"),
        ({"n": 2**63, "dt": 0.1, "method": "a"}, "an int beyond SQLite's 64 bits"),
        ({"n": 1, "dt": math.nan, "method": "a"}, "NaN"),
        ({"n": 1, "dt": 1, "method": "a"}, "an int in a float column (prepare converts it)"),
        ({"n": 1, "dt": 0.1, "method": "é"}, "non-ASCII text"),
        ({"n": 1, "dt": 0.1, "method": "a\0"}, "a NUL"),
        ({"n": 1, "dt": 0.1}, "a required column missing"),
        ({"n": 1, "dt": 0.1, "method": "a", "id": "x"}, "a reserved key"),
        ({"n": 1, "dt": 0.1, "method": "a", "other": 1}, "an unknown key"),
        ({"n": 1, "dt": 0.1, "method": None}, "None in a NOT NULL column"),
    ],
)
def test_points_that_need_a_look_get_none(params: dict[str, Any], why: str) -> None:
    assert Schema(Grid, "sqlite").plain_ids([params]) == [None], why


def test_a_required_column_without_a_plain_kind_sends_every_point_to_prepare() -> None:
    schema = Schema(Stamped, "sqlite")
    assert schema.plain is None
    assert schema.plain_ids([{"n": 1, "when": datetime(2024, 5, 1)}]) == [None]


def _write(params: dict[str, Any]) -> None:
    Path(params["result_file"]).write_text("x")


def test_a_bad_point_among_plain_ones_stops_the_sweep_before_anything_runs(
    tmp_path: Path,
) -> None:
    ran: list[int] = []

    def runner(params: dict[str, Any]) -> None:
        ran.append(params["n"])
        _write(params)

    with Store(runner, Grid, results_dir=tmp_path / "r", db_url=f"sqlite:///{tmp_path}/s.db") as s:
        good = [{"n": i, "dt": 0.5, "method": "a"} for i in range(20)]
        s.sweep(good[:10])
        ran.clear()
        with pytest.raises(TypeError, match=r"params\['n'\]"):
            s.sweep([*good, {"n": "three", "dt": 0.5, "method": "a"}])
        assert ran == []
        assert s.count() == 10
        # The cached points are hits again, the others run: plain or not, the same ids.
        records = s.sweep([*good, {"n": 20.0, "dt": 0.5, "method": "a"}])
        assert sorted(ran) == [*range(10, 20), 20]
        assert [r.n for r in records] == [*range(20), 20]


def test_a_sweep_leaves_a_frozen_heap_frozen(tmp_path: Path) -> None:
    # Records built during a sweep skip the young generations (a freeze and unfreeze),
    # but never when the program has frozen objects itself: that would thaw them.
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        url = f"sqlite:///{tmp_path}/s.db"
        with Store(_write, Grid, results_dir=tmp_path / "r", db_url=url) as s:
            s.sweep([{"n": i, "dt": 0.5, "method": "a"} for i in range(30)])
            s.sweep([{"n": i, "dt": 0.5, "method": "a"} for i in range(30)])
        # Frozen objects freed meanwhile leave the count; a thaw would empty it.
        assert gc.get_freeze_count() > frozen // 2
    finally:
        gc.unfreeze()


def test_present_lexists_and_is_file_are_os_path_s(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_text("x")
    (tmp_path / "link").symlink_to(target)
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    (tmp_path / "d").mkdir()
    names = ("f", "link", "dangling", "d", "gone", "f/x", "dangling/x")
    paths = [str(tmp_path / name) for name in names] + [
        f"{tmp_path}/f\0",
        "",
    ]
    assert [present(p) for p in paths] == [os.path.exists(p) for p in paths]
    # The look for a leftover before a run, and the look at the result after it.
    assert [lexists(p) for p in paths] == [os.path.lexists(p) for p in paths]
    assert [is_file(p) for p in paths] == [os.path.isfile(p) for p in paths]


# --- json_dumps: the text json.dumps gives, for journal lines and JSON columns -------------


class Level(enum.IntEnum):
    LOW = 1


json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(),
    st.sampled_from(["\ud800", "é", '"\\\n\t\x00\x7f', Level.LOW, 2**64, -(2**63)]),
)
json_data = st.recursive(
    json_leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(st.text(max_size=4), inner, max_size=4),
        st.dictionaries(st.one_of(st.integers(), st.text(max_size=2)), inner, max_size=3),
    ),
    max_leaves=16,
)


def _json_outcome(dumps: Any, value: Any) -> tuple[str, str]:
    try:
        return "text", dumps(value)
    except (TypeError, ValueError) as exc:
        return type(exc).__name__, str(exc)


@pytest.mark.parametrize("compact", [True, False])
@given(value=json_data)
def test_json_dumps_writes_what_json_dumps_writes_or_leaves_it_to_json(
    compact: bool, value: Any
) -> None:
    separators = (",", ":") if compact else None

    def reference(item: Any) -> str:
        return json.dumps(item, separators=separators)

    def ours(item: Any) -> str:
        text = hashing.json_dumps(item, compact)
        return reference(item) if text is None else text

    assert _json_outcome(ours, value) == _json_outcome(reference, value)
    if _core is not None:
        text = _core.json_dumps(value, compact)
        assert text is None or text == reference(value)
    assert _json_outcome(lambda item: _pyhash.json_dumps(item, compact), value) == _json_outcome(
        reference, value
    )


def test_json_dumps_writes_plain_rows_itself() -> None:
    # The journal's fast path must engage for ordinary rows, not fall back every time.
    if _core is None:
        pytest.skip("entropic._core is not built (pure run)")
    row = {"row": {"n": 1, "dt": 0.5, "s": "é", "c": {"x": [1, None, True]}}, "types": {}}
    assert _core.json_dumps(row, True) == json.dumps(row, separators=(",", ":"))
    assert _core.json_dumps(row, False) == json.dumps(row)
    for odd in (2**64, {1: 2}, "\ud800", Level.LOW, _deep(300)):
        assert _core.json_dumps(odd, True) is None


def _deep(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


def test_a_self_containing_value_is_refused_as_json_refuses_it() -> None:
    loop: list[Any] = []
    loop.append(loop)
    # The compiled core leaves it to json, which refuses it: the row is not journalled.
    assert encode_line({"id": "0123456789abcdef", "result_file": "f", "custom_data": loop}) is None


@given(
    row=st.fixed_dictionaries(
        {"id": st.just("0123456789abcdef"), "result_file": st.text(), "custom_data": json_data},
        optional={"n": json_leaves, "when": st.datetimes(), "amount": st.decimals(places=2)},
    )
)
def test_journal_lines_are_what_the_json_module_writes(row: dict[str, Any]) -> None:
    plain, types = encode_row(row)
    try:
        expected: bytes | None = (
            json.dumps({"row": plain, "types": types}, separators=(",", ":")) + "\n"
        ).encode("utf-8", "surrogatepass")
    except (TypeError, ValueError):
        expected = None
    assert encode_line(row) == expected

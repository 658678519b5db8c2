"""Store.find, Store.count and Store.to_pandas on every database the Store supports."""

from __future__ import annotations

import builtins
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import JSON, String
from sqlalchemy.orm import Session

from entropic import Base, Mapped, Store, expand_grid, mapped_column


class Orbit(Base):
    __tablename__ = "orbit"

    K: Mapped[float]
    n: Mapped[int]
    method: Mapped[str] = mapped_column(String(20))
    stiff: Mapped[bool | None]


def write(params: dict[str, Any]) -> None:
    Path(params["result_file"]).write_text(str(params["K"]))
    params["custom_data"]["stats"] = {"mean": params["K"] / 2, "ok": True}


@pytest.fixture
def store(db_url: str, tmp_path: Path) -> Iterator[Store[Orbit]]:
    with Store(write, Orbit, tmp_path / "results", ".txt", db_url) as store:
        store.sweep(
            expand_grid(
                {"K": [100.0, 0.3, 2.5], "n": [1, 2], "method": ["rk4", "euler"], "stiff": [False]}
            )
        )
        yield store


def test_find_is_a_partial_match(store: Store[Orbit]) -> None:
    found = store.find(K=100.0)
    assert len(found) == 4
    assert {(r.n, r.method) for r in found} == {(1, "rk4"), (1, "euler"), (2, "rk4"), (2, "euler")}
    assert all(r.K == 100.0 for r in found)
    assert store.count(K=100.0) == 4
    assert store.count(K=100.0, n=2, method="rk4") == 1
    assert len(store.find()) == store.count() == 12


def test_find_returns_detached_loaded_records(store: Store[Orbit], db_url: str) -> None:
    record = store.find(K=2.5, n=1, method="euler")[0]
    assert Session.object_session(record) is None
    # Every attribute is loaded: reading them needs no session.
    assert record.custom_data["stats"] == {"mean": 1.25, "ok": True}
    assert Path(record.result_file).read_text() == "2.5"
    assert record.id == store.retrieve({"K": 2.5, "n": 1, "method": "euler", "stiff": False}).id  # type: ignore[union-attr]


def test_floats_match_as_ids_round_them(store: Store[Orbit]) -> None:
    assert store.count(K=0.1 + 0.2) == 4
    assert store.count(K=0.3 + 1e-14) == 4
    assert store.count(K=0.3 + 1e-11) == 0
    assert store.count(K=100) == 4  # an int for a Float column


def test_unrounded_stored_floats_are_found(store: Store[Orbit]) -> None:
    store.run_or_retrieve({"K": 7.000000000000001, "n": 9, "method": "rk4", "stiff": None})
    assert [r.K for r in store.find(K=7.0)] == [7.000000000000001]
    assert store.count(stiff=None) == 1
    assert store.count(n=9.0) == 1


def test_unknown_column_names_them_and_the_columns(store: Store[Orbit]) -> None:
    with pytest.raises(ValueError, match=r"'k', 'nope'.*K, n, method, stiff, id, result_file"):
        store.find(k=1.0, nope=2)
    with pytest.raises(ValueError, match="created_at and custom_data"):
        store.count(custom_data={})


def test_wrong_value_type_is_a_clear_error(store: Store[Orbit]) -> None:
    with pytest.raises(
        TypeError, match=r"filter n = '2' is a str.*Orbit.n is Integer; pass an int"
    ):
        store.find(n="2")
    with pytest.raises(TypeError, match="pass a number"):
        store.count(K="big")
    with pytest.raises(ValueError, match="finite"):
        store.count(K=float("nan"))


def test_find_by_id_and_result_file(store: Store[Orbit]) -> None:
    record = store.find(K=0.3, n=2, method="rk4")[0]
    assert store.find(id=record.id)[0].result_file == record.result_file
    assert store.count(result_file=record.result_file) == 1


def test_to_pandas_flattens_custom_data(store: Store[Orbit]) -> None:
    frame = store.to_pandas(method="rk4")
    assert len(frame) == 6
    assert list(frame.columns[:7]) == [
        "K",
        "n",
        "method",
        "stiff",
        "id",
        "result_file",
        "created_at",
    ]
    assert {"custom_data.elapsed_seconds", "custom_data.stats.mean", "custom_data.stats.ok"} <= set(
        frame.columns
    )
    assert sorted(frame["custom_data.stats.mean"]) == [0.15, 0.15, 1.25, 1.25, 50.0, 50.0]
    assert set(frame["id"]) == {r.id for r in store.find(method="rk4")}


def test_to_pandas_of_nothing_has_the_columns(store: Store[Orbit]) -> None:
    frame = store.to_pandas(K=-1.0)
    assert frame.empty
    assert list(frame.columns) == ["K", "n", "method", "stiff", "id", "result_file", "created_at"]


def test_to_pandas_without_pandas_says_how_to_install(
    store: Store[Orbit], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_import = builtins.__import__

    def no_pandas(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "pandas" or name.startswith("pandas."):
            raise ImportError("No module named 'pandas'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pandas)
    with pytest.raises(ImportError, match="pip install pandas"):
        store.to_pandas()


class Configured(Base):
    __tablename__ = "configured"

    n: Mapped[int]
    cfg: Mapped[dict[str, Any] | None] = mapped_column(JSON)


def test_a_json_column_matches_only_none(db_url: str, tmp_path: Path) -> None:
    with Store(write_n, Configured, tmp_path / "results", ".txt", db_url) as store:
        store.sweep([{"n": 1, "cfg": {"a": 1}}, {"n": 2, "cfg": None}])
        assert [r.n for r in store.find(cfg=None)] == [2]
        with pytest.raises(ValueError, match="JSON equality differs between databases"):
            store.find(cfg={"a": 1})
        with pytest.raises(ValueError, match="SQLAlchemy"):
            store.count(cfg=[1])


def write_n(params: dict[str, Any]) -> None:
    Path(params["result_file"]).write_text(str(params["n"]))

"""Base: the reserved columns, partial updates, and refusing a redefined reserved column."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import sqlalchemy.orm
from sqlalchemy.ext.mutable import MutableDict
from sqlalchemy.orm import Session

import entropic
from entropic import Base, Mapped, ReservedColumnError, Store, mapped_column
from entropic.models import RESERVED_COLUMNS


class Patched(Base):
    __tablename__ = "models_patched"

    n: Mapped[int]
    label: Mapped[str | None]


def _write(params: dict[str, Any]) -> None:
    Path(params["result_file"]).write_text("x")


def test_mapped_and_mapped_column_are_reexported() -> None:
    assert entropic.Mapped is sqlalchemy.orm.Mapped
    assert entropic.mapped_column is sqlalchemy.orm.mapped_column
    assert issubclass(Base, sqlalchemy.orm.DeclarativeBase)


def test_reserved_columns_are_inherited_with_their_types() -> None:
    table = Patched.__table__
    assert [c.name for c in table.columns][:4] == list(RESERVED_COLUMNS)
    assert [c.name for c in table.primary_key.columns] == ["id"]
    assert isinstance(table.c.id.type, sa.String)
    assert isinstance(table.c.result_file.type, sa.String)
    assert isinstance(table.c.created_at.type, sa.DateTime)
    assert not table.c.created_at.type.timezone
    assert isinstance(table.c.custom_data.type, sa.JSON)
    assert not table.c.custom_data.nullable
    assert not table.c.result_file.nullable


def test_insert_sets_naive_utc_created_at_and_empty_custom_data(db_url: str) -> None:
    engine = sa.create_engine(db_url)
    try:
        Patched.__table__.create(engine)
        before = datetime.now(timezone.utc).replace(tzinfo=None)
        with Session(engine) as session:
            session.add(Patched(id="a", result_file="/x", n=1))
            session.commit()
        with Session(engine) as session:
            row = session.get(Patched, "a")
            assert row is not None
            assert row.custom_data == {}
            assert row.created_at.tzinfo is None
            assert before - timedelta(seconds=1) <= row.created_at <= before + timedelta(seconds=5)
            # custom_data is a mutable JSON dict: in-place changes are saved.
            assert isinstance(row.custom_data, MutableDict)
            row.custom_data["k"] = 1
            session.commit()
        with Session(engine) as session:
            row = session.get(Patched, "a")
            assert row is not None
            assert row.custom_data == {"k": 1}
    finally:
        engine.dispose()


def test_apply_patch_skips_none_for_columns_and_patches_custom_data() -> None:
    row = Patched(id="a", result_file="/x", n=1, label="old", custom_data={"a": 1, "b": 2})
    row.apply_patch({"n": 5, "label": None, "custom_data": {"a": None, "c": 3}})
    assert row.n == 5
    assert row.label == "old"  # a None value is a partial update: the column is kept
    assert row.custom_data == {"b": 2, "c": 3}


def test_custom_data_patch_rules() -> None:
    row = Patched(id="a", result_file="/x", n=1, custom_data={"a": 1, "b": 2})
    row._apply_custom_data_patch({"b": 20, "c": 3})
    assert row.custom_data == {"a": 1, "b": 20, "c": 3}
    row._apply_custom_data_patch({"a": None, "missing": None})
    assert row.custom_data == {"b": 20, "c": 3}
    row._apply_custom_data_patch({})
    assert row.custom_data == {}
    fresh = Patched(id="b", result_file="/x", n=1)  # before any flush: no default yet
    fresh._apply_custom_data_patch({"x": 1})
    assert fresh.custom_data == {"x": 1}
    with pytest.raises(TypeError, match="must be a dict"):
        row._apply_custom_data_patch([("a", 1)])  # type: ignore[arg-type]


def test_apply_patch_rejects_unknown_keys_before_changing_anything() -> None:
    row = Patched(id="a", result_file="/x", n=1)
    with pytest.raises(ValueError, match=r"nope.*columns are .*label") as info:
        row.apply_patch({"n": 9, "nope": 1})
    assert "models_patched" not in str(info.value)
    assert row.n == 1


def test_apply_patch_changes_are_saved(db_url: str) -> None:
    engine = sa.create_engine(db_url)
    try:
        Patched.__table__.create(engine)
        with Session(engine) as session:
            session.add(Patched(id="a", result_file="/x", n=1, custom_data={"k": 1}))
            session.commit()
        with Session(engine) as session:
            row = session.get(Patched, "a")
            assert row is not None
            row.apply_patch({"n": 2, "custom_data": {"k": None, "j": 2}})
            session.commit()
        with Session(engine) as session:
            row = session.get(Patched, "a")
            assert row is not None
            assert (row.n, row.custom_data) == (2, {"j": 2})
    finally:
        engine.dispose()


@pytest.mark.parametrize("name", RESERVED_COLUMNS)
def test_redefining_a_reserved_column_fails_at_class_definition(name: str) -> None:
    namespace: dict[str, Any] = {
        "__tablename__": f"models_bad_{name}",
        "__annotations__": {name: Mapped[str]},
    }
    with pytest.raises(ReservedColumnError, match=rf"redefines {name}\b") as info:
        type(f"Bad_{name}", (Base,), namespace)
    assert isinstance(info.value, TypeError)


def test_reserved_column_name_under_another_attribute_is_refused() -> None:
    with pytest.raises(ReservedColumnError, match="redefines created_at"):

        class Sneaky(Base):
            __tablename__ = "models_sneaky"

            when: Mapped[datetime] = mapped_column("created_at")


def test_store_refuses_a_model_with_an_extra_primary_key(tmp_path: Path) -> None:
    class TwoKeys(Base):
        __tablename__ = "models_two_keys"

        n: Mapped[int] = mapped_column(primary_key=True)

    with pytest.raises(ReservedColumnError, match="id is the only primary key"):
        Store(_write, TwoKeys, results_dir=tmp_path / "r", db_url="sqlite://")
    assert not (tmp_path / "r").exists()


def test_store_refuses_a_class_that_is_not_an_entropic_model(tmp_path: Path) -> None:
    class Plain(sqlalchemy.orm.DeclarativeBase):
        pass

    with pytest.raises(TypeError, match=r"subclassing entropic\.Base"):
        Store(_write, Plain, results_dir=tmp_path / "r", db_url="sqlite://")  # type: ignore[type-var]
    assert not (tmp_path / "r").exists()


def test_custom_data_of_swept_records_tracks_changes_in_a_session(
    db_url: str, tmp_path: Path
) -> None:
    """Records a sweep builds hold a change-tracking custom_data, also when one dict is
    given to two records, and after pickling."""
    import pickle

    with Store(_write, Patched, results_dir=tmp_path / "r", db_url=db_url) as store:
        first, second = store.sweep([{"n": 1}, {"n": 2}])
        assert isinstance(first.custom_data, MutableDict)
        with Session(store.engine, expire_on_commit=False) as session:
            first = session.merge(first)
            first.custom_data["k"] = 1
            session.commit()
            second = session.merge(second)
            shared = first.custom_data
            second.custom_data = shared  # the same dict in two records
            session.commit()
            shared["both"] = True
            session.commit()
            copy = pickle.loads(pickle.dumps(shared))
            assert copy == shared
        by_n = {record.n: record for record in store.sweep([{"n": 1}, {"n": 2}])}
        assert by_n[1].custom_data["k"] == 1
        assert by_n[1].custom_data["both"] is True
        assert by_n[2].custom_data["both"] is True
        # A record outside any Session keeps changes to itself, as any detached record.
        by_n[1].custom_data["local"] = 2
        again = store.retrieve({"n": 1})
        assert again is not None
        assert again.custom_data.get("local") is None

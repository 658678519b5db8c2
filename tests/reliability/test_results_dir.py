"""Two models, one results_dir: the folder belongs to the first table, the second is refused.

The same params give the same ids in every model, so two tables sharing a
results_dir would overwrite each other's files. ``.entropic/store.json`` binds
the folder to its table: a Store of another model there raises
``ResultsDirError`` naming both tables, before anything runs or is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from entropic import Base, Mapped, ResultsDirError, Store, hash_params

from ._support import checked_runner, read_checked, tree


class ModelA(Base):
    __tablename__ = "table_a"

    n: Mapped[int]


class ModelB(Base):
    __tablename__ = "table_b"

    n: Mapped[int]


class Counted:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, params: dict[str, Any]) -> None:
        self.calls += 1
        checked_runner(params)


def _tables(db_url: str) -> set[str]:
    engine = sa.create_engine(db_url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


@pytest.mark.parametrize("b_database", ["same", "other"])
def test_a_second_model_on_a_bound_results_dir_is_refused_before_anything_runs(
    shared_db_url: str, tmp_path: Path, b_database: str
) -> None:
    results = tmp_path / "results"
    b_url = shared_db_url if b_database == "same" else f"sqlite:///{tmp_path / 'b.sqlite3'}"
    with Store(
        checked_runner, ModelA, results_dir=results, file_suffix=".txt", db_url=shared_db_url
    ) as a:
        record = a.run({"n": 1})
    before = tree(results)
    runner = Counted()
    for suffix in (".txt", ".h5"):  # whatever the suffix: the folder is A's
        with pytest.raises(ResultsDirError) as refused:
            Store(runner, ModelB, results_dir=results, file_suffix=suffix, db_url=b_url)
        message = str(refused.value)
        assert "'table_a'" in message, message
        assert "'table_b'" in message, message
        assert "its own results_dir" in message
    assert runner.calls == 0
    assert tree(results) == before  # nothing written, moved or quarantined
    assert "table_b" not in _tables(b_url)  # refused before its table was made
    # A keeps its folder, its row and its file.
    with Store(
        checked_runner, ModelA, results_dir=results, file_suffix=".txt", db_url=shared_db_url
    ) as a:
        again = a.run_or_retrieve({"n": 1})
        assert again.id == record.id == hash_params({"n": 1})
        assert read_checked(again.result_file) is not None
    # B is welcome in a folder of its own.
    with Store(
        runner, ModelB, results_dir=tmp_path / "results-b", file_suffix=".txt", db_url=b_url
    ) as b:
        assert b.run_or_retrieve({"n": 1}).id == record.id
    assert runner.calls == 1

"""A row never vouches for a missing file: a cached point whose file is gone runs again.

``run_or_retrieve`` and ``sweep`` return records whose files exist. When a
result file was removed behind the store's back, the next call runs that point
again (and only that one); ``retrieve`` is a plain lookup and still returns the
row as it is, as docs/store.md says.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from entropic import Store, hash_params

from ._support import Rel, read_checked, write_checked

POINTS = [{"n": n} for n in range(5)]


class Counted:
    def __init__(self) -> None:
        self.ran: list[str] = []

    def __call__(self, params: dict[str, Any]) -> None:
        self.ran.append(params["id"])
        write_checked(params["result_file"], f"{params['id']} n={params['n']} #{len(self.ran)}")


def _open(runner: Any, tmp_path: Path, db_url: str) -> Store[Rel]:
    return Store(runner, Rel, results_dir=tmp_path / "results", file_suffix=".txt", db_url=db_url)


def test_run_or_retrieve_runs_a_point_whose_file_is_gone(db_url: str, tmp_path: Path) -> None:
    runner = Counted()
    with _open(runner, tmp_path, db_url) as store:
        first = store.run_or_retrieve(POINTS[0])
        assert store.run_or_retrieve(POINTS[0]).id == first.id
        assert len(runner.ran) == 1  # a hit while the file is there
        Path(first.result_file).unlink()
        assert store.retrieve(POINTS[0]) is not None  # a plain lookup: the row as it is
        again = store.run_or_retrieve(POINTS[0])
        assert runner.ran == [first.id, first.id]
        assert read_checked(again.result_file) == f"{first.id} n=0 #2"
        assert again.created_at > first.created_at


def test_sweep_runs_exactly_the_points_whose_files_are_gone(db_url: str, tmp_path: Path) -> None:
    runner = Counted()
    with _open(runner, tmp_path, db_url) as store:
        records = store.sweep(POINTS)
        lost = [records[1], records[3]]
        for record in lost:
            Path(record.result_file).unlink()
        runner.ran.clear()
        again = store.sweep(POINTS)
        assert sorted(runner.ran) == sorted(r.id for r in lost)
        assert [r.id for r in again] == [hash_params(p) for p in POINTS]
        assert all(read_checked(r.result_file) is not None for r in again)
        runner.ran.clear()
        store.sweep(POINTS)
        assert runner.ran == []  # every file is back: all hits

"""Failure isolation: a failing point does not stop a sweep, and the store remembers it."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import entropic.sweep
from entropic import Base, Failure, Mapped, Store, SweepError, hash_params
from entropic._storage.tables import CLAIMS


class Flaky(Base):
    __tablename__ = "sweep_flaky"

    k: Mapped[int]


class Other(Base):
    __tablename__ = "sweep_flaky_other"

    k: Mapped[int]


class Diverged(Exception):
    """A runner's own exception type."""


class Runner:
    """Fails on the ks in ``bad``; records every call."""

    def __init__(self) -> None:
        self.bad: set[int] = set()
        self.calls: list[int] = []

    def __call__(self, params: dict[str, Any]) -> None:
        self.calls.append(params["k"])
        if params["k"] in self.bad:
            Path(params["result_file"]).write_text("partial")
            raise Diverged(f"k={params['k']} diverged")
        if params["k"] == -1:
            return  # returns without writing its file
        Path(params["result_file"]).write_text(str(params["k"]))


@pytest.fixture
def store(db_url: str, tmp_path: Path) -> Iterator[Store[Flaky]]:
    with Store(Runner(), Flaky, results_dir=tmp_path / "r", file_suffix=".txt", db_url=db_url) as s:
        yield s


def _runner(store: Store[Flaky]) -> Runner:
    runner = store.runner
    assert isinstance(runner, Runner)
    return runner


def _pts(*ks: int) -> list[dict[str, Any]]:
    return [{"k": k} for k in ks]


def test_failures_do_not_stop_the_sweep(store: Store[Flaky]) -> None:
    _runner(store).bad = {2, 5}
    with pytest.raises(SweepError) as info:
        store.sweep(_pts(*range(8)))
    error = info.value
    assert isinstance(error, RuntimeError)
    assert _runner(store).calls == list(range(8))
    assert [params["k"] for params, _ in error.failures] == [2, 5]
    assert all(isinstance(exc, Diverged) for _, exc in error.failures)
    assert [r.k for r in error.records] == [0, 1, 3, 4, 6, 7]
    message = str(error)
    assert "2 of 8 distinct points failed" in message
    assert "k=2 diverged" in message
    assert "Traceback" in message
    assert "Diverged" in message
    # No row and no partial file for the failed points.
    for k in (2, 5):
        assert store.retrieve({"k": k}) is None
        assert not (store.results_dir / f"{hash_params({'k': k})}.txt").exists()


def test_resweep_runs_only_what_failed_and_failures_are_cleared(store: Store[Flaky]) -> None:
    runner = _runner(store)
    runner.bad = {1, 3}
    with pytest.raises(SweepError):
        store.sweep(_pts(0, 1, 2, 3))
    failures = store.failures()
    assert {f.id for f in failures} == {hash_params({"k": 1}), hash_params({"k": 3})}
    first = next(f for f in failures if f.params == {"k": 1})
    assert isinstance(first, Failure)
    assert first.exc_type.endswith("Diverged")
    assert first.message == "k=1 diverged"
    assert "Traceback" in first.traceback
    assert "diverged" in first.traceback
    assert first.host
    assert first.pid > 0
    assert first.elapsed_seconds >= 0
    assert [f.failed_at for f in failures] == sorted((f.failed_at for f in failures), reverse=True)

    runner.calls.clear()
    runner.bad = {3}
    with pytest.raises(SweepError) as info:
        store.sweep(_pts(0, 1, 2, 3))
    assert sorted(runner.calls) == [1, 3]
    assert [r.k for r in info.value.records] == [0, 1, 2]
    assert [f.params for f in store.failures()] == [{"k": 3}]

    runner.calls.clear()
    runner.bad = set()
    assert [r.k for r in store.sweep(_pts(0, 1, 2, 3))] == [0, 1, 2, 3]
    assert runner.calls == [3]
    assert store.failures() == []


def test_a_missing_result_file_is_a_failure_too(store: Store[Flaky]) -> None:
    with pytest.raises(SweepError, match="MissingResultError") as info:
        store.sweep(_pts(0, -1, 1))
    assert [r.k for r in info.value.records] == [0, 1]
    assert [f.exc_type for f in store.failures()] == ["entropic.errors.MissingResultError"]


def test_failures_are_per_model(db_url: str, tmp_path: Path) -> None:
    runner = Runner()
    runner.bad = {0}
    with Store(runner, Flaky, results_dir=tmp_path / "a", db_url=db_url) as first:
        with pytest.raises(SweepError):
            first.sweep(_pts(0))
        assert len(first.failures()) == 1
        second = Store(runner, Other, results_dir=tmp_path / "b", db_url=db_url)
        with second:
            with pytest.raises(SweepError):
                second.sweep(_pts(0))
            assert [f.params for f in second.failures()] == [{"k": 0}]
            assert len(first.failures()) == 1


class Interrupting(Runner):
    def __call__(self, params: dict[str, Any]) -> None:
        if params["k"] == 3:
            raise KeyboardInterrupt
        super().__call__(params)


def test_keyboard_interrupt_stops_the_sweep_after_persisting_what_finished(
    db_url: str, tmp_path: Path
) -> None:
    runner = Interrupting()
    with Store(runner, Flaky, results_dir=tmp_path / "r", db_url=db_url) as store:
        with pytest.raises(KeyboardInterrupt):
            store.sweep(_pts(0, 1, 2, 3, 4))
        assert runner.calls == [0, 1, 2]
        assert [store.retrieve({"k": k}) is not None for k in range(5)] == [
            True,
            True,
            True,
            False,
            False,
        ]
        assert store.failures() == []
        with store.engine.connect() as conn:
            assert conn.scalar(sa.select(sa.func.count()).select_from(CLAIMS)) == 0
        assert list((store.results_dir / ".entropic" / "journal").iterdir()) == []


def test_batches_commit_every_n_runs(store: Store[Flaky], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(entropic.sweep, "BATCH_RUNS", 4)
    commits: list[int] = []
    sa.event.listen(store.engine, "commit", lambda conn: commits.append(1))
    store.sweep(_pts(*range(10)))
    # Claims and lookups aside, three batches: 4 + 4 + 2 runs.
    assert len(commits) >= 3
    assert len(list(store.results_dir.glob("*.txt"))) == 10


def test_the_summary_line_counts_failures(
    store: Store[Flaky], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="entropic")
    _runner(store).bad = {1}
    with pytest.raises(SweepError):
        store.sweep(_pts(0, 1, 1))
    summaries = [r.getMessage() for r in caplog.records if "sweep of" in r.getMessage()]
    assert len(summaries) == 1
    assert "3 points (2 distinct): 0 cached, 1 ran, 1 failed" in summaries[0]

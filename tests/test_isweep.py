"""Store.isweep: sweep's records as a stream, a chunk of the input at a time."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import entropic.sweep
from entropic import Base, Mapped, ParamsTypeError, Store, SweepError
from entropic._storage.tables import CLAIMS

CHUNK = 5


class Streamed(Base):
    __tablename__ = "streamed"

    a: Mapped[int]


class Runner:
    def __init__(self) -> None:
        self.ran: list[int] = []
        self.fail: set[int] = set()

    def __call__(self, params: dict[str, Any]) -> None:
        if params["a"] in self.fail:
            raise RuntimeError(f"no {params['a']}")
        self.ran.append(params["a"])
        Path(params["result_file"]).write_text(str(params["a"]))


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(entropic.sweep, "INPUT_CHUNK", CHUNK)


@pytest.fixture
def store(db_url: str, tmp_path: Path) -> Iterator[Store[Streamed]]:
    with Store(Runner(), Streamed, results_dir=tmp_path / "r", db_url=db_url) as store:
        yield store


def _runner(store: Store[Streamed]) -> Runner:
    runner = store.runner
    assert isinstance(runner, Runner)
    return runner


def _rows(store: Store[Streamed]) -> int:
    with store.engine.connect() as conn:
        return int(conn.scalar(sa.select(sa.func.count()).select_from(Streamed.__table__)) or 0)


def _claims(store: Store[Streamed]) -> int:
    with store.engine.connect() as conn:
        return int(conn.scalar(sa.select(sa.func.count()).select_from(CLAIMS)) or 0)


def test_yields_what_sweep_returns_in_input_order_duplicates_once(store: Store[Streamed]) -> None:
    values = [3, 1, 3, 7, 1, 2, 9, 3, 11, 2, 4, 7, 0, 5]  # duplicates across chunks
    store.sweep([{"a": 1}, {"a": 9}])  # some cached
    streamed = [record.a for record in store.isweep({"a": a} for a in values)]
    assert streamed == list(dict.fromkeys(values))
    assert sorted(_runner(store).ran) == sorted(set(values))  # each ran once, 1 and 9 before
    assert [r.id for r in store.sweep([{"a": a} for a in values])] == [
        r.id for r in store.isweep([{"a": a} for a in values])
    ]


def test_records_come_before_the_input_is_read(store: Store[Streamed]) -> None:
    read: list[int] = []

    def points() -> Iterator[dict[str, Any]]:
        for a in range(4 * CHUNK):
            read.append(a)
            yield {"a": a}

    stream = store.isweep(points())
    first = next(stream)
    assert first.a == 0
    assert len(read) == CHUNK  # one chunk read, run and persisted, nothing beyond
    assert _rows(store) == CHUNK
    assert [r.a for r in stream] == list(range(1, 4 * CHUNK))


def test_failures_yield_nothing_and_raise_after_the_last_record(store: Store[Streamed]) -> None:
    _runner(store).fail = {2, 8}
    got: list[int] = []
    stream = store.isweep({"a": a} for a in range(12))
    with pytest.raises(SweepError) as caught:
        got.extend(record.a for record in stream)
    assert got == [a for a in range(12) if a not in (2, 8)]
    assert sorted(p["a"] for p, _ in caught.value.failures) == [2, 8]
    assert caught.value.records == []
    assert "were yielded" in str(caught.value)
    assert sorted(f.params["a"] for f in store.failures()) == [2, 8]


def test_stopping_early_keeps_what_finished_and_leaves_no_claim(store: Store[Streamed]) -> None:
    stream = store.isweep({"a": a} for a in range(10 * CHUNK))
    for record in stream:
        if record.a == CHUNK + 1:
            break
    stream.close()
    assert _rows(store) == 2 * CHUNK  # the two chunks read were run and stored
    assert _claims(store) == 0
    assert _runner(store).ran == list(range(2 * CHUNK))


def test_a_bad_point_stops_the_stream_before_its_chunk_runs(store: Store[Streamed]) -> None:
    points: list[dict[str, Any]] = [{"a": a} for a in range(3 * CHUNK)]
    points[CHUNK + 2] = {"a": "seven"}
    got: list[int] = []
    stream = store.isweep(points)
    with pytest.raises((TypeError, ValueError, ParamsTypeError)):
        got.extend(record.a for record in stream)
    assert got == list(range(CHUNK))
    assert _runner(store).ran == list(range(CHUNK))  # nothing of the bad chunk ran
    assert _rows(store) == CHUNK
    assert _claims(store) == 0


def test_one_dict_is_refused(store: Store[Streamed]) -> None:
    with pytest.raises(TypeError, match="not one dict"):
        list(store.isweep({"a": 1}))  # type: ignore[arg-type]

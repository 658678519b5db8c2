"""A cached ``run_or_retrieve`` against a bare ``Session.get`` on the same database, same run.

Goal (issue 3): at most 1.5x the bare get. A naive store that builds an engine
per call is measured beside them to show what reusing one engine saves. The
ratios go in ``extra_info`` and are printed; with ``--benchmark-disable`` only
the agreement of the outputs is checked, so CI's smoke run stays quick.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pytest_benchmark.fixture import BenchmarkFixture
from sqlalchemy.orm import Session

from entropic import Base, Mapped, Store

PARAMS: dict[str, Any] = {"n": 100, "dt": 0.1, "method": "rk4"}
MAX_RATIO = 1.5
ROUNDS = 7
CALLS = 300


class BenchResult(Base):
    __tablename__ = "bench_result"

    n: Mapped[int]
    dt: Mapped[float]
    method: Mapped[str]


def _write(params: dict[str, Any]) -> None:
    Path(params["result_file"]).write_text("x")


DATABASES = ["sqlite-file", "postgresql"]


@pytest.fixture(params=DATABASES)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite-file":
        yield f"sqlite:///{tmp_path / 'bench.sqlite3'}"
        return
    url = os.environ.get("ENTROPIC_TEST_PG_URL", "")
    if not url:
        pytest.skip("PostgreSQL not configured: set ENTROPIC_TEST_PG_URL")
    yield url
    engine = sa.create_engine(url)
    try:
        BenchResult.__table__.drop(engine, checkfirst=True)  # type: ignore[attr-defined]
    finally:
        engine.dispose()


def _best_per_call(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    for _ in range(CALLS):
        fn()
    return (time.perf_counter() - start) / CALLS


def _same(a: BenchResult, b: BenchResult) -> bool:
    columns = [column.key for column in BenchResult.__table__.columns]
    return all(getattr(a, key) == getattr(b, key) for key in columns)


def test_cached_run_or_retrieve_vs_bare_session_get(
    benchmark: BenchmarkFixture, db_url: str, tmp_path: Path
) -> None:
    store = Store(_write, BenchResult, results_dir=tmp_path / "results", db_url=db_url)
    plain = sa.create_engine(store.engine.url)  # what a user would write by hand
    try:
        run_id = store.run_or_retrieve(PARAMS).id

        def ours() -> BenchResult:
            return store.run_or_retrieve(PARAMS)

        def bare() -> BenchResult | None:
            with Session(plain) as session:
                return session.get(BenchResult, run_id)

        def naive() -> BenchResult | None:
            engine = sa.create_engine(store.engine.url)
            try:
                with Session(engine, expire_on_commit=False) as session:
                    return session.get(BenchResult, run_id)
            finally:
                engine.dispose()

        reference, naive_record = bare(), naive()
        assert reference is not None
        assert naive_record is not None
        assert _same(ours(), reference)
        assert _same(naive_record, reference)

        benchmark(ours)
        if benchmark.disabled:
            return
        # Interleaved rounds, best of each: the three see the same machine load.
        timings: dict[str, list[float]] = {"ours": [], "bare": [], "naive": []}
        for _ in range(ROUNDS):
            timings["ours"].append(_best_per_call(ours))
            timings["bare"].append(_best_per_call(bare))
            timings["naive"].append(_best_per_call(naive))
        best = {name: min(values) for name, values in timings.items()}
        ratio = best["ours"] / best["bare"]
        naive_ratio = best["naive"] / best["bare"]
        benchmark.extra_info.update(
            {
                "database": store.engine.dialect.name,
                "ours_us": round(best["ours"] * 1e6, 1),
                "bare_session_get_us": round(best["bare"] * 1e6, 1),
                "naive_engine_per_call_us": round(best["naive"] * 1e6, 1),
                "ratio_vs_bare": round(ratio, 3),
                "naive_ratio_vs_bare": round(naive_ratio, 3),
                "outputs_agree": True,
            }
        )
        print(
            f"\n[{store.engine.dialect.name}] cached run_or_retrieve {best['ours'] * 1e6:.0f} us, "
            f"bare Session.get {best['bare'] * 1e6:.0f} us (ratio {ratio:.2f}, goal <= "
            f"{MAX_RATIO}), engine per call {best['naive'] * 1e6:.0f} us (ratio {naive_ratio:.1f})"
        )
        assert ratio <= MAX_RATIO, benchmark.extra_info
    finally:
        plain.dispose()
        store.close()

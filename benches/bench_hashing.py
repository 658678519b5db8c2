"""The compiled hash against the pure-Python reference, on a sweep of 200,000 dicts, same run.

Goals (issue 2), as ratios of the best of interleaved rounds:
- ``_core.hash_many`` at least 30x faster than the pure-Python backend;
- ``_core.hash_params`` called once per dict at least 15x faster than it;
- ``_core.hash_many`` faster per dict than Python merely calling
  ``hashlib.sha256(b).hexdigest()`` on precomputed canonical bytes.
The ratios go in ``extra_info`` and are printed. With ``--benchmark-disable`` a
small sweep only checks that all four agree, so CI's smoke run stays quick.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable
from typing import Any

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from entropic import _pyhash

_core = pytest.importorskip("entropic._core", reason="the compiled core is not built")

N_BENCH = 200_000
N_SMOKE = 2_000
ROUNDS = 3
GOAL_HASH_MANY = 30.0
GOAL_HASH_PARAMS = 15.0
GOAL_VS_SHA = 1.0


def sweep(n: int) -> list[dict[str, Any]]:
    """The issue's sweep: logistic-growth runs with random rates and a few fixed settings."""
    rng = random.Random(20240501)
    return [
        {
            "r": rng.random(),
            "K": rng.uniform(10.0, 1000.0),
            "x0": 2.0,
            "dt": rng.choice([0.1, 0.05, 0.01, 0.005, 0.001]),
            "steps": rng.randint(100, 100_000),
            "method": "rk4",
        }
        for _ in range(n)
    ]


def _timed(fn: Callable[[], object], timings: list[float]) -> object:
    start = time.perf_counter()
    result = fn()
    timings.append(time.perf_counter() - start)
    return result


def test_hashing_sweep(benchmark: BenchmarkFixture) -> None:
    n = N_SMOKE if benchmark.disabled else N_BENCH
    params = sweep(n)
    canonical = [_pyhash.canonical_json(p).encode() for p in params]
    sha256 = hashlib.sha256
    hash_params = _core.hash_params

    variants: dict[str, Callable[[], list[str]]] = {
        "rust_hash_many": lambda: _core.hash_many(params),
        "rust_hash_params_per_dict": lambda: [hash_params(p) for p in params],
        "python_backend": lambda: _pyhash.hash_many(params),
        "python_sha256_only": lambda: [sha256(b).hexdigest() for b in canonical],
    }

    ids = benchmark.pedantic(variants["rust_hash_many"], rounds=5, iterations=1)
    assert len(ids) == n
    assert variants["rust_hash_params_per_dict"]() == ids
    assert variants["python_backend"]() == ids
    assert [digest[:16] for digest in variants["python_sha256_only"]()] == ids
    assert _core.hash_many(iter(params)) == ids
    if benchmark.disabled:
        return

    # Interleaved rounds, best of each: all four see the same machine load.
    timings: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(ROUNDS):
        for name, fn in variants.items():
            _timed(fn, timings[name])
    best = {name: min(values) for name, values in timings.items()}
    ratios = {
        "hash_many_speedup": best["python_backend"] / best["rust_hash_many"],
        "hash_params_speedup": best["python_backend"] / best["rust_hash_params_per_dict"],
        "hash_many_vs_sha256_only": best["python_sha256_only"] / best["rust_hash_many"],
    }
    benchmark.extra_info.update(
        {
            "dicts": n,
            **{f"{name}_ns_per_dict": round(t / n * 1e9, 1) for name, t in best.items()},
            **{name: round(value, 2) for name, value in ratios.items()},
            "outputs_agree": True,
        }
    )
    per_dict = ", ".join(f"{name} {t / n * 1e9:.0f} ns" for name, t in best.items())
    print(
        f"\n[{n} dicts] {per_dict}\n"
        f"hash_many {ratios['hash_many_speedup']:.1f}x the Python backend "
        f"(goal {GOAL_HASH_MANY}x), "
        f"hash_params per dict {ratios['hash_params_speedup']:.1f}x (goal {GOAL_HASH_PARAMS}x), "
        f"hash_many {ratios['hash_many_vs_sha256_only']:.2f}x as fast as sha256().hexdigest() "
        f"alone (goal > {GOAL_VS_SHA})"
    )
    assert ratios["hash_many_speedup"] >= GOAL_HASH_MANY, benchmark.extra_info
    assert ratios["hash_params_speedup"] >= GOAL_HASH_PARAMS, benchmark.extra_info
    assert ratios["hash_many_vs_sha256_only"] > GOAL_VS_SHA, benchmark.extra_info


def random_float_sweep(n: int) -> list[dict[str, float]]:
    """Sampled points: six keys of random floats, no value repeated (no cache helps)."""
    rng = random.Random(20240502)
    return [{key: rng.random() for key in ("a", "b", "c", "d", "e", "f")} for _ in range(n)]


def test_hash_many_random_floats(benchmark: BenchmarkFixture) -> None:
    """hash_many on sampled floats against the pure-Python reference: ns per dict, ratio.

    Records timings only (no goal is asserted): the float path is round to 12 places,
    then the shortest round-trip text, for every value.
    """
    n = N_SMOKE if benchmark.disabled else N_BENCH
    params = random_float_sweep(n)
    ids = benchmark.pedantic(lambda: _core.hash_many(params), rounds=5, iterations=1)
    assert ids == _pyhash.hash_many(params)
    assert [_core.hash_params(p) for p in params] == ids
    if benchmark.disabled:
        return
    timings: dict[str, list[float]] = {"rust_hash_many": [], "python_backend": []}
    for _ in range(ROUNDS):
        _timed(lambda: _core.hash_many(params), timings["rust_hash_many"])
        _timed(lambda: _pyhash.hash_many(params), timings["python_backend"])
    best = {name: min(values) for name, values in timings.items()}
    ratio = best["python_backend"] / best["rust_hash_many"]
    benchmark.extra_info.update(
        {
            "dicts": n,
            **{f"{name}_ns_per_dict": round(t / n * 1e9, 1) for name, t in best.items()},
            "hash_many_speedup": round(ratio, 1),
            "outputs_agree": True,
        }
    )
    print(
        f"\n[{n} dicts of 6 random floats] hash_many {best['rust_hash_many'] / n * 1e9:.0f} ns, "
        f"Python backend {best['python_backend'] / n * 1e9:.0f} ns per dict ({ratio:.1f}x)"
    )

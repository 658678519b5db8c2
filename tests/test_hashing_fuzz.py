"""Fuzzing the compiled walk with odd objects, in a child process so a crash fails a test.

Each case is built twice from its own seed, once for each backend, so stateful objects
start alike. Both backends must give the same id or raise the same exception class
(with the same message when it is one of entropic's). The child prints each case's
number before running it: if the interpreter dies, the parent names the seed and the
case that killed it, and ``python tests/test_hashing_fuzz.py SEED CASE`` replays it.
"""

from __future__ import annotations

import collections
import contextlib
import enum
import importlib
import json
import math
import os
import random
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

#: Cases per seed; CI's Hypothesis profile ("ci") runs more.
CASES = 1500 if os.environ.get("HYPOTHESIS_PROFILE") == "ci" else 400
SEEDS = [1, 2, 3]
#: Kept whole (not summarised) in the report, which backend gave what.
ENTROPIC_ERRORS = ("ParamsTypeError", "ParamsDepthError")


# --- odd objects -------------------------------------------------------------------------


class Boom(Exception):
    """Raised by the odd objects' methods."""


def boom(*_: Any) -> Any:
    raise Boom("boom")


def make_class(base: type, rng: random.Random) -> type:
    """A subclass of ``base`` whose dunders raise, return self or misbehave, at random."""
    namespace: dict[str, Any] = {}
    choices: list[tuple[str, Callable[..., Any]]] = [
        ("__eq__", boom),
        ("__eq__", lambda self, other: self),
        ("__lt__", boom),
        ("__lt__", lambda self, other: self),
        ("__lt__", lambda self, other: NotImplemented),
        ("__hash__", lambda self: 7),
        ("__float__", boom),
        ("__float__", lambda self: self),
        ("__index__", boom),
        ("__int__", boom),
        ("__str__", boom),
        ("__str__", lambda self: self),
        ("__str__", lambda self: 3),
        ("__repr__", boom),
        ("__format__", boom),
        ("__round__", boom),
        ("__iter__", boom),
        ("__iter__", lambda self: self),
        ("__iter__", lambda self: iter([1, 2])),
        ("__len__", boom),
        ("__getitem__", boom),
        ("__getitem__", lambda self, key: self),
        ("keys", boom),
        ("tolist", boom),
        ("tolist", lambda self: self),
        ("tolist", lambda self: [self]),
        ("__getattr__", boom),
        ("value", property(boom)),
        ("value", property(lambda self: self)),
        ("__class__", property(lambda self: dict)),
        ("__class__", property(lambda self: float)),
        ("__class__", property(boom)),
    ]
    for name, method in rng.sample(choices, rng.randint(0, 3)):
        namespace[name] = method
    if "__eq__" in namespace and "__hash__" not in namespace:
        namespace["__hash__"] = base.__hash__
    try:
        return type(f"Odd{base.__name__.title()}", (base,), namespace)
    except TypeError:
        return type(f"Odd{base.__name__.title()}", (base,), {})


def numpy_value(rng: random.Random) -> Any:
    np = importlib.import_module("numpy")
    makers: list[Callable[[], Any]] = [
        lambda: np.longdouble(0.1),
        lambda: np.clongdouble(1 + 2j),
        lambda: np.array([np.longdouble(1.5)] * 3),
        lambda: np.array([1, 2], dtype=np.clongdouble),
        lambda: np.complex64(1 - 1j),
        lambda: np.float16(0.1),
        lambda: np.datetime64("2020-01-02"),
        lambda: np.datetime64("2020-01-02T03:04:05.123456789"),
        lambda: np.timedelta64(3, "D"),
        lambda: np.array([(1, 2.5)], dtype=[("a", "i4"), ("b", "f8")]),
        lambda: np.array([(1, 2.5)], dtype=[("a", "i4"), ("b", "f8")])[0],
        lambda: np.array(["a", "bé"]),
        lambda: np.bytes_(b"xy"),
        lambda: np.array([], dtype=float),
        lambda: np.zeros((2, 0, 3)),
        lambda: np.array(5),
        lambda: np.array([1, None, "x", 2.5], dtype=object),
        lambda: np.ma.masked_array([1, 2, 3], mask=[0, 1, 0]),
        lambda: np.add,
        lambda: np.dtype("f8"),
        lambda: np.float64,
        lambda: np.random.default_rng(0),
        lambda: np.finfo(np.float64),
        lambda: np.iinfo(np.int8),
        lambda: np.arange(3).view(make_class(np.ndarray, rng)),
        lambda: make_class(np.int64, rng)(4),
    ]
    value = rng.choice(makers)()
    if rng.random() < 0.1:
        looped = np.empty(1, dtype=object)
        looped[0] = looped
        return looped
    return value


def leaf(rng: random.Random) -> Any:
    kind = rng.randrange(16)
    if kind == 0:
        return rng.choice([0, -1, 2**63, -(2**64), 10**5000, -(10**4400)])
    if kind == 1:
        return rng.choice([0.1, -0.0, math.nan, math.inf, 5e-324, 1e300, 1 / 8192])
    if kind == 2:
        return rng.choice(["", "é", "\ud800", "a" * 100, "<x at 0x1f>"])
    if kind == 3:
        return rng.choice([None, True, False])
    if kind == 4:
        base = rng.choice([str, int, float])
        cls = make_class(base, rng)
        sample = {str: "s", int: 10**30, float: 0.30000000000000004}[base]
        return cls(sample)
    if kind == 5:
        return make_class(object, rng)()
    if kind == 6:
        return enum.Enum("E", [("A", rng.choice([1, "x", (1, 2), math.nan]))]).A
    if kind == 7:
        return object()
    if kind == 8:
        try:
            return numpy_value(rng)
        except ImportError:
            return 1
    if kind == 9:
        return b"bytes"
    if kind == 10:
        return 1 + 2j
    if kind == 11:
        return range(3)
    if kind == 12:
        return rng.choice([type, int, Boom, len, print])
    if kind == 13:
        return Boom("x")
    if kind == 14:
        return frozenset({1, "a", None})
    return rng.random()


def key(rng: random.Random) -> Any:
    kind = rng.randrange(8)
    if kind == 0:
        return rng.choice([1, 2**70, -3, True])
    if kind == 1:
        return rng.choice([0.5, -0.0, math.inf, math.nan])
    if kind == 2:
        return None
    if kind == 3:
        base = rng.choice([str, int, float])
        return make_class(base, rng)({str: "k", int: 5, float: 2.5}[base])
    if kind == 4:
        return (1, 2)
    return rng.choice(["a", "b", "é", "\ud800", "k" * 40])


def container(rng: random.Random, depth: int) -> Any:
    def child() -> Any:
        return value(rng, depth + 1)

    # Mostly ordinary containers; loops, deep nesting and re-entrant hashing now and then,
    # as each of them ends the walk with the same error wherever it appears.
    kind = rng.choices(range(10), weights=[6, 3, 6, 3, 3, 3, 1, 1, 1, 1])[0]
    if kind == 0:
        return [child() for _ in range(rng.randint(0, 4))]
    if kind == 1:
        return tuple(child() for _ in range(rng.randint(0, 3)))
    if kind == 2:
        items = {}
        for _ in range(rng.randint(0, 4)):
            with contextlib.suppress(Exception):  # a key whose __hash__/__eq__ raises
                items[key(rng)] = child()
        return items
    if kind == 3:
        cls = make_class(rng.choice([dict, collections.OrderedDict]), rng)
        try:
            return cls({"a": child(), "b": child()})
        except Exception:
            return {}
    if kind == 4:
        cls = make_class(rng.choice([list, tuple]), rng)
        try:
            return cls([child(), child()])
        except Exception:
            return []
    if kind == 5:
        # Members hashed by value only: a set of objects hashed by address iterates in
        # another order in each build, so its first error could differ between builds.
        members = [leaf(rng) for _ in range(rng.randint(0, 3))]
        try:
            return {m for m in members if type(m).__hash__ is not object.__hash__}
        except Exception:
            return set()
    if kind == 6:
        looped: Any = [child()]
        looped.append(looped)
        return looped
    if kind == 7:
        table: dict[str, Any] = {"x": child()}
        table["self"] = table
        return table
    if kind == 8:
        deep: Any = child()
        for i in range(rng.choice([255, 256, 300, 5000])):
            deep = [deep] if i % 2 else {"k": deep}
        return deep
    # A value whose __str__ hashes: once, or itself again without end.
    inner = rng.random()
    forever = rng.random() < 0.5

    class Reentrant:
        def __str__(self) -> str:
            return CURRENT["hash"]({"inner": self if forever else inner})

    return Reentrant()


def value(rng: random.Random, depth: int = 0) -> Any:
    if depth < 3 and rng.random() < 0.5:
        return container(rng, depth)
    return leaf(rng)


def params_of(rng: random.Random) -> Any:
    if rng.random() < 0.05:
        return rng.choice([[1], "x", None, collections.UserDict({"a": value(rng)})])
    return {f"p{i}": value(rng) for i in range(rng.randint(1, 4))}


# --- running the cases -----------------------------------------------------------------------

CURRENT: dict[str, Callable[[Any], str]] = {}


def outcome(hash_params: Callable[[Any], str], seed: int, case: int) -> tuple[str, str]:
    CURRENT["hash"] = hash_params
    params = params_of(random.Random(f"{seed}-{case}"))
    try:
        return ("ok", hash_params(params))
    except BaseException as exc:
        name = type(exc).__name__
        return ("error", f"{name}: {exc}" if name in ENTROPIC_ERRORS else name)


def run(seed: int, cases: range) -> list[dict[str, Any]]:
    """Run the cases through both backends; return those on which they disagree."""
    from entropic import _core, _pyhash

    sys.setrecursionlimit(10_000)
    disagreements = []
    for case in cases:
        print(case, flush=True)
        reference = outcome(_pyhash.hash_params, seed, case)
        compiled = outcome(_core.hash_params, seed, case)
        many = outcome(lambda p: _core.hash_many([p])[0], seed, case)
        if not (reference == compiled == many):
            disagreements.append(
                {"case": case, "python": reference, "rust": compiled, "hash_many": many}
            )
    return disagreements


def child_main(argv: list[str]) -> None:
    seed, first, count = (int(a) for a in argv)
    result = run(seed, range(first, first + count))
    print("RESULT " + json.dumps(result), flush=True)


def run_child(seed: int, first: int, count: int) -> Iterator[str]:
    out = subprocess.run(
        [sys.executable, __file__, str(seed), str(first), str(count)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = out.stdout.splitlines()
    if out.returncode != 0 or not lines or not lines[-1].startswith("RESULT "):
        last = lines[-1] if lines else "before the first case"
        pytest.fail(
            f"the fuzz child died (exit {out.returncode}) at seed {seed}, case {last}; "
            f"replay: python {__file__} {seed} {last} 1\n{out.stderr[-3000:]}"
        )
    yield from json.loads(lines[-1][len("RESULT ") :])


@pytest.mark.parametrize("seed", SEEDS)
def test_odd_objects_never_crash_and_backends_agree(seed: int) -> None:
    if os.environ.get("ENTROPIC_PURE_PYTHON", "") not in ("", "0"):
        pytest.skip("compares both backends directly: the compiled run already did")
    pytest.importorskip("entropic._core", reason="the compiled core is not built")
    disagreements = list(run_child(seed, 0, CASES))
    assert not disagreements, f"seed {seed}: " + json.dumps(disagreements[:5], indent=1)


if __name__ == "__main__":
    child_main(sys.argv[1:])

"""Differential tests of the hash: compiled core == pure-Python reference == json.dumps.

Hypothesis generates nested parameter sets of every kind the spec names, and bad
ones; both backends must give the same canonical text, the same id, or the same
exception class with the same message. When the compiled core is not built (only
allowed in the pure-Python run) the reference is still checked against json.dumps.
"""

from __future__ import annotations

import enum
import json
import math
import os
import random
import struct
import subprocess
import sys
import textwrap
from collections import OrderedDict, UserDict, defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from compiled import core as _core
from entropic import _pyhash, errors, hashing

needs_core = pytest.mark.skipif(_core is None, reason="entropic._core is not built (pure run)")


class Mode(enum.Enum):
    FAST = "fast"
    EXACT = (1, 2.5, "x")


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 10**20


class Unit(str, enum.Enum):
    METRE = "m"


class Scale(float, enum.Enum):
    THIRD = 0.1 + 0.2


class Labelled:
    """A value with its own __str__: hashed as that text."""

    def __init__(self, label: str) -> None:
        self.label = label

    def __str__(self) -> str:
        return f"Labelled({self.label})"


class Boxed:
    """Not an enum, but has .value: hashed as its value."""

    def __init__(self, value: Any) -> None:
        self.value = value


def json_dumps_reference(params: Any) -> str:
    return json.dumps(_pyhash.normalize(params), sort_keys=True, separators=(",", ":"))


def outcome(func: Callable[[Any], Any], params: Any) -> tuple[Any, ...]:
    """What a call gave: its result, or its exception's class and message."""
    try:
        return ("ok", func(params))
    except (TypeError, ValueError) as exc:
        return ("error", type(exc), str(exc))


def assert_agree(params: Any) -> tuple[Any, ...]:
    """Every implementation gives the same canonical text and id, or the same error."""
    reference = outcome(_pyhash.canonical_json, params)
    assert outcome(json_dumps_reference, params) == reference
    ids = outcome(_pyhash.hash_params, params)
    assert outcome(hashing.canonical_json, params) == reference
    assert outcome(hashing.hash_params, params) == ids
    if _core is not None:
        assert outcome(_core.canonical_json, params) == reference
        assert outcome(_core.hash_params, params) == ids
        assert outcome(lambda p: _core.hash_many(iter([p, p])), params) == (
            ids if ids[0] == "error" else ("ok", [ids[1], ids[1]])
        )
    return reference


# --- strategies -------------------------------------------------------------------------

ints = st.one_of(
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64, 10**40]),
)
# Near-ties of the 12-place rounding: k / 2^13 are exact ties; neighbours one ulp away.
near_ties = st.integers(min_value=-(2**26), max_value=2**26).flatmap(
    lambda k: st.sampled_from(
        [k / 8192, math.nextafter(k / 8192, math.inf), math.nextafter(k / 8192, -math.inf)]
    )
)
floats = st.one_of(st.floats(), st.floats(min_value=-1e4, max_value=1e4), near_ties)
texts = st.text(st.characters(exclude_categories=()), max_size=12)
plain_keys = st.text(st.characters(exclude_categories=()), max_size=6)
leaves = st.one_of(
    st.none(),
    st.booleans(),
    ints,
    floats,
    texts,
    st.sampled_from([Mode.FAST, Mode.EXACT, Level.LOW, Level.HIGH, Unit.METRE, Scale.THIRD]),
    texts.map(Labelled),
    st.builds(Boxed, st.one_of(ints, floats, texts)),
)
hashable_leaves = st.one_of(st.none(), st.booleans(), ints, floats, texts)
number_keys = st.one_of(ints, st.floats(allow_nan=False), st.booleans())
sets = st.one_of(
    st.sets(hashable_leaves, max_size=6),
    st.frozensets(st.one_of(hashable_leaves, st.tuples(hashable_leaves, hashable_leaves))),
)


def containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(children, max_size=5),
        st.lists(children, max_size=4).map(tuple),
        st.dictionaries(plain_keys, children, max_size=5),
        st.dictionaries(number_keys, children, max_size=4),
        st.builds(Boxed, children),
    )


values = st.recursive(st.one_of(leaves, sets), containers, max_leaves=40)
params_strategy = st.dictionaries(plain_keys, values, max_size=6)


def numpy_values() -> st.SearchStrategy[Any]:
    np = pytest.importorskip("numpy")

    class FieldArray(np.ndarray):  # type: ignore[type-arg]
        """An array subclass defined outside numpy."""

    return st.one_of(
        st.integers(-(2**62), 2**62).map(np.int64),
        st.floats(width=32).map(np.float32),
        st.floats().map(np.float64),
        st.booleans().map(np.bool_),
        st.lists(st.integers(-1000, 1000), max_size=8).map(lambda xs: np.array(xs, dtype=np.int32)),
        st.lists(st.floats(), max_size=6).map(lambda xs: np.array(xs, dtype=np.float64)),
        st.lists(st.floats(), max_size=6).map(lambda xs: np.array(xs).view(FieldArray)),
    )


class Address:
    """The default repr, with a memory address: cannot be hashed."""


bad_leaves = st.one_of(
    st.just(None).map(lambda _: object()),
    st.just(None).map(lambda _: Address()),
    st.just(None).map(lambda _: Boxed(Address())),
)
# Dicts whose keys cannot be ordered or written: mixed kinds, NaN, other types.
bad_dicts = st.one_of(
    st.tuples(plain_keys, number_keys).map(lambda kv: {kv[0]: 1, kv[1]: 2}),
    st.tuples(plain_keys).map(lambda k: {k[0]: 1, None: 2}),
    st.just(None).map(lambda _: {1.5: 1, math.nan: 2}),
    st.tuples(st.tuples(ints)).map(lambda k: {k[0]: 1}),
    st.just(None).map(lambda _: {frozenset(): 1}),
)
maybe_bad_values = st.recursive(
    st.one_of(leaves, sets, bad_leaves, bad_dicts), containers, max_leaves=30
)


# --- differential properties -------------------------------------------------------------


@given(params_strategy)
def test_backends_agree_on_generated_params(params: dict[str, Any]) -> None:
    assert_agree(params)


@given(st.dictionaries(plain_keys, maybe_bad_values, min_size=1, max_size=5))
def test_backends_agree_on_errors(params: dict[str, Any]) -> None:
    assert_agree(params)


@given(st.data())
def test_backends_agree_on_numpy(data: st.DataObject) -> None:
    params = data.draw(st.dictionaries(plain_keys, numpy_values(), max_size=4))
    assert_agree(params)


def _implementations() -> list[Callable[[Any], str]]:
    return [_pyhash.hash_params, *([_core.hash_params] if _core is not None else [])]


def test_numpy_array_subclasses_are_hashed_in_full() -> None:
    # str() of a large array elides its middle, so a subclass defined outside numpy
    # (whose type's __module__ is not numpy's) once hashed two different arrays alike.
    np = pytest.importorskip("numpy")

    class Field(np.ndarray):  # type: ignore[type-arg]
        pass

    assert Field.__module__ == __name__
    plain = np.zeros(10_000)
    changed = plain.copy()
    changed[5_000] = 1.0
    for hash_params in _implementations():
        a, b = hash_params({"f": plain.view(Field)}), hash_params({"f": changed.view(Field)})
        assert a != b
        assert a == hash_params({"f": plain})
        assert b == hash_params({"f": changed}) == hash_params({"f": changed.tolist()})
    assert_agree({"f": changed.view(Field), "g": [plain.view(Field)]})


def test_numpy_scalar_subclasses_hash_as_their_value() -> None:
    np = pytest.importorskip("numpy")

    class Count(np.int32):
        pass

    for hash_params in _implementations():
        assert hash_params({"n": Count(5)}) == hash_params({"n": 5})
    assert_agree({"n": Count(-7), "xs": [Count(1), np.int64(2)]})


def test_numpy_values_without_a_python_value_are_refused() -> None:
    # A longdouble's .tolist() is a longdouble: the compiled core once recursed on it
    # until the stack overflowed, the reference until RecursionError.
    np = pytest.importorskip("numpy")
    cases = {
        'params["x"]': np.longdouble(0.1),
        'params["c"]["z"]': {"z": np.clongdouble(1 + 2j)},
        'params["a"][0]': np.array([1.0, 2.0], dtype=np.longdouble),
        'params["m"]': np.array(np.longdouble(2)),
    }
    for path, value in cases.items():
        key = path.split('"')[1]
        params = {key: value}
        result = assert_agree(params)
        assert result[:2] == ("error", errors.ParamsTypeError), result
        assert result[2].startswith(f"cannot hash {path}: a numpy ")
        assert "has no exact Python value" in result[2]
        assert "float(value)" in result[2]


def test_numpy_objects_that_are_not_values_are_refused() -> None:
    np = pytest.importorskip("numpy")
    for value in (np.add, np.dtype("f8"), np.random.default_rng(0), np.finfo(np.float64)):
        result = assert_agree({"x": [value]})
        assert result[:2] == ("error", errors.ParamsTypeError), value
        assert result[2].startswith('cannot hash params["x"][0]: a numpy ')
        assert "is neither an array nor a scalar" in result[2]
        assert "str(value)" in result[2]
    # numpy's classes themselves are types, hashed by their str() like any class.
    assert assert_agree({"t": np.float64}) == ("ok", '{"t":"<class \'numpy.float64\'>"}')


def test_hash_calls_inside_hash_calls_are_bounded() -> None:
    class Again:
        """A __str__ that hashes itself again: unbounded re-entry."""

        def __init__(self, hash_params: Callable[[Any], str]) -> None:
            self.hash_params = hash_params

        def __str__(self) -> str:
            return self.hash_params({"again": self})

    class Once:
        def __str__(self) -> str:
            return hashing.hash_params({"inner": 1})

    for hash_params in _implementations():
        with pytest.raises(errors.ParamsDepthError, match="hash calls are nested more than 8"):
            hash_params({"x": Again(hash_params)})
        assert hash_params({"x": Once()}) == _pyhash.hash_params(
            {"x": hashing.hash_params({"inner": 1})}
        )


class ClaimsToBe:
    """An object whose __class__ says dict (or float): the rules go by its real type."""

    def __init__(self, claimed: type) -> None:
        self.claimed = claimed

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        return self.claimed

    def __str__(self) -> str:
        return f"claims {self.claimed.__name__}"


def test_rules_go_by_type_not_by_a_claimed_class() -> None:
    np = pytest.importorskip("numpy")
    for claimed in (dict, list, float, int, set, np.ndarray):
        result = assert_agree({"v": ClaimsToBe(claimed), "k": {"a": ClaimsToBe(claimed)}})
        assert result[0] == "ok", result
        assert f'"claims {claimed.__name__}"' in result[1]


def test_dict_subclass_keys_are_read_once() -> None:
    class NoLen(dict[str, Any]):
        def __len__(self) -> int:
            raise RuntimeError("no len")

    class OnlySome(dict[str, Any]):
        def __iter__(self) -> Iterator[str]:
            return iter(["b"])

    assert assert_agree({"d": NoLen(b=1, a=2)}) == ("ok", '{"d":{"a":2,"b":1}}')
    assert assert_agree({"d": OnlySome(a=1, b=2)}) == ("ok", '{"d":{"b":2}}')


STACK_SCRIPT = textwrap.dedent(
    """
    import sys, threading
    from entropic import _core
    def deep(n):
        value = 1
        for i in range(n):
            value = {"k": value} if i % 2 else [value]
        return value
    class Again:
        def __str__(self):
            return _core.hash_params({"again": [deep(200), self]})
    out = []
    def run():
        out.append(_core.hash_params({"x": deep(255)}))
        try:
            _core.hash_params({"x": Again()})
        except Exception as exc:
            out.append(type(exc).__name__)
    threading.stack_size(int(sys.argv[1]))
    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    print(*out)
    """
)


@needs_core
def test_the_compiled_walk_fits_a_small_thread_stack() -> None:
    # MAX_DEPTH levels take about 200 KB of stack; MAX_NESTED_CALLS walks of 200 levels
    # each stay within a 2 MiB thread stack (Linux's default is 8 MiB).
    out = subprocess.run(
        [sys.executable, "-c", STACK_SCRIPT, str(2 * 1024 * 1024)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[1:] == ["ParamsDepthError"]


FINALIZER_SCRIPT = textwrap.dedent(
    """
    import gc
    from entropic import hash_many
    N = 20
    # Each dict holds a str with a lone surrogate, whose writing raises inside CPython and
    # so allocates an exception, and a big int only the dict holds.
    def made(b):
        return [{"a": "\\ud800", "b": b(i)} for i in range(N)]
    before = hash_many(made(lambda i: 10**40 + i))
    after = hash_many(made(lambda i: None))  # also makes this shape the remembered one
    dicts = made(lambda i: 10**40 + i)
    class Spoiler:
        def __del__(self):
            for params in dicts:
                params["b"] = None  # frees the int being written, if it is one of them
    gc.freeze()  # collections from here on look at new objects only
    spoiler = Spoiler()
    spoiler.cycle = spoiler
    del spoiler
    gc.set_threshold(1)  # a collection at the next allocation of a tracked object
    got = hash_many(dicts)
    gc.set_threshold(700)
    assert dicts[0]["b"] is None, "the finalizer never ran"
    print([i for i in range(N) if got[i] not in (before[i], after[i])])
    """
)


def test_a_dict_changed_by_a_finalizer_while_it_is_hashed_gets_an_id_of_what_it_held() -> None:
    # The debug allocator fills freed memory, so a value read after it was freed is seen:
    # it hashed as `false` while the values were held by borrowed references.
    out = subprocess.run(
        [sys.executable, "-c", FINALIZER_SCRIPT],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONMALLOC": "debug"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["[]"]


NO_NUMPY_SCRIPT = textwrap.dedent(
    """
    import enum, sys
    import entropic
    from entropic import _pyhash
    class Mode(enum.Enum):
        FAST = "fast"
    params = {"m": Mode.FAST, "s": {1, 2}, "o": type("Named", (), {"__str__": lambda s: "x"})()}
    ids = {_pyhash.hash_params(params), entropic.hash_params(params)}
    print(len(ids), "numpy" in sys.modules)
    """
)


def test_hashing_never_imports_numpy() -> None:
    out = subprocess.run(
        [sys.executable, "-c", NO_NUMPY_SCRIPT], capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["1", "False"]


@given(st.dictionaries(number_keys, st.one_of(st.none(), st.integers(), texts), max_size=12))
def test_number_keys_sort_like_python(params: dict[Any, Any]) -> None:
    result = assert_agree(params)
    assert result[0] == "ok"
    assert result[1] == json.dumps(params, sort_keys=True, separators=(",", ":"))


@given(st.lists(values, max_size=3), st.integers(0, 300))
def test_deep_nesting_agrees(leaf: list[Any], depth: int) -> None:
    value: Any = leaf
    for i in range(depth):
        value = [value] if i % 3 else {"k": value}
    assert_agree({"deep": value})


# --- errors, bounds and odd inputs ---------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [[1, 2], (("n", 1),), "n=100", 3, None, {1, 2}, b"{}"],
    ids=["list", "tuple", "str", "int", "None", "set", "bytes"],
)
def test_non_mappings_are_rejected(params: Any) -> None:
    result = assert_agree(params)
    assert result[:2] == ("error", errors.ParamsTypeError)
    assert f"not {type(params).__name__};" in result[2]


def test_mappings_and_dict_subclasses() -> None:
    class Frozen(UserDict[str, Any]):
        pass

    base = {"n": 100, "dt": 0.1}
    expected = _pyhash.hash_params(base)
    for params in (
        Frozen(base),
        OrderedDict(reversed(base.items())),
        defaultdict(int, base),
    ):
        assert_agree(params)
        assert hashing.hash_params(params) == expected


def test_dict_subclass_getitem_is_used_like_the_reference() -> None:
    class Doubling(dict[str, Any]):
        def __getitem__(self, key: str) -> Any:
            return 2 * super().__getitem__(key)

    result = assert_agree({"cfg": Doubling(a=1, b=2)})
    assert result == ("ok", '{"cfg":{"a":2,"b":4}}')


def test_cyclic_structures_hit_the_depth_bound() -> None:
    loop: list[Any] = []
    loop.append(loop)
    table: dict[str, Any] = {}
    table["self"] = table
    for params in ({"loop": loop}, table):
        result = assert_agree(params)
        assert result[:2] == ("error", errors.ParamsDepthError)


def test_self_referencing_value_attribute_hits_the_depth_bound() -> None:
    class Forever:
        @property
        def value(self) -> Forever:
            return self

    result = assert_agree({"v": Forever()})
    assert result[:2] == ("error", errors.ParamsDepthError)
    assert result[2].startswith('cannot hash params["v"]: params are nested more than 256')


@pytest.mark.parametrize("depth", [hashing.MAX_DEPTH - 1, hashing.MAX_DEPTH, 100_000])
def test_depth_bound_is_an_error_never_a_crash(depth: int) -> None:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    result = assert_agree({"x": value})
    if depth < hashing.MAX_DEPTH:
        assert result[0] == "ok"
    else:
        assert result[:2] == ("error", errors.ParamsDepthError)
        assert result[2].endswith("(or contain themselves); flatten the structure")


def test_error_paths_name_the_key() -> None:
    cases = {
        'params["cfg"]["solver"]': {"cfg": {"solver": object()}},
        'params["xs"][3]': {"xs": [0, 1, 2, object()]},
        "params[1]": {1: object()},
        "params[0.5]": {0.5: object()},
        "params[True]": {True: object()},
        "params[None]": {None: object()},
        "params[inf]": {math.inf: object()},
        'params["s"][set item]': {"s": {1, Address()}},
        'params["e"]': {"e": Boxed(object())},
    }
    for path, params in cases.items():
        result = assert_agree(params)
        assert result[:2] == ("error", errors.ParamsTypeError)
        assert result[2].startswith(f"cannot hash {path}: str() of a ")


def test_values_are_visited_in_key_order() -> None:
    # "a" sorts first, so its error is the one reported, whatever the insertion order.
    params = {"b": [object()], "a": {"x": 1, 2: "y"}}
    result = assert_agree(params)
    assert 'params["a"]: dict keys of types int, str' in result[2]


def test_str_subclass_keys_and_int_subclass_keys() -> None:
    assert_agree({Unit.METRE: 1, "a": 2})
    assert_agree({Level.HIGH: "h", Level.LOW: "l", 5: "five"})
    assert_agree({"k": {Unit.METRE: Address()}})


def test_huge_ints_behave_like_the_reference() -> None:
    huge = 10**5000  # more digits than int.__repr__ allows by default
    assert_agree({"n": huge})
    assert_agree({"n": huge, "o": object()})
    assert_agree({"s": {huge, 1}})
    assert_agree({"k": {huge: 1}})


# --- floats ---------------------------------------------------------------------------------


def _random_doubles(count: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        (x,) = struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))
        if not math.isnan(x):
            out.append(x)
    return out


def _near_ties(count: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        base = rng.randrange(-(2**26), 2**26) / 2 ** rng.randrange(12, 20)
        out += [base, math.nextafter(base, math.inf), math.nextafter(base, -math.inf)]
    scales = [10.0**-e for e in range(1, 13)]
    out += [rng.uniform(-8192, 8192) for _ in range(count)]
    out += [rng.choice(scales) * rng.randrange(1, 10**6) for _ in range(count)]
    return out


@needs_core
def test_round12_matches_python_round() -> None:
    xs = _near_ties(20_000, 1) + _random_doubles(20_000, 2) + [5e-324, 8191.999999999999]
    expected = json.dumps({"x": [round(x, 12) for x in xs]}, separators=(",", ":"))
    assert _core.canonical_json({"x": xs}) == expected
    assert _pyhash.canonical_json({"x": xs}) == expected


@needs_core
def test_float_repr_matches_python_repr() -> None:
    # Keys are not rounded, so they show the shortest repr of arbitrary doubles.
    keys = [*_random_doubles(30_000, 3), 1e16, 1e-5, 1e22, 2.0**-1074, -0.0, math.inf]
    params = dict.fromkeys(keys, 0)
    expected = json.dumps(params, sort_keys=True, separators=(",", ":"))
    assert _core.canonical_json(params) == expected


# Floats where the compiled float path has edges: near 12-place ties (k/2^j and the
# doubles beside them, and x.xxxxxxxxxxxx5 decimals), subnormals, huge values, -0.0,
# the 1e-4 and 2^13 layout bounds, NaN and the infinities.
_near_tie_floats = st.builds(
    lambda k, j, step, sign: (
        sign * math.nextafter(k / 2.0**j, math.inf * step) if step else sign * k / 2.0**j
    ),
    st.integers(0, 2**26),
    st.integers(12, 40),
    st.sampled_from([-1, 0, 1]),
    st.sampled_from([1.0, -1.0]),
)
_half_place_floats = st.builds(
    lambda k, e, sign: sign * float(f"{k}5e-{e}"),
    st.integers(0, 10**12),
    st.integers(1, 16),
    st.sampled_from([1.0, -1.0]),
)
_edge_floats = st.sampled_from(
    [
        0.0,
        -0.0,
        5e-324,
        -5e-324,
        2.2250738585072014e-308,
        1e-4,
        9.9999999999e-5,
        5e-13,
        8192.0,
        8191.999999999999,
        1e16,
        1.7976931348623157e308,
        math.nan,
        math.inf,
        -math.inf,
    ]
)
six_floats = st.fixed_dictionaries(
    {
        key: st.one_of(
            st.floats(), st.floats(-8192, 8192), _near_tie_floats, _half_place_floats, _edge_floats
        )
        for key in "abcdef"
    }
)


@needs_core
@given(st.lists(six_floats, max_size=20))
def test_hash_many_on_dicts_of_six_floats_matches_the_reference(
    dicts: list[dict[str, float]],
) -> None:
    # The same key objects in every dict: the compiled core's remembered-shape path.
    assert _core.hash_many(dicts) == _pyhash.hash_many(dicts)
    assert [_core.canonical_json(d) for d in dicts] == [_pyhash.canonical_json(d) for d in dicts]


# --- hash_many, processes, backend selection -------------------------------------------------


def test_hash_many_consumes_a_generator_once_in_order() -> None:
    items = [{"i": i, "x": i / 7} for i in range(500)]
    pulled = 0

    def generate() -> Iterator[dict[str, Any]]:
        nonlocal pulled
        for item in items:
            pulled += 1
            yield item

    expected = [_pyhash.hash_params(p) for p in items]
    assert hashing.hash_many(generate()) == expected
    assert pulled == len(items)
    if _core is not None:
        pulled = 0
        assert _core.hash_many(generate()) == expected
        assert pulled == len(items)
        assert _core.hash_many([]) == []
        assert _core.hash_many(p for p in ()) == []


def test_hash_many_stops_at_the_first_bad_item() -> None:
    items = [{"a": 1}, [1], {"b": 2}]
    for impl in (_pyhash.hash_many, hashing.hash_many, *([_core.hash_many] if _core else [])):
        with pytest.raises(errors.ParamsTypeError, match="not list"):
            impl(iter(items))
    with pytest.raises(TypeError, match="not iterable"):
        hashing.hash_many(3)  # type: ignore[arg-type]


SEEDED_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    from entropic import _pyhash
    params = {"names": {"alpha", "beta", "gamma", "delta", "é", "😀"},
              "frozen": frozenset({("a", 1), ("b", 2)}), "n": 100, "dt": 0.1}
    ids = {"python": _pyhash.hash_params(params)}
    if os.environ.get("ENTROPIC_PURE_PYTHON", "") in ("", "0"):
        from entropic import _core
        ids["rust"] = _core.hash_params(params)
    print(json.dumps(ids))
    """
)


@pytest.mark.parametrize("backend_env", ["compiled", "pure"])
def test_ids_are_equal_across_hash_seeds(backend_env: str) -> None:
    if backend_env == "compiled" and _core is None:
        pytest.skip("entropic._core is not built (pure run)")
    results = []
    for seed in ("0", "1", "12345", "random"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        env["ENTROPIC_PURE_PYTHON"] = "1" if backend_env == "pure" else "0"
        out = subprocess.run(
            [sys.executable, "-c", SEEDED_SCRIPT],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        results.append(json.loads(out.stdout))
    assert all(r == results[0] for r in results)
    assert len(set(results[0].values())) == 1


BACKEND_SCRIPT = textwrap.dedent(
    """
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import entropic.hashing as h
    names = sorted({w.category.__name__ for w in caught})
    print(h.BACKEND, "PurePythonFallbackWarning" in names)
    """
)
BLOCK_CORE = textwrap.dedent(
    """
    import sys
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name == "entropic._core":
                raise {error}
    sys.meta_path.insert(0, Block())
    """
)


def _backend_in_subprocess(env_value: str, error: str = "") -> subprocess.CompletedProcess[str]:
    """Import entropic.hashing in a fresh interpreter; `error` is raised when _core is imported."""
    prelude = BLOCK_CORE.format(error=error) if error else ""
    env = {**os.environ, "ENTROPIC_PURE_PYTHON": env_value}
    return subprocess.run(
        [sys.executable, "-c", prelude + BACKEND_SCRIPT], env=env, capture_output=True, text=True
    )


def test_pure_python_switch_selects_the_reference() -> None:
    out = _backend_in_subprocess("1")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["python", "False"]


@needs_core
def test_compiled_backend_loads_when_built() -> None:
    for value in ("", "0"):
        out = _backend_in_subprocess(value)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == ["rust", "False"]


def test_missing_core_falls_back_with_a_warning() -> None:
    out = _backend_in_subprocess("0", 'ModuleNotFoundError("gone", name="entropic._core")')
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["python", "True"]


def test_broken_core_is_not_hidden() -> None:
    out = _backend_in_subprocess("0", 'ImportError("libfoo.so: cannot open shared object")')
    assert out.returncode != 0
    assert "libfoo.so: cannot open shared object" in out.stderr


@given(
    st.lists(
        st.tuples(
            st.permutations(["a", "b", "c", "dt"]),
            st.lists(
                st.sampled_from(
                    [
                        *[0.1, 0.2, 1 / 3, 2.0, -0.0, 7, "x", None, True],
                        # Leaves a remembered shape writes another way: big and negative
                        # ints, strs to escape, long strs and strs with a lone surrogate.
                        *[-(2**63), 2**63, 2**70, -12345, 'a"b', "\\", "é", "\ud800", "y" * 40],
                    ]
                ),
                min_size=4,
                max_size=4,
            ),
            st.sampled_from([None, [1.5], {"k": 0.1}, Scale.THIRD, Labelled("v")]),
        ),
        max_size=30,
    )
)
def test_sweeps_of_repeated_shapes_and_values(rows: list[tuple[Any, ...]]) -> None:
    # Many dicts with the same keys (in varying insertion order) and repeated values,
    # sometimes one value that is not a plain leaf: hash_many over all of them at once.
    params = []
    for keys, values, odd in rows:
        row = dict(zip(keys, values, strict=False))
        if odd is not None:
            row[keys[len(values) % 4]] = odd
        params.append(row)
    expected = [_pyhash.hash_params(p) for p in params]
    assert hashing.hash_many(params) == expected
    assert [hashing.hash_params(p) for p in params] == expected

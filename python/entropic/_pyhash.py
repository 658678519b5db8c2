"""Pure-Python reference implementation of entropic's parameter hash.

This module is the readable form of the normative spec in ``docs/hashing.md``;
the compiled core (``entropic._core``, built from ``rust/``) implements the same
functions with the same names, exceptions and messages, and the test suite
keeps the two byte-identical.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sys
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from entropic.errors import ParamsDepthError, ParamsTypeError

__all__ = [
    "MAX_DEPTH",
    "PLAIN_BOOL",
    "PLAIN_FLOAT",
    "PLAIN_INT",
    "PLAIN_STR",
    "canonical_json",
    "hash_many",
    "hash_params",
    "hash_plain",
    "json_dumps",
    "json_loads",
    "normalize",
    "plain_value",
]

#: Containers (and numpy and ``.value`` unwrappings) nested deeper than this are rejected.
MAX_DEPTH = 256
#: Hash calls running inside one another on a thread (a ``__str__`` that hashes) are
#: bounded too, so the compiled walk's stack is.
MAX_NESTED_CALLS = 8

#: The kinds of ``hash_plain``'s column spec ``(kind, nullable, required, low, high)``:
#: exactly True or False; an exact int within ``low..high``; an exact float that is not
#: NaN; an exact ASCII str without NUL, at most ``high`` characters (any length if -1).
PLAIN_BOOL, PLAIN_INT, PLAIN_FLOAT, PLAIN_STR = range(4)

_nesting = threading.local()

# A default object repr: "<pkg.Thing object at 0x7f...>". Its address differs
# in every process, so an id built from it would never hit the cache.
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+>")


def hash_params(params: Mapping[str, Any]) -> str:
    """Return the 16-hex-character id of one parameter set."""
    text = canonical_json(params)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def hash_many(params: Iterable[Mapping[str, Any]]) -> list[str]:
    """Return the ids of many parameter sets, consuming the iterable once, in order."""
    return [hash_params(p) for p in params]


def hash_plain(
    params: Sequence[Mapping[str, Any]],
    columns: Mapping[str, tuple[int, bool, bool, int, int]],
) -> list[str | None]:
    """Return the id of each parameter set whose every value its column takes as it is.

    ``columns`` maps a name to ``(kind, nullable, required, low, high)`` (the
    ``PLAIN_*`` kinds). A set gets its id when it is an exact dict of exact str
    keys, each one of ``columns``, each value one ``plain_value`` takes, with every
    required column given; any other set gets None, for the caller to validate in
    full (it may still be valid: this test only ever errs towards None).
    """
    required = sum(1 for spec in columns.values() if spec[2])
    ids: list[str | None] = []
    for point in params:
        ids.append(hash_params(point) if _plain(point, columns, required) else None)
    return ids


def _plain(
    point: Any, columns: Mapping[str, tuple[int, bool, bool, int, int]], required: int
) -> bool:
    if type(point) is not dict:
        return False
    given = 0
    for key, value in point.items():
        if type(key) is not str:
            return False
        spec = columns.get(key)
        if spec is None or not plain_value(spec, value):
            return False
        given += spec[2]
    return given == required


def plain_value(spec: tuple[int, bool, bool, int, int], value: Any) -> bool:
    """Whether a column of ``spec`` takes ``value`` exactly as it is (see ``hash_plain``)."""
    kind, nullable, _, low, high = spec
    if value is None:
        return nullable
    if kind == PLAIN_BOOL:
        return type(value) is bool
    if kind == PLAIN_INT:
        return type(value) is int and low <= value <= high
    if kind == PLAIN_FLOAT:
        return type(value) is float and value == value
    if kind == PLAIN_STR:
        return (
            type(value) is str
            and value.isascii()
            and "\0" not in value
            and (high < 0 or len(value) <= high)
        )
    raise ValueError(f"hash_plain: unknown column kind {kind}")


def json_dumps(value: Any, compact: bool) -> str | None:
    """``json.dumps(value)``, with ``separators=(",", ":")`` if ``compact``.

    The compiled core writes plain data (exact builtin types) itself and gives None
    for anything else, which the caller then leaves to ``json.dumps``; this
    reference always gives ``json.dumps``'s own text (or raises as it does).
    """
    return _COMPACT(value) if compact else json.dumps(value)


_COMPACT = json.JSONEncoder(separators=(",", ":")).encode


def json_loads(text: object) -> Any:
    """Either None, or exactly ``json.loads(text)``: never raises.

    The caller takes a result other than None as ``json.loads(text)`` and, on None,
    calls ``json.loads`` itself (which reads the text or raises its own error). The
    compiled core reads plain JSON in an exact str itself and gives None for
    anything else (bytes, a str subclass, invalid JSON, ``NaN`` or ``Infinity``, an
    int beyond 64 bits, a lone surrogate or raw control character in a string,
    deep nesting). This reference gives ``json.loads(text)`` whenever ``text`` is
    an exact str that ``json.loads`` reads, and None whenever it is not a str or
    ``json.loads`` raises. (``"null"`` gives None either way, which is its value.)
    """
    if type(text) is not str:
        return None
    # raw_decode is json.loads without its wrapper: the same value when the text is
    # exactly one JSON value; any other text takes json.loads itself.
    try:
        value, end = _DECODER.raw_decode(text)
        if end == len(text):
            return value
    except (ValueError, RecursionError):
        pass
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


_DECODER = json.JSONDecoder()


def canonical_json(params: Mapping[str, Any]) -> str:
    """Return the canonical JSON text whose SHA-256 is the id of ``params``."""
    return _dumps(normalize(params))


def normalize(params: Mapping[str, Any]) -> dict[Any, Any]:
    """Return the normalised form of a parameter set (rules 1-8 of docs/hashing.md)."""
    calls = getattr(_nesting, "calls", 0)
    if calls >= MAX_NESTED_CALLS:
        raise ParamsDepthError(
            f"cannot hash params: hash calls are nested more than {MAX_NESTED_CALLS} deep "
            "(a __str__, .value or other method of a value hashes parameters itself); "
            "pass plain values instead"
        )
    _nesting.calls = calls + 1
    try:
        return _normalize_params(params)
    finally:
        _nesting.calls = calls


def _normalize_params(params: Mapping[str, Any]) -> dict[Any, Any]:
    if not issubclass(type(params), dict):
        if not isinstance(params, Mapping):
            raise ParamsTypeError(
                "params must be a mapping of parameter names to values, not "
                f"{type(params).__name__}; pass a dict such as {{'n': 100, 'dt': 0.1}}"
            )
        params = dict(params)
    result = _normalize(params, "params", 0)
    assert isinstance(result, dict)
    return result


def _dumps(value: Any) -> str:
    # Normalised dicts are built in canonical key order and hold only builtin values, so
    # this prints json.dumps(value, sort_keys=True, ...) without running any code of the
    # keys' types again (sorting the items would call their __eq__).
    return json.dumps(value, separators=(",", ":"))


def _normalize(value: Any, path: str, depth: int) -> Any:
    # Every rule goes by the value's type, never by a __class__ it claims.
    kind = type(value)
    # Rule 1: dicts keep their keys; values are visited in canonical key order
    # so both backends report the same first error.
    if issubclass(kind, dict):
        _check_depth(path, depth)
        # Plain loops, not comprehensions: one Python frame per level keeps
        # MAX_DEPTH levels well inside the interpreter's recursion limit.
        out: dict[Any, Any] = {}
        for key in _sorted_keys(value, path):
            out[key] = _normalize(value[key], path + _key_segment(key), depth + 1)
        return out
    # Rule 2: lists and tuples become lists, order kept.
    if issubclass(kind, (list, tuple)):
        _check_depth(path, depth)
        items: list[Any] = []
        for i, item in enumerate(value):
            items.append(_normalize(item, f"{path}[{i}]", depth + 1))
        return items
    # Rule 3: floats (subclasses included, read as their float value) are
    # rounded to 12 decimal digits, exactly as the builtin round() does.
    if issubclass(kind, float):
        return float.__round__(value, 12)
    # Rule 4: int, bool, str and None are kept; a subclass becomes its base type's value.
    if value is None or kind is bool:
        return value
    if issubclass(kind, int):
        return int.__int__(value)
    if issubclass(kind, str):
        return str.__str__(value)
    # Rule 5 (entropic extension): numpy arrays and scalars, subclasses included, hash
    # as their full .tolist(). Decided by type: numpy's own str() elides large arrays.
    numpy_types = _numpy_types()
    if numpy_types and issubclass(kind, numpy_types):
        _check_depth(path, depth)
        listed = value.tolist()
        if issubclass(type(listed), numpy_types):
            # A longdouble's .tolist() is itself: no Python number holds its value.
            raise ParamsTypeError(
                f"cannot hash {path}: a numpy {kind.__name__} has no exact Python value (its "
                ".tolist() is a numpy value again); convert it first, for example with "
                "float(value), or complex(value) for a complex one"
            )
        return _normalize(listed, path, depth + 1)
    # Other numpy objects (dtypes, ufuncs, generators) are not values to hash.
    module = kind.__module__
    if module == "numpy" or module.startswith("numpy."):
        raise ParamsTypeError(
            f"cannot hash {path}: a numpy {kind.__name__} is neither an array nor a scalar, "
            "so it has no canonical value; pass a plain value that stands for it, such as "
            "str(value)"
        )
    # Rule 6 (entropic extension): sets become lists sorted by each element's canonical text.
    if issubclass(kind, (set, frozenset)):
        _check_depth(path, depth)
        members: list[Any] = []
        for item in value:
            members.append(_normalize(item, f"{path}[set item]", depth + 1))
        return sorted(members, key=_dumps)
    # Rule 7: anything with a ``value`` attribute (enums) hashes as that value.
    if hasattr(value, "value"):
        _check_depth(path, depth)
        return _normalize(value.value, path, depth + 1)
    # Rule 8: everything else hashes as its str(), unless that text holds an address.
    text = str(value)
    if _ADDRESS.search(text):
        name = type(value).__name__
        raise ParamsTypeError(
            f"cannot hash {path}: str() of a {name} object contains a memory address, "
            "so its id would change in every process; pass plain values (numbers, "
            f"strings, lists, dicts) or give {name} a __str__ that describes its content"
        )
    return text


def _numpy_types() -> tuple[type, ...]:
    """numpy's array and scalar base classes, if the program has imported numpy."""
    numpy = sys.modules.get("numpy")
    if numpy is None:
        return ()
    return (numpy.ndarray, numpy.generic)


def _check_depth(path: str, depth: int) -> None:
    if depth >= MAX_DEPTH:
        raise ParamsDepthError(
            f"cannot hash {path}: params are nested more than {MAX_DEPTH} levels deep "
            "(or contain themselves); flatten the structure"
        )


def _sorted_keys(d: dict[Any, Any], path: str) -> list[Any]:
    """Check that json.dumps(sort_keys=True) can order the keys, and return them in that order."""
    kinds: set[str] = set()
    names: set[str] = set()
    keys: list[Any] = []
    for key in d:  # once, as the compiled core does (sorted(d) would also call __len__)
        keys.append(key)
        if issubclass(type(key), str):
            kinds.add("str")
        elif issubclass(type(key), (int, float)):
            if issubclass(type(key), float) and math.isnan(key):
                raise ParamsTypeError(
                    f"cannot hash {path}: a NaN dict key cannot be ordered; use a string key"
                )
            kinds.add("number")
        elif key is None:
            kinds.add("none")
        else:
            raise ParamsTypeError(
                f"cannot hash {path}: dict keys must be str, int, float, bool or None, "
                f"not {type(key).__name__}; convert the keys to strings"
            )
        names.add(type(key).__name__)
    if len(kinds) > 1:
        raise ParamsTypeError(
            f"cannot hash {path}: dict keys of types {', '.join(sorted(names))} cannot be "
            "ordered against each other; use keys of one kind (all strings, or all numbers)"
        )
    return sorted(keys)


def _key_segment(key: Any) -> str:
    if issubclass(type(key), str):
        return f'["{str.__str__(key)}"]'
    if issubclass(type(key), bool) or key is None:
        return f"[{key}]"
    if issubclass(type(key), int):
        return f"[{int.__repr__(key)}]"
    return f"[{float.__repr__(key)}]"

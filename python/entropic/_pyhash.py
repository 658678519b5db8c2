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
from collections.abc import Iterable, Mapping
from typing import Any

from entropic.errors import ParamsDepthError, ParamsTypeError

__all__ = ["MAX_DEPTH", "canonical_json", "hash_many", "hash_params", "normalize"]

#: Containers (and ``.value`` unwrappings) nested deeper than this are rejected.
MAX_DEPTH = 256

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


def canonical_json(params: Mapping[str, Any]) -> str:
    """Return the canonical JSON text whose SHA-256 is the id of ``params``."""
    return _dumps(normalize(params))


def normalize(params: Mapping[str, Any]) -> dict[Any, Any]:
    """Return the normalised form of a parameter set (rules 1-8 of docs/hashing.md)."""
    if not isinstance(params, dict):
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
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _normalize(value: Any, path: str, depth: int) -> Any:
    # Rule 1: dicts keep their keys; values are visited in canonical key order
    # so both backends report the same first error.
    if isinstance(value, dict):
        _check_depth(path, depth)
        # Plain loops, not comprehensions: one Python frame per level keeps
        # MAX_DEPTH levels well inside the interpreter's recursion limit.
        out: dict[Any, Any] = {}
        for key in _sorted_keys(value, path):
            out[key] = _normalize(value[key], path + _key_segment(key), depth + 1)
        return out
    # Rule 2: lists and tuples become lists, order kept.
    if isinstance(value, (list, tuple)):
        _check_depth(path, depth)
        items: list[Any] = []
        for i, item in enumerate(value):
            items.append(_normalize(item, f"{path}[{i}]", depth + 1))
        return items
    # Rule 3: floats (subclasses included, read as their float value) are
    # rounded to 12 decimal digits, exactly as the builtin round() does.
    if isinstance(value, float):
        return float.__round__(value, 12)
    # Rule 4: int, bool, str and None are kept (json writes subclasses as their base type).
    if value is None or isinstance(value, (int, str)):
        return value
    # Rule 5 (entropic extension): numpy arrays and scalars, subclasses included, hash
    # as their full .tolist(). Decided by type: numpy's own str() elides large arrays.
    numpy_types = _numpy_types()
    if numpy_types and issubclass(type(value), numpy_types):
        _check_depth(path, depth)
        return _normalize(value.tolist(), path, depth + 1)
    # Rule 6 (entropic extension): sets become lists sorted by each element's canonical text.
    if isinstance(value, (set, frozenset)):
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
    for key in d:
        if isinstance(key, str):
            kinds.add("str")
        elif isinstance(key, (int, float)):
            if isinstance(key, float) and math.isnan(key):
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
    return sorted(d)


def _key_segment(key: Any) -> str:
    if isinstance(key, str):
        return f'["{key}"]'
    if isinstance(key, bool) or key is None:
        return f"[{key}]"
    if isinstance(key, int):
        return f"[{int.__repr__(key)}]"
    return f"[{float.__repr__(key)}]"

"""Parameter hashing: the id of a parameter set, from the compiled core or the Python reference.

``BACKEND`` says which one loaded: ``"rust"`` (the compiled ``entropic._core``)
or ``"python"`` (``entropic._pyhash``). Setting ``ENTROPIC_PURE_PYTHON=1``
before import forces the pure-Python backend. Both give the same ids, the same
exceptions and the same messages; docs/hashing.md is the spec they follow.
"""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from entropic import _pyhash
from entropic.errors import PurePythonFallbackWarning

__all__ = [
    "BACKEND",
    "MAX_DEPTH",
    "MAX_NESTED_CALLS",
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
]

MAX_DEPTH: int = _pyhash.MAX_DEPTH
MAX_NESTED_CALLS: int = _pyhash.MAX_NESTED_CALLS
#: The column kinds of ``hash_plain``'s spec.
PLAIN_BOOL, PLAIN_INT, PLAIN_FLOAT, PLAIN_STR = (
    _pyhash.PLAIN_BOOL,
    _pyhash.PLAIN_INT,
    _pyhash.PLAIN_FLOAT,
    _pyhash.PLAIN_STR,
)

hash_params: Callable[[Mapping[str, Any]], str]
hash_many: Callable[[Iterable[Mapping[str, Any]]], list[str]]
canonical_json: Callable[[Mapping[str, Any]], str]
#: ``json_dumps(value, compact)``: ``json.dumps``'s text of plain data, or None for the
#: caller to call ``json.dumps`` itself (``entropic._pyhash.json_dumps`` says exactly).
json_dumps: Callable[[Any, bool], str | None]
#: ``json_loads(text)``: either None, or exactly ``json.loads(text)``; on None the caller
#: calls ``json.loads`` itself (``entropic._pyhash.json_loads`` says exactly).
json_loads: Callable[[object], Any]
#: ``hash_plain(params, columns)``: the ids of the sets whose every value its column
#: takes as it is, None for the others (``entropic._pyhash.hash_plain`` says exactly).
hash_plain: Callable[
    [list[dict[str, Any]], dict[str, tuple[int, bool, bool, int, int]]], list[str | None]
]


def _load() -> str:
    global hash_params, hash_many, hash_plain, canonical_json, json_dumps, json_loads
    if os.environ.get("ENTROPIC_PURE_PYTHON", "") not in ("", "0"):
        hash_params, hash_many = _pyhash.hash_params, _pyhash.hash_many
        hash_plain, canonical_json = _pyhash.hash_plain, _pyhash.canonical_json
        json_dumps, json_loads = _pyhash.json_dumps, _pyhash.json_loads
        return "python"
    try:
        _core = importlib.import_module("entropic._core")
    except ModuleNotFoundError as exc:
        # Only a missing extension means "not built"; a broken one must be seen.
        if exc.name != "entropic._core":
            raise
        warnings.warn(
            "entropic's compiled hashing core is not installed, so the pure-Python "
            "backend is in use (same ids, slower); install entropic with "
            "`pip install .` on a machine with the Rust toolchain to build it",
            PurePythonFallbackWarning,
            stacklevel=3,
        )
        hash_params, hash_many = _pyhash.hash_params, _pyhash.hash_many
        hash_plain, canonical_json = _pyhash.hash_plain, _pyhash.canonical_json
        json_dumps, json_loads = _pyhash.json_dumps, _pyhash.json_loads
        return "python"
    built = (_core.MAX_DEPTH, _core.MAX_NESTED_CALLS)
    if built != (MAX_DEPTH, MAX_NESTED_CALLS):  # pragma: no cover - a build mismatch
        raise ImportError(
            f"entropic._core was built with MAX_DEPTH, MAX_NESTED_CALLS = {built}, the "
            f"Python package expects {(MAX_DEPTH, MAX_NESTED_CALLS)}; rebuild with "
            "`pip install .`"
        )
    hash_params, hash_many, hash_plain, canonical_json, json_dumps, json_loads = (
        _core.hash_params,
        _core.hash_many,
        _core.hash_plain,
        _core.canonical_json,
        _core.json_dumps,
        _core.json_loads,
    )
    return "rust"


BACKEND: str = _load()

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
    "canonical_json",
    "hash_many",
    "hash_params",
]

MAX_DEPTH: int = _pyhash.MAX_DEPTH
MAX_NESTED_CALLS: int = _pyhash.MAX_NESTED_CALLS

hash_params: Callable[[Mapping[str, Any]], str]
hash_many: Callable[[Iterable[Mapping[str, Any]]], list[str]]
canonical_json: Callable[[Mapping[str, Any]], str]


def _load() -> str:
    global hash_params, hash_many, canonical_json
    if os.environ.get("ENTROPIC_PURE_PYTHON", "") not in ("", "0"):
        hash_params, hash_many = _pyhash.hash_params, _pyhash.hash_many
        canonical_json = _pyhash.canonical_json
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
        canonical_json = _pyhash.canonical_json
        return "python"
    built = (_core.MAX_DEPTH, _core.MAX_NESTED_CALLS)
    if built != (MAX_DEPTH, MAX_NESTED_CALLS):  # pragma: no cover - a build mismatch
        raise ImportError(
            f"entropic._core was built with MAX_DEPTH, MAX_NESTED_CALLS = {built}, the "
            f"Python package expects {(MAX_DEPTH, MAX_NESTED_CALLS)}; rebuild with "
            "`pip install .`"
        )
    hash_params, hash_many, canonical_json = (
        _core.hash_params,
        _core.hash_many,
        _core.canonical_json,
    )
    return "rust"


BACKEND: str = _load()

"""Type stubs for the compiled hashing core (built from rust/ by maturin)."""

from collections.abc import Iterable, Mapping
from typing import Any, Final

__all__ = ["MAX_DEPTH", "MAX_NESTED_CALLS", "canonical_json", "hash_many", "hash_params"]

MAX_DEPTH: Final[int]
MAX_NESTED_CALLS: Final[int]

def hash_params(params: Mapping[str, Any]) -> str:
    """Return the 16-hex-character id of one parameter set."""

def hash_many(params: Iterable[Mapping[str, Any]]) -> list[str]:
    """Return the ids of many parameter sets, consuming the iterable once, in order."""

def canonical_json(params: Mapping[str, Any]) -> str:
    """Return the canonical JSON text whose SHA-256 is the id of ``params``."""

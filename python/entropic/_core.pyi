"""Type stubs for the compiled hashing core (built from rust/ by maturin)."""

from collections.abc import Iterable, Mapping
from typing import Any, Final

__all__ = [
    "MAX_DEPTH",
    "MAX_NESTED_CALLS",
    "canonical_json",
    "hash_many",
    "hash_params",
    "hash_plain",
    "json_dumps",
    "json_loads",
]

MAX_DEPTH: Final[int]
MAX_NESTED_CALLS: Final[int]

def hash_params(params: Mapping[str, Any]) -> str:
    """Return the 16-hex-character id of one parameter set."""

def hash_many(params: Iterable[Mapping[str, Any]]) -> list[str]:
    """Return the ids of many parameter sets, consuming the iterable once, in order."""

def hash_plain(
    params: list[dict[str, Any]], columns: dict[str, tuple[int, bool, bool, int, int]]
) -> list[str | None]:
    """Return the id of each parameter set whose every value its column takes as it is,
    and None for each of the others (the caller validates those in full)."""

def json_dumps(value: Any, compact: bool) -> str | None:
    """Return ``json.dumps(value)`` (with ``separators=(",", ":")`` if ``compact``) when
    ``value`` is plain data, else None: the caller leaves such a value to ``json.dumps``."""

def json_loads(text: object) -> Any:
    """Return ``json.loads(text)`` when ``text`` is an exact str holding one plain JSON value,
    else None: the caller leaves such text to ``json.loads``."""

def canonical_json(params: Mapping[str, Any]) -> str:
    """Return the canonical JSON text whose SHA-256 is the id of ``params``."""

"""Rows as JSON: how sidecars and journal lines hold a finished run's row.

JSON lacks datetimes, dates, decimals and bytes: such a value is written as text
and its type noted beside the row, so a custom_data or JSON column value is
never mistaken for one. Decoding refuses anything that is not such a row.
"""

from __future__ import annotations

import base64
import json
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from entropic import hashing

__all__ = [
    "SIDECAR_VERSION",
    "decode_line",
    "decode_row",
    "decode_sidecar",
    "dumps",
    "encode_any_line",
    "encode_line",
    "encode_row",
    "encode_sidecar",
    "loads",
]

SIDECAR_VERSION = 1

#: One encoder for every journal line (``json.dumps`` with options builds one per call).
_COMPACT = json.JSONEncoder(separators=(",", ":")).encode

_DECODERS: dict[str, Any] = {
    "datetime": datetime.fromisoformat,
    "date": date.fromisoformat,
    "decimal": Decimal,
    "bytes": base64.b64decode,
}


#: Types JSON holds as they are (exact types: a subclass takes the checks below).
_PLAIN = frozenset({str, int, float, bool, type(None), dict, list})


def dumps(value: Any, *, compact: bool = False) -> str:
    """``json.dumps(value)`` (compact: no spaces), plain data written by the compiled core."""
    text = hashing.json_dumps(value, compact)
    if text is None:
        text = _COMPACT(value) if compact else json.dumps(value)
    return text


def loads(text: str | bytes) -> Any:
    """``json.loads(text)``, JSON in an exact str read by the compiled core when it can.

    Text the core leaves (None: see ``hashing.json_loads``), bytes (a BLOB) and
    other objects go to ``json.loads`` itself, so every value and every error is its own.
    """
    if type(text) is str:
        value = hashing.json_loads(text)
        if value is not None:
            return value
    return json.loads(text)


def encode_row(row: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """(the row with JSON-less values as text, the types of those values by column)."""
    plain: dict[str, Any] = {}
    types: dict[str, str] = {}
    for key, value in row.items():
        if type(value) in _PLAIN:
            plain[key] = value
        elif isinstance(value, datetime):
            plain[key], types[key] = value.isoformat(), "datetime"
        elif isinstance(value, date):
            plain[key], types[key] = value.isoformat(), "date"
        elif isinstance(value, Decimal):
            plain[key], types[key] = str(value), "decimal"
        elif isinstance(value, bytes):
            plain[key], types[key] = base64.b64encode(value).decode("ascii"), "bytes"
        else:
            plain[key] = value
    return plain, types


def decode_row(plain: object, types: object) -> dict[str, Any]:
    """The row ``encode_row`` gave ``plain`` and ``types`` for; ValueError if it is not one."""
    if not isinstance(plain, dict) or not isinstance(types, dict):
        raise ValueError("not a row: expected a JSON object and its types")
    row = dict(plain)
    for key, kind in types.items():
        decoder = _DECODERS.get(kind) if isinstance(kind, str) else None
        if decoder is None or key not in row:
            raise ValueError(f"unknown value type {kind!r} for column {key!r}")
        try:
            row[key] = decoder(row[key])
        except (TypeError, ValueError, ArithmeticError) as exc:
            raise ValueError(f"column {key!r} is not a valid {kind}: {exc}") from None
    if not isinstance(row.get("id"), str) or not isinstance(row.get("result_file"), str):
        raise ValueError("not a row: it lacks a text id or result_file")
    return row


#: The types of a row whose only JSON-less value is its created_at.
_CREATED_AT_TYPES = {"created_at": "datetime"}


def encode_line(row: dict[str, Any]) -> bytes | None:
    """One journal line (newline included) holding ``row``; None if JSON cannot hold it."""
    created = row.get("created_at")
    if type(created) is datetime:
        # A finished run's row: plain values and its created_at, written in one go;
        # any other value takes the general path below, which gives the same text.
        plain = dict(row)
        plain["created_at"] = created.isoformat()
        try:
            # None (compiled core) or an error (json) for any value it does not take as is.
            text = hashing.json_dumps({"row": plain, "types": _CREATED_AT_TYPES}, True)
        except (TypeError, ValueError):
            text = None
        if text is not None:
            return (text + "\n").encode("utf-8", "surrogatepass")
    return encode_any_line(row)


def encode_any_line(row: dict[str, Any]) -> bytes | None:
    """``encode_line`` of any row, value by value (``encode_line``'s general path)."""
    plain, types = encode_row(row)
    try:
        text = dumps({"row": plain, "types": types}, compact=True)
    except (TypeError, ValueError):
        return None
    return (text + "\n").encode("utf-8", "surrogatepass")


def decode_line(line: bytes) -> dict[str, Any]:
    """The row of one journal line; ValueError if the line is not one."""
    try:
        data = json.loads(line.decode("utf-8", "surrogatepass"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return decode_row(data.get("row"), data.get("types", {}))


def encode_sidecar(run_id: str, row: dict[str, Any]) -> str | None:
    """The text of the sidecar of ``run_id``; None if JSON cannot hold the row."""
    plain, types = encode_row(row)
    try:
        return json.dumps(
            {"entropic_sidecar": SIDECAR_VERSION, "id": run_id, "row": plain, "types": types}
        )
    except (TypeError, ValueError):
        return None


def decode_sidecar(text: bytes) -> dict[str, Any]:
    """The row of a sidecar's text; ValueError if it is not an entropic sidecar."""
    try:
        data = json.loads(text.decode("utf-8", "surrogatepass"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("entropic_sidecar") != SIDECAR_VERSION:
        raise ValueError("not an entropic sidecar")
    row = decode_row(data.get("row"), data.get("types", {}))
    if row["id"] != data.get("id"):
        raise ValueError(f"holds the row of {row['id']!r}, not of {data.get('id')!r}")
    return row

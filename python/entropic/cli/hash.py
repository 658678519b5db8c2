"""``entropic hash``: the id of a parameter set given as JSON, or of each line of JSON Lines."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from typing import Any, TextIO

from entropic import hashing
from entropic.cli.format import CLIError

__all__ = ["add_parser"]

# Lines hashed per hash_many call when reading JSON Lines: big enough to
# amortise the call, small enough to stream a file of any length.
BATCH = 4096


def add_parser(sub: Any) -> None:
    hash_cmd = sub.add_parser(
        "hash",
        help="print the id of a parameter set given as JSON",
        description=(
            "Print the 16-hex-character id entropic gives a parameter set. PARAMS is a "
            "JSON object; '-' reads JSON Lines (one object a line) from stdin and prints "
            "one id a line. JSON cannot say 'tuple' or 'set': 1 and 1.0 differ, as in Python."
        ),
    )
    hash_cmd.add_argument("params", metavar="PARAMS", help="a JSON object, or - for stdin")
    hash_cmd.add_argument(
        "--canonical",
        action="store_true",
        help="also print the canonical JSON text that is hashed (id, a tab, the text)",
    )
    hash_cmd.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.params == "-":
        _hash_lines(sys.stdin, sys.stdout, canonical=args.canonical)
        return 0
    params = _parse_object(args.params)
    _write_ids([params], sys.stdout, canonical=args.canonical)
    return 0


def _hash_lines(src: TextIO, out: TextIO, *, canonical: bool) -> None:
    batch: list[dict[str, Any]] = []
    for lineno, line in _numbered_lines(src):
        batch.append(_parse_object(line, lineno))
        if len(batch) == BATCH:
            _write_ids(batch, out, canonical=canonical)
            batch = []
    _write_ids(batch, out, canonical=canonical)


def _numbered_lines(src: TextIO) -> Iterator[tuple[int, str]]:
    for lineno, line in enumerate(src, start=1):
        if not line.isspace():
            yield lineno, line


def _write_ids(batch: list[dict[str, Any]], out: TextIO, *, canonical: bool) -> None:
    if not batch:
        return
    try:
        ids = hashing.hash_many(batch)
        texts = [hashing.canonical_json(p) for p in batch] if canonical else None
    except (TypeError, ValueError) as exc:
        raise CLIError(str(exc)) from exc
    if texts is None:
        out.write("\n".join(ids) + "\n")
    else:
        out.write("".join(f"{i}\t{t}\n" for i, t in zip(ids, texts, strict=True)))


def _parse_object(text: str, lineno: int | None = None) -> dict[str, Any]:
    """One JSON object: PARAMS, or line ``lineno`` of the input (named only in errors)."""
    where = "PARAMS" if lineno is None else f"line {lineno}"
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CLIError(f"{where} is not valid JSON ({exc}); quote it for the shell") from exc
    if not isinstance(value, dict):
        raise CLIError(
            f'{where} must be a JSON object such as \'{{"n": 100, "dt": 0.1}}\', '
            f"not a JSON {type(value).__name__}"
        )
    return value

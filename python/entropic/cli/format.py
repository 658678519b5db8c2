"""What the command line prints: table cells, aligned tables, JSON lines, one-line errors."""

from __future__ import annotations

import json
import math
from datetime import date, datetime
from typing import Any, TextIO

__all__ = [
    "CLIError",
    "cell",
    "first_line",
    "json_line",
    "number",
    "print_table",
    "short",
    "size_text",
    "summary",
]


class CLIError(Exception):
    """A user error: printed as one line on stderr, exit status 2."""


def first_line(exc: BaseException) -> str:
    """The first line of an error's text (the database's own message when it has one)."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def cell(value: Any) -> str:
    """A value as one table cell: JSON-like words, compact JSON for dicts and lists."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return number(value)
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), default=str)
    return str(value)


def number(value: float) -> str:
    """A float the one way the command line shows floats, in parameters and custom_data alike.

    The shortest text that reads back as the value, at most 12 significant digits
    (the precision ids keep: two parameters shown alike share an id), and always
    visibly a float: ``100.0``, ``0.3``, ``3.81928374012e-05``, ``1e+20``.
    """
    if not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    text = repr(value)
    mantissa = text.split("e")[0].lstrip("-").replace(".", "").lstrip("0")
    if len(mantissa) > 12:
        text = f"{value:.12g}"
    if not any(c in text for c in ".e"):
        text += ".0"
    return text


def short(text: str, width: int) -> str:
    text = " ".join(text.split())  # newlines would break the table
    return text if len(text) <= width else text[: width - 1] + "…"


def summary(custom: Any, width: int | None = None) -> str:
    """custom_data in one line of ``key=value`` pairs; cut to ``width`` between pairs only.

    A pair is never cut in the middle: what does not fit is counted, ``(+2 more)``.
    """
    if not isinstance(custom, dict):
        return cell(custom) if width is None else short(cell(custom), width)
    parts = [f"{key}={cell(value)}" for key, value in custom.items()]
    text = ", ".join(parts)
    if width is None or len(text) <= width:
        return text
    for kept in range(len(parts) - 1, -1, -1):
        more = f"(+{len(parts) - kept} more)"
        shown = ", ".join([*parts[:kept], more])
        if len(shown) <= width or kept == 0:
            return shown
    raise AssertionError  # pragma: no cover


def print_table(header: list[str], rows: list[list[Any]], out: TextIO) -> None:
    """An aligned table: numbers right-aligned, everything else left-aligned."""
    cells = [[cell(v) if not isinstance(v, str) else v for v in row] for row in rows]
    numeric = [
        bool(rows)
        and all(isinstance(row[i], (int, float)) and not isinstance(row[i], bool) for row in rows)
        for i in range(len(header))
    ]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(header)]

    def line(values: list[str]) -> str:
        return "  ".join(
            v.rjust(w) if right else v.ljust(w)
            for v, w, right in zip(values, widths, numeric, strict=True)
        ).rstrip()

    out.write(line(header) + "\n")
    for row in cells:
        out.write(line(row) + "\n")


def json_line(data: dict[str, Any], out: TextIO) -> None:
    out.write(json.dumps(data, default=_json_default, ensure_ascii=False) + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return str(value)


def size_text(size: int) -> str:
    """A byte count in B, KiB, MiB, ..."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError  # pragma: no cover

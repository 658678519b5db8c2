"""``entropic ls``, ``failures`` and ``info``: what a store holds, from its database alone."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Any, TextIO

import sqlalchemy as sa

from entropic.cli.format import CLIError, cell, json_line, print_table, short, size_text, summary
from entropic.cli.opening import Opened, where, with_store

__all__ = ["run_failures", "run_info", "run_ls"]

#: Rows streamed per fetch when a command reads a whole table.
STREAM = 10_000


def run_ls(args: argparse.Namespace) -> int:
    return with_store(args, _ls)


def _ls(store: Opened, args: argparse.Namespace) -> int:
    if args.limit < 0:
        raise CLIError(f"--limit {args.limit} is negative; give 0 for all rows or a positive N")
    table = store.table
    conditions = where(store, args.where)
    stmt = sa.select(table).where(*conditions).order_by(table.c.created_at.desc(), table.c.id)
    if args.limit:
        stmt = stmt.limit(args.limit)
    out = sys.stdout
    with store.engine.connect() as conn:
        if args.json:
            order = [*store.params, "id", "result_file", "created_at", "custom_data"]
            for row in conn.execution_options(yield_per=STREAM).execute(stmt):
                mapping = row._mapping
                json_line({name: mapping[name] for name in order}, out)
            return 0
        rows = conn.execute(stmt).all()
        total = None
        if args.limit and len(rows) == args.limit:
            count = sa.select(sa.func.count()).select_from(table).where(*conditions)
            total = int(conn.execute(count).scalar_one())
    root = Path(args.results).resolve()
    columns = _columns(store, args.columns)
    shown = [[_value(row, name, root) for name in columns] for row in rows]
    if args.columns is None:
        columns, shown, hidden = _fit(columns, shown, _width())
        if hidden:
            print(
                f"(left out to fit the terminal: {', '.join(hidden)}; --columns chooses)",
                file=sys.stderr,
            )
    print_table(columns, shown, out)
    if not rows:
        print("(no rows)", file=sys.stderr)
    if total is not None and total > len(rows):
        print(f"({len(rows)} of {total} rows; --limit 0 shows all)", file=sys.stderr)
    return 0


#: The columns ``ls`` may leave out to fit the terminal, the first first.
_DROPPABLE = ("created_at", "file", "custom_data")
#: custom_data is cut to fit, but not narrower than this.
_CUSTOM_MIN = 24


def _columns(store: Opened, wanted: str | None) -> list[str]:
    """The columns to show: the default set, or those ``--columns`` names, in its order."""
    default = [*store.params, "id", "created_at", "file", "custom_data"]
    if wanted is None:
        return default
    names = [name.strip() for name in wanted.split(",") if name.strip()]
    known = set(default) | {"result_file"}
    unknown = [n for n in names if n not in known and not n.startswith("custom_data.")]
    if unknown or not names:
        raise CLIError(
            f"--columns {wanted!r}: {'unknown ' + ', '.join(unknown) if unknown else 'no column'}"
            f"; choose from {', '.join(default)}, or custom_data.KEY for one custom_data value"
        )
    return ["file" if n == "result_file" else n for n in names]


def _value(row: Any, name: str, root: Path) -> Any:
    if name == "file":
        return _shown_path(row.result_file, root)
    if name == "custom_data":
        return row.custom_data
    if name.startswith("custom_data."):
        custom = row.custom_data
        return custom.get(name.partition(".")[2]) if isinstance(custom, dict) else None
    return row._mapping[name]


def _width() -> int | None:
    """The terminal's width; None (no limit) when stdout is a file or a pipe, unless $COLUMNS."""
    if os.environ.get("COLUMNS", "").isdigit():
        return int(os.environ["COLUMNS"])
    if not sys.stdout.isatty():
        return None
    return shutil.get_terminal_size().columns


def _fit(
    columns: list[str], rows: list[list[Any]], width: int | None
) -> tuple[list[str], list[list[Any]], list[str]]:
    """Cut custom_data, then leave out columns, until the table fits ``width``."""
    custom = columns.index("custom_data")
    if width is None:
        return columns, [_with_summary(row, custom, None) for row in rows], []
    hidden: list[str] = []
    while True:
        others = [i for i, name in enumerate(columns) if name != "custom_data"]
        used = sum(_column_width(columns[i], rows, i) for i in others) + 2 * len(others)
        room = width - used
        if "custom_data" in columns and room >= _CUSTOM_MIN:
            custom = columns.index("custom_data")
            return columns, [_with_summary(row, custom, room) for row in rows], hidden
        if "custom_data" not in columns and room >= -2:
            return columns, rows, hidden
        drop = next((name for name in _DROPPABLE if name in columns), None)
        if drop is None:  # only parameters and ids left: show them whole
            return columns, rows, hidden
        i = columns.index(drop)
        columns = columns[:i] + columns[i + 1 :]
        rows = [row[:i] + row[i + 1 :] for row in rows]
        hidden.append(drop)


def _with_summary(row: list[Any], at: int, width: int | None) -> list[Any]:
    return [*row[:at], summary(row[at], width), *row[at + 1 :]]


def _column_width(name: str, rows: list[list[Any]], i: int) -> int:
    values = (row[i] for row in rows)
    return max([len(name)] + [len(v if isinstance(v, str) else cell(v)) for v in values])


def _shown_path(path: str, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return path


# -- failures ------------------------------------------------------------------------------


def run_failures(args: argparse.Namespace) -> int:
    return with_store(args, _failures)


def _failures(store: Opened, args: argparse.Namespace) -> int:
    if args.limit < 0:
        raise CLIError(f"--limit {args.limit} is negative; give 0 for all or a positive N")
    out = sys.stdout
    if store.failures is None:
        if not args.json:
            print("no failures recorded (no sweep has recorded one in this database)", file=out)
        return 0
    failures = store.failures
    stmt = (
        sa.select(failures)
        .where(failures.c.table_name == store.table.name)
        .order_by(failures.c.failed_at.desc(), failures.c.id)
    )
    if args.limit:
        stmt = stmt.limit(args.limit)
    with store.engine.connect() as conn:
        rows = [dict(row._mapping) for row in conn.execute(stmt)]
    if args.json:
        for row in rows:
            json_line(row, out)
        return 0
    if not rows:
        print(f"no failures recorded for {store.table.name}", file=out)
        return 0
    if args.traceback:
        for row in rows:
            out.write(
                f"== {row['id']}  {cell(row['failed_at'])} on {row['host']} (pid {row['pid']}) "
                f"after {row['elapsed_seconds']:.3f} s\n"
                f"params: {cell(row['params'])}\n{row['traceback'].rstrip()}\n\n"
            )
        return 0
    header = ["id", "failed_at", "host", "error", "params"]
    body = [
        [
            row["id"],
            row["failed_at"],
            row["host"],
            short(f"{row['exc_type']}: {row['message']}", 60),
            short(cell(row["params"]), 60),
        ]
        for row in rows
    ]
    print_table(header, body, out)
    return 0


# -- info ----------------------------------------------------------------------------------


def run_info(args: argparse.Namespace) -> int:
    return with_store(args, _info)


def _info(store: Opened, args: argparse.Namespace) -> int:
    table = store.table
    info: dict[str, Any] = {"table": table.name, "db": store.url}
    with store.engine.connect() as conn:
        rows, oldest, newest = conn.execute(
            sa.select(
                sa.func.count(), sa.func.min(table.c.created_at), sa.func.max(table.c.created_at)
            )
        ).one()
        info.update(rows=int(rows), oldest=oldest, newest=newest)
        info["columns"] = [_column_info(conn, table.c[name]) for name in store.params]
        size = present = missing = timed = 0
        elapsed = 0.0
        stmt = sa.select(table.c.result_file, table.c.custom_data)
        for path, custom in conn.execution_options(yield_per=STREAM).execute(stmt):
            try:
                size += os.stat(path).st_size
                present += 1
            except OSError:
                missing += 1
            value = custom.get("elapsed_seconds") if isinstance(custom, dict) else None
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                elapsed += value
                timed += 1
        info["files"] = {"present": present, "missing": missing, "bytes": size}
        info["elapsed_seconds"] = {
            "total": elapsed,
            "mean": elapsed / timed if timed else None,
            "rows": timed,
        }
        for key, own in (("failures", store.failures), ("claims", store.claims)):
            info[key] = None
            if own is not None:
                counted = sa.select(sa.func.count()).select_from(own)
                counted = counted.where(own.c.table_name == table.name)
                info[key] = int(conn.execute(counted).scalar_one())
    results = Path(args.results)
    info["results_dir"] = str(results.resolve()) if results.is_dir() else None
    if args.json:
        json_line(info, sys.stdout)
        return 0
    _print_info(info, sys.stdout)
    return 0


def _column_info(conn: sa.Connection, column: sa.Column[Any]) -> dict[str, Any]:
    """Type, distinct count, range and (when few) the values of one parameter column."""
    kind = column.type.compile(conn.dialect)
    data: dict[str, Any] = {"name": column.name, "type": kind}
    if isinstance(column.type, sa.JSON):
        return data  # JSON has no equality on every database, so no DISTINCT
    distinct = int(conn.execute(sa.select(sa.func.count(sa.distinct(column)))).scalar_one())
    data["distinct"] = distinct
    if isinstance(column.type, (sa.Integer, sa.Float, sa.Numeric)):
        low, high = conn.execute(sa.select(sa.func.min(column), sa.func.max(column))).one()
        data.update(min=low, max=high)
    if distinct <= 8:
        stmt = sa.select(column).where(column.is_not(None)).distinct().order_by(column)
        data["values"] = list(conn.execute(stmt).scalars())
    return data


def _print_info(info: dict[str, Any], out: TextIO) -> None:
    files = info["files"]
    elapsed = info["elapsed_seconds"]
    mean = "" if elapsed["mean"] is None else f", mean {elapsed['mean']:.4g} s"
    lines = [
        ("table", f"{info['table']} in {info['db']}"),
        ("rows", str(info["rows"])),
        ("oldest", cell(info["oldest"])),
        ("newest", cell(info["newest"])),
        (
            "files",
            f"{files['present']} present, {size_text(files['bytes'])}"
            + (f"; {files['missing']} missing (entropic check)" if files["missing"] else ""),
        ),
        ("elapsed", f"total {elapsed['total']:.4g} s{mean} over {elapsed['rows']} runs"),
        ("failures", "no failures table" if info["failures"] is None else str(info["failures"])),
        ("claims", "no claims table" if info["claims"] is None else str(info["claims"])),
    ]
    width = max(len(key) for key, _ in lines)
    for key, value in lines:
        out.write(f"{key.ljust(width)}  {value}\n")
    out.write("columns\n")
    body = []
    for column in info["columns"]:
        detail = ""
        if "values" in column:
            detail = ", ".join(cell(v) for v in column["values"])
        elif column.get("min") is not None:
            detail = f"{cell(column['min'])} .. {cell(column['max'])}"
        body.append(["  " + column["name"], column["type"], column.get("distinct", "-"), detail])
    print_table(["  name", "type", "distinct", "values"], body, out)

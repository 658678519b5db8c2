"""The ``entropic`` command line: hash parameter sets, and inspect or repair any store.

``entropic hash '{"n": 100, "dt": 0.1}'`` prints the id that entropic gives those
parameters, so a user can check an id from a shell script or from another
language. ``entropic hash -`` reads JSON Lines on stdin and prints one id a line.

``ls``, ``failures``, ``info`` and ``check`` open a store from its database URL
(``--db``) and results folder (``--results``) alone: the table is reflected, so
no model class is needed. See docs/cli.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, TextIO

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from entropic import hashing, query
from entropic._claims import owner_alive
from entropic._disk import Disk
from entropic._tables import CLAIMS, FAILURES
from entropic.models import RESERVED_COLUMNS, utcnow
from entropic.store import _ID_CHUNK, SQLITE_BUSY_TIMEOUT_MS, _is_memory_sqlite, _mtime

__all__ = ["main"]

# Lines hashed per hash_many call when reading JSON Lines: big enough to
# amortise the call, small enough to stream a file of any length.
_BATCH = 4096

#: entropic's own tables, never a user's store.
FAILURES_TABLE = FAILURES.name
CLAIMS_TABLE = CLAIMS.name
#: Rows streamed per fetch when a command reads a whole table.
_STREAM = 10_000


class CLIError(Exception):
    """A user error: printed as one line on stderr, exit status 2."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    secret = ""
    try:
        secret = _password(getattr(args, "db", None))
        status: int = args.func(args)
    except CLIError as exc:
        _fail(str(exc), secret)
        return 2
    except sa.exc.SQLAlchemyError as exc:
        _fail(f"database error: {_first_line(exc)}", secret)
        return 2
    except OSError as exc:
        if isinstance(exc, BrokenPipeError):  # e.g. `entropic hash - | head`
            return 0
        _fail(f"{exc.strerror or exc} ({exc.filename})" if exc.filename else str(exc), secret)
        return 2
    except KeyboardInterrupt:
        return 130
    return status


def _fail(message: str, secret: str) -> None:
    if secret:
        message = message.replace(secret, "***")
    print(f"entropic: error: {message}", file=sys.stderr)


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="entropic",
        description="entropic: a run cache for parameterised simulations.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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
    hash_cmd.set_defaults(func=_cmd_hash)

    store = argparse.ArgumentParser(add_help=False)
    where = store.add_argument_group("store")
    where.add_argument(
        "--db",
        metavar="URL",
        default=os.environ.get("ENTROPIC_DB_URL", "sqlite:///db.sqlite3"),
        help="SQLAlchemy URL of the database (default: $ENTROPIC_DB_URL, else the Store's "
        "default sqlite:///db.sqlite3)",
    )
    where.add_argument(
        "--table", metavar="NAME", help="the store's table, when the database holds several"
    )
    files = argparse.ArgumentParser(add_help=False)
    files.add_argument(
        "--results",
        metavar="DIR",
        default="results",
        help="the store's results_dir (default: ./results, the Store's default)",
    )
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument("--json", action="store_true", help="JSON output (one object a line)")

    ls_cmd = sub.add_parser(
        "ls",
        parents=[store, files, output],
        help="list runs, newest first",
        description="List the store's rows, newest first: parameters, id, time, file and a "
        "custom_data summary. Files are shown relative to --results when inside it.",
    )
    ls_cmd.add_argument(
        "--where",
        metavar="COLUMN=VALUE",
        action="append",
        default=[],
        help="keep rows whose column equals VALUE, read as the column's type (floats match "
        "as ids round them; 'null' is NULL for non-text columns); repeat to combine",
    )
    ls_cmd.add_argument(
        "--limit", type=int, default=20, metavar="N", help="show at most N rows (0: all; 20)"
    )
    ls_cmd.set_defaults(func=_cmd_ls)

    fail_cmd = sub.add_parser(
        "failures",
        parents=[store, files, output],
        help="show the failures recorded by sweeps",
        description="Show the last failure of every point that has failed and not succeeded "
        "since, newest first: params, error, host, time.",
    )
    fail_cmd.add_argument("--traceback", action="store_true", help="show whole tracebacks")
    fail_cmd.add_argument(
        "--limit", type=int, default=0, metavar="N", help="show at most N failures (0: all)"
    )
    fail_cmd.set_defaults(func=_cmd_failures)

    info_cmd = sub.add_parser(
        "info",
        parents=[store, files, output],
        help="summarise a store: rows, columns, disk, times",
        description="Rows, distinct values per parameter column, disk used by result files, "
        "oldest and newest run, total and mean elapsed_seconds, failures and claims.",
    )
    info_cmd.set_defaults(func=_cmd_info)

    check_cmd = sub.add_parser(
        "check",
        parents=[store, files, output],
        help="find (and repair) inconsistencies between the table and results_dir",
        description="Report rows whose file is missing or empty, files no row points to, "
        "leftover sidecars, sweep journals and kept-aside files, and stale claims (a claim "
        "is stale when its process is gone; see ENTROPIC_CLAIM_TTL in docs/cli.md). Exit "
        "status 1 while problems remain.",
    )
    check_cmd.add_argument(
        "--repair",
        action="store_true",
        help="ingest good sidecars and leftover journals, restore kept-aside files, drop bad "
        "sidecars, clear stale claims",
    )
    check_cmd.add_argument(
        "--prune",
        action="store_true",
        help="with --repair: also delete rows whose file is gone",
    )
    check_cmd.set_defaults(func=_cmd_check)
    return parser


# -- opening a store by reflection ---------------------------------------------------------


def _password(db: str | None) -> str:
    if not db:
        return ""
    try:
        return sa.make_url(db).password or ""
    except sa.exc.ArgumentError:
        return ""


@dataclass
class _Store:
    """A store opened without its model: the engine, the reflected table and entropic's own."""

    engine: Engine
    url: str  # password masked
    table: sa.Table
    failures: sa.Table | None
    claims: sa.Table | None
    params: list[str] = field(default_factory=list)


def _open(args: argparse.Namespace) -> _Store:
    """Connect to ``--db`` and reflect the store's table; CLIError with the fix if that fails."""
    try:
        url = sa.make_url(args.db)
    except sa.exc.ArgumentError:
        raise CLIError(
            "--db is not a SQLAlchemy database URL; use e.g. sqlite:///db.sqlite3 or "
            "postgresql+psycopg://user@host/dbname"
        ) from None
    shown = url.render_as_string(hide_password=True)
    if url.get_backend_name() == "sqlite":
        if _is_memory_sqlite(url):
            raise CLIError("--db names an in-memory SQLite database, which is empty; pass a file")
        database = Path(str(url.database))
        if not database.is_file():
            # Connecting would create an empty database file: refuse instead.
            raise CLIError(f"no SQLite database at {database.resolve()}; check --db ({shown})")
    try:
        engine = sa.create_engine(url)
    except (ImportError, sa.exc.ArgumentError) as exc:
        raise CLIError(f"cannot use --db {shown}: {exc}") from None
    if url.get_backend_name() == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_busy_timeout)
    try:
        inspector = sa.inspect(engine)
        names = sorted(inspector.get_table_names())
    except sa.exc.SQLAlchemyError as exc:
        engine.dispose()
        raise CLIError(f"cannot open database {shown}: {_first_line(exc)}") from None
    try:
        table = _pick_table(engine, names, args.table, shown)
        own = {
            name: sa.Table(name, sa.MetaData(), autoload_with=engine)
            for name in (FAILURES_TABLE, CLAIMS_TABLE)
            if name in names
        }
    except BaseException:
        engine.dispose()
        raise
    return _Store(
        engine,
        shown,
        table,
        own.get(FAILURES_TABLE),
        own.get(CLAIMS_TABLE),
        query.parameter_columns(table),
    )


def _sqlite_busy_timeout(dbapi_connection: Any, _record: Any) -> None:
    # Wait for a sweeping process's write lock instead of failing at once.
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


def _pick_table(engine: Engine, names: list[str], wanted: str | None, shown: str) -> sa.Table:
    """The store's table: ``wanted``, else the only table with entropic's reserved columns."""
    inspector = sa.inspect(engine)
    own = {FAILURES_TABLE, CLAIMS_TABLE}

    def is_store(name: str) -> bool:
        columns = {column["name"] for column in inspector.get_columns(name)}
        return set(RESERVED_COLUMNS) <= columns

    if wanted is not None:
        if wanted not in names:
            stores = [name for name in names if name not in own and is_store(name)]
            raise CLIError(
                f"no table {wanted!r} in {shown}; its store tables are "
                f"{', '.join(stores) or '(none)'}"
            )
        if wanted in own or not is_store(wanted):
            raise CLIError(
                f"table {wanted!r} is not an entropic store (it lacks the columns "
                f"{', '.join(RESERVED_COLUMNS)} or is one of entropic's own)"
            )
        name = wanted
    else:
        stores = [name for name in names if name not in own and is_store(name)]
        if not stores:
            raise CLIError(f"no entropic store table in {shown}; check --db")
        if len(stores) > 1:
            raise CLIError(
                f"{shown} holds several store tables ({', '.join(stores)}); pick one with --table"
            )
        name = stores[0]
    return sa.Table(name, sa.MetaData(), autoload_with=engine)


def _with_store(args: argparse.Namespace, command: Any) -> int:
    store = _open(args)
    try:
        status: int = command(store, args)
    finally:
        store.engine.dispose()
    return status


# -- --where -------------------------------------------------------------------------------

_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


def _where(store: _Store, items: list[str]) -> list[Any]:
    """SQL conditions from ``COLUMN=VALUE`` texts, each VALUE read as its column's type."""
    equals: dict[str, Any] = {}
    filterable = [*store.params, *query.FILTERABLE_RESERVED]
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise CLIError(f"--where {item!r} is not COLUMN=VALUE, e.g. --where n=100")
        if name not in filterable:
            raise CLIError(
                f"--where {item!r}: {name!r} is not a column of {store.table.name}; "
                f"its columns are {', '.join(filterable)}"
            )
        if name in equals:
            raise CLIError(f"--where names {name!r} twice; give each column once")
        equals[name] = _typed(store.table.c[name], text, item)
    try:
        return query.conditions(store.table, equals, owner=store.table.name)
    except (TypeError, ValueError) as exc:
        raise CLIError(f"--where: {exc}") from None


def _typed(column: sa.Column[Any], text: str, item: str) -> Any:
    """``text`` read as a value of ``column``'s type."""
    ctype = column.type
    is_text = isinstance(ctype, sa.String)
    if text.lower() == "null" and not is_text:
        return None
    kind = f"{column.name} is {ctype.compile() if _compiles(ctype) else type(ctype).__name__}"
    try:
        if isinstance(ctype, sa.Boolean):
            lowered = text.lower()
            if lowered not in _TRUE | _FALSE:
                raise ValueError
            return lowered in _TRUE
        if isinstance(ctype, sa.Integer):
            return int(text)
        if isinstance(ctype, (sa.Float, sa.Numeric)):
            number = float(text)
            if not math.isfinite(number):
                raise ValueError
            return number
        if isinstance(ctype, sa.DateTime):
            return datetime.fromisoformat(text)
        if isinstance(ctype, sa.Date):
            return date.fromisoformat(text)
    except ValueError:
        wanted = {
            sa.Boolean: "true or false",
            sa.Integer: "a whole number",
            sa.Float: "a finite number",
            sa.Numeric: "a finite number",
            sa.DateTime: "an ISO date-time such as 2024-05-01T12:00:00",
            sa.Date: "an ISO date such as 2024-05-01",
        }
        hint = next(text for kind_, text in wanted.items() if isinstance(ctype, kind_))
        raise CLIError(f"--where {item!r}: {kind}; give {hint}") from None
    if isinstance(ctype, sa.JSON):
        raise CLIError(f"--where {item!r}: {kind}, which cannot be matched by equality")
    return text


def _compiles(ctype: Any) -> bool:
    try:
        ctype.compile()
    except Exception:
        return False
    return True


# -- output --------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    """A value as one table cell: JSON-like words, compact JSON for dicts and lists."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), default=str)
    return str(value)


def _short(text: str, width: int) -> str:
    text = " ".join(text.split())  # newlines would break the table
    return text if len(text) <= width else text[: width - 1] + "…"


def _summary(custom: Any, width: int = 48) -> str:
    """custom_data in one short line: ``key=value`` pairs, floats to 4 significant digits."""
    if not isinstance(custom, dict):
        return _cell(custom)
    parts = []
    for key, value in custom.items():
        shown = f"{value:.4g}" if isinstance(value, float) else _cell(value)
        parts.append(f"{key}={shown}")
    return _short(", ".join(parts), width)


def _print_table(header: list[str], rows: list[list[Any]], out: TextIO) -> None:
    """An aligned table: numbers right-aligned, everything else left-aligned."""
    cells = [[_cell(v) if not isinstance(v, str) else v for v in row] for row in rows]
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


def _json_line(data: dict[str, Any], out: TextIO) -> None:
    out.write(json.dumps(data, default=_json_default, ensure_ascii=False) + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return str(value)


# -- ls ------------------------------------------------------------------------------------


def _cmd_ls(args: argparse.Namespace) -> int:
    return _with_store(args, _ls)


def _ls(store: _Store, args: argparse.Namespace) -> int:
    if args.limit < 0:
        raise CLIError(f"--limit {args.limit} is negative; give 0 for all rows or a positive N")
    table = store.table
    conditions = _where(store, args.where)
    stmt = sa.select(table).where(*conditions).order_by(table.c.created_at.desc(), table.c.id)
    if args.limit:
        stmt = stmt.limit(args.limit)
    out = sys.stdout
    with store.engine.connect() as conn:
        if args.json:
            order = [*store.params, "id", "result_file", "created_at", "custom_data"]
            for row in conn.execution_options(yield_per=_STREAM).execute(stmt):
                mapping = row._mapping
                _json_line({name: mapping[name] for name in order}, out)
            return 0
        rows = conn.execute(stmt).all()
        total = None
        if args.limit and len(rows) == args.limit:
            count = sa.select(sa.func.count()).select_from(table).where(*conditions)
            total = int(conn.execute(count).scalar_one())
    root = Path(args.results).resolve()
    header = [*store.params, "id", "created_at", "file", "custom_data"]
    body = [
        [
            *(row._mapping[name] for name in store.params),
            row.id,
            row.created_at,
            _shown_path(row.result_file, root),
            _summary(row.custom_data),
        ]
        for row in rows
    ]
    _print_table(header, body, out)
    if not rows:
        print("(no rows)", file=sys.stderr)
    if total is not None and total > len(rows):
        print(f"({len(rows)} of {total} rows; --limit 0 shows all)", file=sys.stderr)
    return 0


def _shown_path(path: str, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return path


# -- failures ------------------------------------------------------------------------------


def _cmd_failures(args: argparse.Namespace) -> int:
    return _with_store(args, _failures)


def _failures(store: _Store, args: argparse.Namespace) -> int:
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
            _json_line(row, out)
        return 0
    if not rows:
        print(f"no failures recorded for {store.table.name}", file=out)
        return 0
    if args.traceback:
        for row in rows:
            out.write(
                f"== {row['id']}  {_cell(row['failed_at'])} on {row['host']} (pid {row['pid']}) "
                f"after {row['elapsed_seconds']:.3f} s\n"
                f"params: {_cell(row['params'])}\n{row['traceback'].rstrip()}\n\n"
            )
        return 0
    header = ["id", "failed_at", "host", "error", "params"]
    body = [
        [
            row["id"],
            row["failed_at"],
            row["host"],
            _short(f"{row['exc_type']}: {row['message']}", 60),
            _short(_cell(row["params"]), 60),
        ]
        for row in rows
    ]
    _print_table(header, body, out)
    return 0


# -- info ----------------------------------------------------------------------------------


def _cmd_info(args: argparse.Namespace) -> int:
    return _with_store(args, _info)


def _info(store: _Store, args: argparse.Namespace) -> int:
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
        for path, custom in conn.execution_options(yield_per=_STREAM).execute(stmt):
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
        _json_line(info, sys.stdout)
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
        ("oldest", _cell(info["oldest"])),
        ("newest", _cell(info["newest"])),
        (
            "files",
            f"{files['present']} present, {_bytes(files['bytes'])}"
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
            detail = ", ".join(_cell(v) for v in column["values"])
        elif column.get("min") is not None:
            detail = f"{_cell(column['min'])} .. {_cell(column['max'])}"
        body.append(["  " + column["name"], column["type"], column.get("distinct", "-"), detail])
    _print_table(["  name", "type", "distinct", "values"], body, out)


def _bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError  # pragma: no cover


# -- check ---------------------------------------------------------------------------------


@dataclass
class _Findings:
    """What ``check`` found; every list but ``in_progress`` holds problems."""

    missing: list[tuple[str, str]] = field(default_factory=list)  # (id, path)
    empty: list[tuple[str, str]] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)  # paths
    sidecars: list[str] = field(default_factory=list)  # ids of good sidecars
    bad_sidecars: list[tuple[str, str]] = field(default_factory=list)  # (id, why)
    aside: list[str] = field(default_factory=list)  # ids
    journals: list[tuple[str, int]] = field(default_factory=list)  # (path, finished runs)
    stale_claims: list[dict[str, Any]] = field(default_factory=list)
    in_progress: list[str] = field(default_factory=list)  # ids claimed by live processes

    def count(self) -> int:
        return sum(
            len(items)
            for items in (
                self.missing,
                self.empty,
                self.orphans,
                self.sidecars,
                self.bad_sidecars,
                self.aside,
                self.journals,
                self.stale_claims,
            )
        )


def _cmd_check(args: argparse.Namespace) -> int:
    if args.prune and not args.repair:
        raise CLIError("--prune only works with --repair: entropic check --repair --prune")
    root = Path(args.results)
    if not root.is_dir():
        raise CLIError(f"--results {root} is not a folder; give the store's results_dir")
    return _with_store(args, _check)


def _check(store: _Store, args: argparse.Namespace) -> int:
    disk = Disk(args.results, "")
    found = _inspect(store, disk)
    repaired: dict[str, list[str]] = {}
    if args.repair and found.count():
        repaired = _repair(store, disk, found, prune=args.prune)
        found = _inspect(store, disk)
    if args.json:
        _json_line(
            {
                "table": store.table.name,
                "results_dir": str(disk.root),
                "ok": found.count() == 0,
                "problems": {
                    "missing_files": [{"id": i, "path": p} for i, p in found.missing],
                    "empty_files": [{"id": i, "path": p} for i, p in found.empty],
                    "orphan_files": found.orphans,
                    "sidecars": found.sidecars,
                    "bad_sidecars": [{"id": i, "reason": r} for i, r in found.bad_sidecars],
                    "kept_aside": found.aside,
                    "journals": [{"path": p, "runs": n} for p, n in found.journals],
                    "stale_claims": found.stale_claims,
                },
                "in_progress": found.in_progress,
                "repaired": repaired,
            },
            sys.stdout,
        )
    else:
        _print_check(store, disk, found, repaired, sys.stdout)
    return 1 if found.count() else 0


def _inspect(store: _Store, disk: Disk) -> _Findings:
    """Compare the table, results_dir, the journals and the claims; nothing is changed."""
    found = _Findings()
    table = store.table
    live: set[str] = set()
    with store.engine.connect() as conn:
        if store.claims is not None:
            claims = store.claims
            stmt = sa.select(claims).where(claims.c.table_name == table.name)
            now = utcnow()
            for claim in conn.execute(stmt):
                data = dict(claim._mapping)
                if owner_alive(data["owner"], data["heartbeat_at"], now):
                    live.add(data["id"])
                else:
                    found.stale_claims.append(data)
        # Names of the files in results_dir that rows point to (results_dir may be
        # reached through a symlink, so directories are compared resolved).
        inside = _InsideRoot(disk.root)
        referenced: set[str] = set()
        stmt = sa.select(table.c.id, table.c.result_file).order_by(table.c.id)
        for run_id, path in conn.execution_options(yield_per=_STREAM).execute(stmt):
            inside.add_to(referenced, path)
            if run_id in live:
                continue  # a live process may have moved the file aside to re-run it
            try:
                size = os.stat(path).st_size
            except FileNotFoundError:
                found.missing.append((run_id, path))
                continue
            if size == 0:
                found.empty.append((run_id, path))
    # Files named in a journal are runs that finished but are not committed yet.
    journalled: set[str] = set()
    for path, owner in disk.list_journals():
        rows = [row for row in disk.read_journal(path) if isinstance(row.get("id"), str)]
        for row in rows:
            inside.add_to(journalled, str(row.get("result_file", "")))
        if not owner_alive(owner, _mtime(path)):
            finished = sum(os.path.isfile(str(row.get("result_file", ""))) for row in rows)
            found.journals.append((str(path), finished))
    found.in_progress = sorted(live)
    for entry in sorted(os.scandir(disk.root), key=lambda e: e.name):
        if entry.name.startswith(".") or not entry.is_file():
            continue  # entropic's own .entropic folder; ids never start with a dot
        if entry.name in referenced or entry.name in journalled:
            continue
        if not _claimed(entry.name, live):
            found.orphans.append(entry.path)
    for run_id in disk.list_sidecars():
        if run_id in live:
            continue
        try:
            row = disk.read_sidecar(run_id)
        except (OSError, ValueError, KeyError) as exc:
            found.bad_sidecars.append((run_id, f"unreadable: {exc}"))
            continue
        if row.get("id") != run_id:
            found.bad_sidecars.append((run_id, f"holds the row of {row.get('id')!r}"))
        elif not os.path.isfile(str(row.get("result_file", ""))):
            found.bad_sidecars.append((run_id, "its result file is gone"))
        else:
            found.sidecars.append(run_id)
    found.aside = [run_id for run_id in disk.list_aside() if run_id not in live]
    # A result file a good sidecar points to is that finished run's, not an orphan.
    with_sidecar = set(found.sidecars)
    found.orphans = [p for p in found.orphans if not _claimed(Path(p).name, with_sidecar)]
    return found


class _InsideRoot:
    """Tells which paths name a file directly inside results_dir, resolving each folder once."""

    def __init__(self, root: Path) -> None:
        self.root = os.path.realpath(root)
        self._folders: dict[str, bool] = {}

    def add_to(self, names: set[str], path: str) -> None:
        """Add the file name of ``path`` to ``names`` if the file is directly in results_dir."""
        folder, name = os.path.split(os.path.abspath(path))
        inside = self._folders.get(folder)
        if inside is None:
            inside = self._folders[folder] = os.path.realpath(folder) == self.root
        if inside:
            names.add(name)


def _claimed(name: str, ids: set[str]) -> bool:
    """Whether file ``name`` is ``{id}{suffix}`` for one of ``ids`` (the suffix is unknown)."""
    if name in ids:
        return True
    return any(name[:i] in ids for i, char in enumerate(name) if char == ".")


def _repair(store: _Store, disk: Disk, found: _Findings, *, prune: bool) -> dict[str, list[str]]:
    """Fix what can be fixed without guessing; return what was done, by kind."""
    table = store.table
    done: dict[str, list[str]] = {}
    with store.engine.begin() as conn:
        if store.claims is not None and found.stale_claims:
            claims = store.claims
            for claim in found.stale_claims:
                # Compare-and-set: a claim taken over meanwhile has another owner and stays.
                conn.execute(
                    sa.delete(claims).where(
                        claims.c.table_name == table.name,
                        claims.c.id == claim["id"],
                        claims.c.owner == claim["owner"],
                    )
                )
            done["stale_claims_cleared"] = [claim["id"] for claim in found.stale_claims]
        rows = [disk.read_sidecar(run_id) for run_id in found.sidecars]
        if rows:
            _write(conn, table, rows, overwrite=True)
            done["sidecars_ingested"] = list(found.sidecars)
        journalled: list[dict[str, Any]] = []
        for path, _runs in found.journals:
            journalled += [
                row
                for row in disk.read_journal(Path(path))
                if isinstance(row.get("id"), str) and os.path.isfile(str(row.get("result_file")))
            ]
        if journalled:
            # A row written since the journal (a later re-run) is newer: keep it.
            _write(conn, table, journalled, overwrite=False)
            done["journal_runs_ingested"] = [row["id"] for row in journalled]
        ingested = [row["id"] for row in rows + journalled]
        if store.failures is not None and ingested:
            failures = store.failures
            for i in range(0, len(ingested), _ID_CHUNK):
                conn.execute(
                    sa.delete(failures).where(
                        failures.c.table_name == table.name,
                        failures.c.id.in_(ingested[i : i + _ID_CHUNK]),
                    )
                )
    for path, _runs in found.journals:
        Path(path).unlink(missing_ok=True)
    for run_id in found.sidecars:
        # The row is committed: the old result kept aside and the journal entry are done with.
        disk.discard_aside(run_id)
        disk.remove_sidecar(run_id)
    for run_id, _why in found.bad_sidecars:
        disk.remove_sidecar(run_id)
    if found.bad_sidecars:
        done["bad_sidecars_removed"] = [run_id for run_id, _ in found.bad_sidecars]
    restored = []
    with_sidecar = set(found.sidecars)
    for run_id in found.aside:
        if run_id in with_sidecar:
            continue
        suffix = _suffix_of(store, run_id)
        if suffix is not None and Disk(disk.root, suffix).restore_aside(run_id):
            restored.append(run_id)
    if restored:
        done["aside_restored"] = restored
    if prune:
        gone = [run_id for run_id, path in found.missing if not os.path.exists(path)]
        with store.engine.begin() as conn:
            for i in range(0, len(gone), _ID_CHUNK):
                conn.execute(sa.delete(table).where(table.c.id.in_(gone[i : i + _ID_CHUNK])))
        if gone:
            done["rows_pruned"] = gone
    return done


def _write(
    conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]], *, overwrite: bool
) -> None:
    """Upsert journalled rows (or, without ``overwrite``, insert those not yet stored)."""
    from entropic.store import (
        _generic_insert_missing,
        _generic_upsert,
        _insert_missing_statement,
        _upsert_statement,
    )

    names = {column.name for column in table.columns}
    dialect = conn.dialect.name
    statement = (_upsert_statement if overwrite else _insert_missing_statement)(table, dialect)
    for row in rows:
        # One statement a row: rows from different journals may have different keys.
        clean = {key: value for key, value in row.items() if key in names}
        if statement is not None:
            conn.execute(statement, [clean])
        elif overwrite:
            _generic_upsert(conn, table, [clean])
        else:
            _generic_insert_missing(conn, table, [clean])


def _suffix_of(store: _Store, run_id: str) -> str | None:
    """The file suffix of ``run_id``'s row, read off its result_file, or None without a row."""
    table = store.table
    with store.engine.connect() as conn:
        path = conn.execute(
            sa.select(table.c.result_file).where(table.c.id == run_id)
        ).scalar_one_or_none()
    if path is None or not Path(path).name.startswith(run_id):
        return None
    return Path(path).name[len(run_id) :]


def _print_check(
    store: _Store, disk: Disk, found: _Findings, repaired: dict[str, list[str]], out: TextIO
) -> None:
    for kind, ids in repaired.items():
        out.write(f"repaired: {kind.replace('_', ' ')}: {len(ids)}\n")
    body: list[list[Any]] = []
    body += [["missing file", i, p] for i, p in found.missing]
    body += [["empty file", i, p] for i, p in found.empty]
    body += [["orphan file", "", p] for p in found.orphans]
    body += [
        ["sidecar", i, "finished run not in the table (--repair ingests it)"]
        for i in found.sidecars
    ]
    body += [["bad sidecar", i, f"{why} (--repair removes it)"] for i, why in found.bad_sidecars]
    body += [
        ["kept aside", i, "old result of an unfinished re-run (--repair restores it)"]
        for i in found.aside
    ]
    body += [
        ["journal", "", f"{p}: {n} finished run(s) of a dead sweep (--repair ingests them)"]
        for p, n in found.journals
    ]
    body += [
        [
            "stale claim",
            c["id"],
            f"{c['owner']}, heartbeat {_cell(c['heartbeat_at'])} (--repair clears it)",
        ]
        for c in found.stale_claims
    ]
    where = f"{store.table.name} in {store.url} with {disk.root}"
    if body:
        _print_table(["problem", "id", "detail"], body, out)
        out.write(f"{found.count()} problem(s) in {where}\n")
    else:
        out.write(f"no problems in {where}\n")
    if found.in_progress:
        out.write(f"{len(found.in_progress)} run(s) in progress (claimed by live processes)\n")
    if found.missing and not repaired.get("rows_pruned"):
        out.write("rows whose file is gone stay until `entropic check --repair --prune`\n")


# -- hash ----------------------------------------------------------------------------------


def _cmd_hash(args: argparse.Namespace) -> int:
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
        if len(batch) == _BATCH:
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

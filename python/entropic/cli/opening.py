"""Opening a store from its database URL and results folder alone: the table is reflected.

The store opened here writes through the same ``Index`` a Store uses (the same
engine settings, the same statements), so ``entropic check --repair`` does
exactly what a new Store does.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from entropic._storage.columns import rule_for
from entropic._storage.disk import Disk
from entropic._storage.index import Index, create_engine, is_memory_sqlite, mask_url
from entropic._storage.query import FILTERABLE_RESERVED, conditions, parameter_columns
from entropic._storage.tables import CLAIMS, FAILURES
from entropic.cli.format import CLIError, first_line
from entropic.models import RESERVED_COLUMNS

__all__ = ["Opened", "db_url", "open_store", "where", "with_store"]

OWN_TABLES = (FAILURES.name, CLAIMS.name)


@dataclass
class Opened:
    """A store opened without its model: its index, the reflected table and entropic's own."""

    index: Index
    url: str  # secrets masked
    table: sa.Table
    failures: sa.Table | None
    claims: sa.Table | None
    params: list[str]

    @property
    def engine(self) -> sa.Engine:
        return self.index.engine


def db_url(text: str) -> sa.URL:
    """``--db`` read as a SQLAlchemy URL; CLIError with an example if it is not one."""
    try:
        return sa.make_url(text)
    except sa.exc.ArgumentError:
        raise CLIError(
            "--db is not a SQLAlchemy database URL; use e.g. sqlite:///db.sqlite3 or "
            "postgresql+psycopg://user@host/dbname"
        ) from None


def open_store(args: argparse.Namespace) -> Opened:
    """Connect to ``--db`` and reflect the store's table; CLIError with the fix if that fails."""
    url = db_url(args.db)
    shown = mask_url(url)
    if url.get_backend_name() == "sqlite":
        if is_memory_sqlite(url):
            raise CLIError("--db names an in-memory SQLite database, which is empty; pass a file")
        database = Path(str(url.database))
        if not database.is_file():
            # Connecting would create an empty database file: refuse instead.
            raise CLIError(f"no SQLite database at {database.resolve()}; check --db ({shown})")
        url = url.set(database=str(database.resolve()))
    try:
        engine = create_engine(url)
    except (ImportError, sa.exc.ArgumentError) as exc:
        raise CLIError(f"cannot use --db {shown}: {exc}") from None
    try:
        try:
            names = sorted(sa.inspect(engine).get_table_names())
        except sa.exc.SQLAlchemyError as exc:
            raise CLIError(f"cannot open database {shown}: {first_line(exc)}") from None
        table = _pick_table(engine, names, args.table or _marked_table(args), shown)
        own = {
            name: sa.Table(name, sa.MetaData(), autoload_with=engine)
            for name in OWN_TABLES
            if name in names
        }
    finally:
        engine.dispose()
    return Opened(
        Index(url, table),
        shown,
        table,
        own.get(FAILURES.name),
        own.get(CLAIMS.name),
        parameter_columns(table),
    )


def _marked_table(args: argparse.Namespace) -> str | None:
    """The table the results folder says it belongs to, if it says."""
    results = getattr(args, "results", None)
    if not results or not Path(results).is_dir():
        return None
    marker = Disk(results, "", readonly=True).read_marker()
    return None if marker is None else str(marker["table"])


def _pick_table(engine: sa.Engine, names: list[str], wanted: str | None, shown: str) -> sa.Table:
    """The store's table: ``wanted``, else the only table with entropic's reserved columns."""
    inspector = sa.inspect(engine)

    def is_store(name: str) -> bool:
        columns = {column["name"] for column in inspector.get_columns(name)}
        return set(RESERVED_COLUMNS) <= columns

    stores = [name for name in names if name not in OWN_TABLES and is_store(name)]
    if wanted is not None:
        if wanted not in names:
            raise CLIError(
                f"no table {wanted!r} in {shown}; its store tables are "
                f"{', '.join(stores) or '(none)'}"
            )
        if wanted not in stores:
            raise CLIError(
                f"table {wanted!r} is not an entropic store (it lacks the columns "
                f"{', '.join(RESERVED_COLUMNS)} or is one of entropic's own)"
            )
        name = wanted
    else:
        if not stores:
            raise CLIError(f"no entropic store table in {shown}; check --db")
        if len(stores) > 1:
            raise CLIError(
                f"{shown} holds several store tables ({', '.join(stores)}); pick one with --table"
            )
        name = stores[0]
    return sa.Table(name, sa.MetaData(), autoload_with=engine)


def with_store(
    args: argparse.Namespace, command: Callable[[Opened, argparse.Namespace], int]
) -> int:
    opened = open_store(args)
    try:
        return command(opened, args)
    finally:
        opened.index.close()


def where(opened: Opened, items: list[str]) -> list[Any]:
    """SQL conditions from ``COLUMN=VALUE`` texts, each VALUE read as its column's type."""
    equals: dict[str, Any] = {}
    table = opened.table
    dialect = opened.index.dialect
    filterable = [*opened.params, *FILTERABLE_RESERVED]
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise CLIError(f"--where {item!r} is not COLUMN=VALUE, e.g. --where n=100")
        if name not in filterable:
            raise CLIError(
                f"--where {item!r}: {name!r} is not a column of {table.name}; "
                f"its columns are {', '.join(filterable)}"
            )
        if name in equals:
            raise CLIError(f"--where names {name!r} twice; give each column once")
        rule = rule_for(table.c[name], table.name, dialect)
        if text.lower() == "null" and not rule.textual:
            equals[name] = None
            continue
        if not rule.matchable:
            raise CLIError(
                f"--where {item!r}: {rule.target}, which only matches null (JSON equality "
                "differs between databases)"
            )
        try:
            equals[name] = rule.parse(text)
        except ValueError:
            raise CLIError(f"--where {item!r}: {rule.target}; give {rule.text_wants}") from None
    try:
        return conditions(table, equals, owner=table.name, dialect=dialect)
    except (TypeError, ValueError) as exc:
        raise CLIError(f"--where: {exc}") from None

"""Statements compiled once and run with the driver's own parameters.

A sweep writes and reads rows in batches of hundreds. Through SQLAlchemy's
executemany every row's values go through its parameter machinery, which costs
more than the database's own work. The statements here are compiled once per
engine from the same SQLAlchemy constructs; each value goes only through the
column type's own bind processor (or result processor, for reads), exactly the
conversion SQLAlchemy applies, and the batch goes to the driver in one call.

Only SQLite and PostgreSQL get these; ``compile_write``/``compile_select``
return None elsewhere and the caller keeps SQLAlchemy's path.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from operator import itemgetter
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Dialect

__all__ = [
    "DriverSelect",
    "DriverWrite",
    "Processor",
    "bind_processor",
    "compile_select",
    "compile_write",
    "placeholder",
    "wrap_value_error",
]

Processor = Callable[[Any], Any]

#: The dialects whose drivers take these statements.
_DIALECTS = frozenset({"sqlite", "postgresql"})


def placeholder(dialect: Dialect) -> str | None:
    """The positional parameter marker of ``dialect``'s driver, or None."""
    if dialect.name not in _DIALECTS:
        return None
    if dialect.paramstyle == "qmark":
        return "?"
    if dialect.paramstyle in ("format", "pyformat"):
        return "%s"
    return None


def wrap_value_error(exc: Exception, sql: str) -> sa.exc.StatementError:
    """A value a bind processor refused, raised as SQLAlchemy raises it."""
    return sa.exc.StatementError(f"({type(exc).__name__}) {exc}", sql, None, exc)


def bind_processor(type_: Any, dialect: Dialect) -> Processor | None:
    """The conversion SQLAlchemy applies to a value of ``type_`` it binds on ``dialect``."""
    processor: Processor | None = type_.dialect_impl(dialect).bind_processor(dialect)
    return processor


class DriverWrite:
    """An INSERT (or upsert) of whole rows, run as one driver executemany per batch."""

    def __init__(self, statement: Any, dialect: Dialect, keys: frozenset[str]) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql: str = compiled.string
        binds = compiled.binds
        names = list(compiled.positiontup) if compiled.positional else list(binds)
        self.positional = bool(compiled.positional)
        escaped = compiled.escaped_bind_names
        self.names = [escaped.get(name, name) for name in names]
        self.keys = [binds[name].key for name in names]
        if set(self.keys) != keys or len(self.keys) != len(keys):
            raise ValueError("the statement does not bind each column once")
        self.keyset = keys
        self._get = itemgetter(*self.keys)
        self._processors = [
            (i, processor)
            for i, name in enumerate(names)
            if (processor := bind_processor(binds[name].type, dialect)) is not None
        ]

    def accepts(self, rows: Sequence[Mapping[str, Any]]) -> bool:
        """Whether every row holds exactly the statement's columns (else SQLAlchemy's path)."""
        keyset = self.keyset
        return all(row.keys() == keyset for row in rows)

    def parameters(self, rows: Sequence[Mapping[str, Any]]) -> list[Any]:
        """The driver parameters of ``rows``; a refused value raises as SQLAlchemy would."""
        get = self._get
        processors = self._processors
        try:
            if len(self.keys) == 1:
                batch = [[get(row)] for row in rows]
            else:
                batch = [list(get(row)) for row in rows]
            for values in batch:
                for i, processor in processors:
                    values[i] = processor(values[i])
        except (TypeError, ValueError, AttributeError, OverflowError, UnicodeError) as exc:
            raise wrap_value_error(exc, self.sql) from exc
        if self.positional:
            return [tuple(values) for values in batch]
        names = self.names
        return [dict(zip(names, values, strict=True)) for values in batch]

    def execute(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        conn.exec_driver_sql(self.sql, self.parameters(rows))


def compile_write(statement: Any, dialect: Dialect, keys: frozenset[str]) -> DriverWrite | None:
    """``statement`` (an insert of the columns ``keys``) as a DriverWrite, or None."""
    if statement is None or dialect.name not in _DIALECTS:
        return None
    try:
        return DriverWrite(statement, dialect, keys)
    except (ValueError, KeyError, sa.exc.CompileError):
        return None


class DriverSelect:
    """``SELECT columns FROM table WHERE id IN (ids)``, values through their result processors."""

    def __init__(
        self,
        columns: Sequence[sa.Column[Any]],
        id_column: sa.Column[Any],
        dialect: Dialect,
        json_result: Processor | None = None,
    ):
        self.columns = list(columns)
        #: Used for JSON columns instead of their type's processor (None: the type's).
        self.json_result = json_result
        self.id_column = id_column
        self.dialect = dialect
        self._by_count: dict[int, str] = {}
        self._processors: dict[tuple[Any, ...], list[tuple[int, Processor]]] = {}
        self._array = dialect.name == "postgresql"
        if self._array:
            ids = sa.bindparam("ids", type_=postgresql.ARRAY(id_column.type))
            statement = sa.select(*self.columns).where(id_column == sa.any_(ids))
            self._array_sql: str = statement.compile(dialect=dialect).string

    def sql(self, count: int) -> str:
        """The statement for ``count`` ids."""
        if self._array:
            return self._array_sql
        sql = self._by_count.get(count)
        if sql is None:
            statement = sa.select(*self.columns).where(
                self.id_column.in_([f"id{i}" for i in range(count)])
            )
            compiled = statement.compile(
                dialect=self.dialect, compile_kwargs={"render_postcompile": True}
            )
            sql = self._by_count[count] = compiled.string
        return sql

    def fetch(
        self, conn: Connection, ids: Sequence[str]
    ) -> tuple[Sequence[Sequence[Any]], list[tuple[int, Processor]]]:
        """The stored rows of ``ids`` as the driver gives them, and what turns them into
        Python values: ``(position, result processor)`` of each column that needs one."""
        if not ids:
            return [], []
        if self._array:
            result = conn.exec_driver_sql(self._array_sql, {"ids": list(ids)})
        else:
            result = conn.exec_driver_sql(self.sql(len(ids)), tuple(ids))
        description = result.cursor.description
        fetched = result.fetchall()
        codes = tuple(column[1] for column in description)
        processors = self._processors.get(codes)
        if processors is None:
            processors = self._processors[codes] = self._result_processors(codes)
        return fetched, processors

    def _result_processors(self, codes: tuple[Any, ...]) -> list[tuple[int, Processor]]:
        dialect = self.dialect
        found: list[tuple[int, Processor]] = []
        for i, (column, code) in enumerate(zip(self.columns, codes, strict=True)):
            if self.json_result is not None and isinstance(column.type, sa.JSON):
                found.append((i, self.json_result))
                continue
            processor = column.type.dialect_impl(dialect).result_processor(dialect, code)
            if processor is not None:
                found.append((i, processor))
        return found


def compile_select(
    columns: Sequence[sa.Column[Any]],
    id_column: sa.Column[Any],
    dialect: Dialect,
    json_result: Processor | None = None,
) -> DriverSelect | None:
    """A DriverSelect of ``columns`` by id, or None where the driver path is not used.

    ``json_result``, if given, reads JSON columns instead of their type's result
    processor: it must give exactly what that processor gives.
    """
    if dialect.name not in _DIALECTS:
        return None
    return DriverSelect(columns, id_column, dialect, json_result)

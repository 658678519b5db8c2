"""Statements compiled once and run with the driver's own parameters.

A sweep writes and reads rows in batches of hundreds. Through SQLAlchemy's
executemany every row's values go through its parameter machinery, which costs
more than the database's own work. The statements here are compiled once per
engine from the same SQLAlchemy constructs; each value goes only through the
column type's own bind processor (or result processor, for reads), exactly the
conversion SQLAlchemy applies, and the batch goes to the driver in one call.

Only SQLite and PostgreSQL get these; ``compile_write``/``compile_select``
return None elsewhere and the caller keeps SQLAlchemy's path, and ``DriverIds``
takes SQLAlchemy's path itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from operator import itemgetter
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Dialect

__all__ = [
    "SQLITE_DATETIME_FORMAT",
    "DriverIds",
    "DriverSelect",
    "DriverWrite",
    "Processor",
    "bind_processor",
    "compile_select",
    "compile_write",
    "padded",
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
    """The conversion SQLAlchemy applies to a value of ``type_`` it binds on ``dialect``.

    SQLite's DATETIME in its default storage format gets the same text written
    by ``datetime.isoformat`` (a fifth of the cost) for plain naive datetimes.
    """
    impl = type_.dialect_impl(dialect)
    processor: Processor | None = impl.bind_processor(dialect)
    if (
        processor is not None
        and isinstance(impl, sqlite.DATETIME)
        and getattr(impl, "_storage_format", None) == SQLITE_DATETIME_FORMAT
    ):
        return _sqlite_datetime(processor)
    return processor


#: SQLAlchemy's default text of an SQLite DATETIME value.
SQLITE_DATETIME_FORMAT = (
    "%(year)04d-%(month)02d-%(day)02d %(hour)02d:%(minute)02d:%(second)02d.%(microsecond)06d"
)


def _sqlite_datetime(processor: Processor) -> Processor:
    """``processor`` (SQLite's DATETIME bind conversion), faster for naive datetimes."""

    def process(value: Any) -> Any:
        if type(value) is datetime and value.tzinfo is None:
            return value.isoformat(" ", "microseconds")
        return processor(value)

    return process


def padded(ids: Sequence[str]) -> Sequence[str]:
    """``ids`` (not empty) padded with its last id up to the next power of two.

    An ``IN`` list matches a repeated id once, and a statement is then compiled
    for a few counts of ids only, not for every count a sweep happens to need.
    """
    count = len(ids)
    size = 1 << (count - 1).bit_length()
    return ids if size == count else [*ids, *[ids[-1]] * (size - count)]


class DriverWrite:
    """An INSERT (or upsert) of whole rows, run as one driver executemany per batch."""

    def __init__(
        self,
        statement: Any,
        dialect: Dialect,
        keys: frozenset[str],
        json_bind: Processor | None = None,
    ) -> None:
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
        self._processors = []
        for i, name in enumerate(names):
            type_ = binds[name].type
            processor = bind_processor(type_, dialect)
            if processor is not None and json_bind is not None and _stock_json(type_, dialect):
                processor = _dicts_by(json_bind, processor)
            if processor is not None:
                self._processors.append((i, processor))

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


def _stock_json(type_: Any, dialect: Dialect) -> bool:
    """Whether SQLAlchemy binds ``type_`` on ``dialect`` with JSON's own conversion."""
    impl = type_.dialect_impl(dialect)
    return isinstance(impl, sa.JSON) and type(impl).bind_processor is sa.JSON.bind_processor


def _dicts_by(json_bind: Processor, processor: Processor) -> Processor:
    """A JSON column's bind ``processor``, with dicts written by ``json_bind`` directly."""

    def process(value: Any) -> Any:
        if type(value) is dict:
            return json_bind(value)
        return processor(value)

    return process


def compile_write(
    statement: Any,
    dialect: Dialect,
    keys: frozenset[str],
    json_bind: Processor | None = None,
) -> DriverWrite | None:
    """``statement`` (an insert of the columns ``keys``) as a DriverWrite, or None.

    ``json_bind``, if given, writes the dicts of JSON columns: it must give exactly
    what their type's processor gives for a dict (the engine's JSON serializer).
    """
    if statement is None or dialect.name not in _DIALECTS:
        return None
    try:
        return DriverWrite(statement, dialect, keys, json_bind)
    except (ValueError, KeyError, sa.exc.CompileError):
        return None


class DriverSelect:
    """``SELECT columns FROM table WHERE id IN (ids)``, or of every row (``scan``), values
    through their result processors."""

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
        table = id_column.table
        self._scan_sql = sa.select(*self.columns).select_from(table).compile(dialect=dialect).string
        # Counts the table's rows up to a bound: never more work than the bound. Run
        # through SQLAlchemy (once per look-up, not per row).
        upto = sa.select(sa.literal(1)).select_from(table).limit(sa.bindparam("bound"))
        self._count = sa.select(sa.func.count()).select_from(upto.subquery())

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
            ids = padded(ids)
            result = conn.exec_driver_sql(self.sql(len(ids)), tuple(ids))
        cursor = result.cursor
        # The driver's own rows (tuples), without wrapping each in a Row.
        try:
            fetched = cursor.fetchall()
            processors = self._processors_of(cursor.description)
        finally:
            result.close()
        return fetched, processors

    def has_at_most(self, conn: Connection, rows: int) -> bool:
        """Whether the table holds at most ``rows`` rows (counting no further than one more)."""
        counted = conn.execute(self._count, {"bound": rows + 1}).scalar_one()
        return int(counted) <= rows

    @contextmanager
    def scan(
        self, conn: Connection, batch: int
    ) -> Iterator[tuple[Iterator[Sequence[Sequence[Any]]], list[tuple[int, Processor]]]]:
        """Every row of the table, ``batch`` at a time as the driver gives them (one
        statement: one snapshot of the table), and their processors as ``fetch``'s.
        The statement ends when the ``with`` block does, however it ends.

        SQLite's driver steps through the rows as they are fetched; PostgreSQL's
        receives them all first, in its own compact form (taken only for a look-up of
        at least as many ids, whose records take several times that memory).
        """
        result = conn.exec_driver_sql(self._scan_sql)
        cursor = result.cursor

        def batches() -> Iterator[Sequence[Sequence[Any]]]:
            # Until an empty batch, whatever its type: pg8000 gives tuples, not lists.
            while rows := cursor.fetchmany(batch):
                yield rows

        try:
            yield batches(), self._processors_of(cursor.description)
        finally:
            result.close()

    def _processors_of(self, description: Any) -> list[tuple[int, Processor]]:
        codes = tuple(column[1] for column in description)
        processors = self._processors.get(codes)
        if processors is None:
            processors = self._processors[codes] = self._result_processors(codes)
        return processors

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
    """A DriverSelect of ``columns`` (by id, or of every row), or None where the driver
    path is not used.

    ``json_result``, if given, reads JSON columns instead of their type's result
    processor: it must give exactly what that processor gives.
    """
    if dialect.name not in _DIALECTS:
        return None
    return DriverSelect(columns, id_column, dialect, json_result)


class DriverIds:
    """A statement over a list of ids, run with the driver's own parameters where it can.

    ``make(condition)`` builds the statement from the id condition; its other values
    are named bind parameters, given to ``execute`` by name. On SQLite the statement
    is compiled once per count of ids (``id IN (?, ...)``, the ids padded); on
    PostgreSQL once (``id = ANY(array)``). Elsewhere, or when its other values need
    a conversion, it goes through SQLAlchemy with an expanding ``IN``.
    """

    def __init__(
        self, make: Callable[[Any], Any], id_column: sa.Column[Any], dialect: Dialect
    ) -> None:
        self.make = make
        self.id_column = id_column
        self.dialect = dialect
        # count -> (SQL, names bound before the ids, names bound after them)
        self._by_count: dict[int, tuple[str, list[str], list[str]]] = {}
        self._array_sql: str | None = None
        #: SQLAlchemy's statement, where the driver's path is not taken.
        self._statement: Any = None
        try:
            if dialect.name == "postgresql":
                ids = sa.bindparam("ids", type_=postgresql.ARRAY(id_column.type))
                self._array_sql = self._compile(id_column == sa.any_(ids), [])[0]
            elif dialect.name == "sqlite":
                self._sql(1)  # refuses here a statement it cannot run
            else:
                raise ValueError(f"no driver path for {dialect.name}")
        except (ValueError, KeyError, sa.exc.CompileError):
            self._statement = make(id_column.in_(sa.bindparam("ids", expanding=True)))

    def _compile(self, condition: Any, id_names: list[str]) -> tuple[str, list[str], list[str]]:
        dialect = self.dialect
        compiled = self.make(condition).compile(dialect=dialect)
        for name, bind in compiled.binds.items():
            if name != "ids" and bind_processor(bind.type, dialect) is not None:
                raise ValueError(f"parameter {name} needs a conversion")
        if not id_names:  # the array: one parameter, named
            return compiled.string, [], []
        if not compiled.positional:
            raise ValueError("the driver takes named parameters")
        names = list(compiled.positiontup)
        start = names.index(id_names[0])
        if names[start : start + len(id_names)] != id_names:
            raise ValueError("the ids are not bound together")
        return compiled.string, names[:start], names[start + len(id_names) :]

    def _sql(self, count: int) -> tuple[str, list[str], list[str]]:
        found = self._by_count.get(count)
        if found is None:
            id_names = [f"entropic_id{i}" for i in range(count)]
            marks = [sa.bindparam(name, type_=self.id_column.type) for name in id_names]
            found = self._by_count[count] = self._compile(self.id_column.in_(marks), id_names)
        return found

    def execute(self, conn: Connection, ids: Sequence[str], values: Mapping[str, Any]) -> Any:
        """Run the statement for ``ids`` (at most a few hundred) with ``values`` by name."""
        if not ids:
            return None
        if self._statement is not None:
            return conn.execute(self._statement, {**values, "ids": list(ids)})
        if self._array_sql is not None:
            return conn.exec_driver_sql(self._array_sql, {**values, "ids": list(ids)})
        ids = padded(ids)
        sql, before, after = self._sql(len(ids))
        return conn.exec_driver_sql(
            sql, (*[values[name] for name in before], *ids, *[values[name] for name in after])
        )

"""What entropic needs from a model, and the validation of params against it.

``Schema`` is worked out once per model and dialect: the parameter columns, a
``Rule`` (``columns.py``) for each, which columns params may omit and what fills
them. ``Schema.prepare`` turns a params dict into a ``Point`` (the hashed key, the
column values, a JSON-clean custom_data) or raises, before anything runs.
``RowSpec`` is the part of it that builds and reads rows; it is plain data, so
it travels to the workers that run points.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.schema import CreateColumn

from entropic import hashing
from entropic._storage.columns import Rule, check_json_text, is_jsonb, json_clean, names, rule_for
from entropic._storage.disk import check_id
from entropic.errors import ReservedColumnError, SchemaDriftError
from entropic.models import RESERVED_COLUMNS, Base, utcnow

__all__ = ["RESERVED", "Point", "RowSpec", "Schema", "check_model", "refuse_drift"]

RESERVED = frozenset(RESERVED_COLUMNS)


@dataclass
class Point:
    """One validated parameter set: what is hashed, the column values, and its custom_data."""

    params: Mapping[str, Any]  # the caller's mapping, never modified
    key: dict[str, Any]  # params without the reserved keys: what the id is the hash of
    values: dict[str, Any]  # user column values (attribute name -> Python value)
    # A JSON-clean copy of params["custom_data"] merged with the call's **custom_data.
    custom_data: dict[str, Any]
    id: str = ""  # empty until hashed


@dataclass(frozen=True)
class RowSpec:
    """How rows of one table are built and read back from journals: plain data only."""

    column_key: dict[str, str]  # attribute name -> column key, for the parameter columns
    fill: dict[str, Any]  # scalar defaults of the columns params may omit, by column key
    table_keys: frozenset[str]  # every column key of the table
    #: Whether every parameter column's key is its attribute name (rows copy values as they are).
    same_keys: bool = field(init=False)

    def __post_init__(self) -> None:
        same = all(name == key for name, key in self.column_key.items())
        object.__setattr__(self, "same_keys", same)

    @classmethod
    def for_table(cls, table: sa.Table) -> RowSpec:
        """The spec of a table known only from the database (no model, so no defaults)."""
        keys = frozenset(column.key for column in table.columns)
        params = {name: name for name in keys if name not in RESERVED}
        return cls(params, {}, keys)

    def row(self, point: Point, result_file: str, custom_data: dict[str, Any]) -> dict[str, Any]:
        """The full row of a point, keyed by column key, as it will be stored."""
        row = dict(self.fill)
        if self.same_keys:
            row.update(point.values)
        else:
            column_key = self.column_key
            for name, value in point.values.items():
                row[column_key[name]] = value
        row["id"] = point.id
        row["result_file"] = result_file
        row["created_at"] = utcnow()
        row["custom_data"] = custom_data
        return row

    def stored_row(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """A journalled or sidecar row as the table stores it: its columns, defaults filled."""
        keys = self.table_keys
        return {**self.fill, **{k: v for k, v in row.items() if k in keys}}


def check_model(model: object) -> type[Base]:
    """Return ``model`` if it is a mapped subclass of Base keeping the reserved columns."""
    if not (isinstance(model, type) and issubclass(model, Base)):
        raise TypeError(
            f"result_cls must be a model class subclassing entropic.Base, not {model!r}"
        )
    table = getattr(model, "__table__", None)
    if not isinstance(table, sa.Table):
        raise TypeError(
            f"result_cls {model.__name__} is not mapped to a table; give it a __tablename__"
        )
    mapper = sa.inspect(model)
    for name in RESERVED_COLUMNS:
        prop = mapper.column_attrs.get(name)
        if prop is None or [c.name for c in prop.columns] != [name]:
            raise ReservedColumnError(
                f"{model.__name__} remaps the reserved column {name}; keep the one "
                "entropic.Base defines"
            )
    if [column.name for column in table.primary_key.columns] != ["id"]:
        raise ReservedColumnError(
            f"{model.__name__} adds primary key columns; id is the only primary key "
            "(use unique=True or an index for other columns)"
        )
    return model


class Schema:
    """What the Store needs from a model, worked out once: columns, rules, defaults."""

    def __init__(self, model: type[Base], dialect: str) -> None:
        mapper = sa.inspect(model)
        table = model.__table__
        assert isinstance(table, sa.Table)
        self.model = model
        self.table = table
        self.name = model.__name__
        self.dialect = dialect
        column_key: dict[str, str] = {}
        self.rules: dict[str, Rule] = {}
        fill: dict[str, Any] = {}
        self.exact = True
        required: set[str] = set()
        for prop in mapper.column_attrs:
            column = prop.columns[0]
            if prop.key in RESERVED or not isinstance(column, sa.Column):
                continue
            column_key[prop.key] = column.key
            rule = rule_for(column, self.name, dialect, name=prop.key)
            self.rules[prop.key] = rule
            self.exact &= rule.exact
            has_default = column.default is not None or column.server_default is not None
            if not column.nullable and not has_default:
                required.add(prop.key)
            elif column.server_default is not None or (
                column.default is not None and not column.default.is_scalar
            ):
                self.exact = False  # the database or a function decides: read it back
            else:
                scalar = column.default.arg if column.default is not None else None  # type: ignore[attr-defined]
                fill[column.key] = scalar
        self.checks = {name: rule.check for name, rule in self.rules.items()}
        #: How errors name each parameter (built once, not per value).
        self.labels = {name: f"params[{name!r}]" for name in self.rules}
        #: Whether the table holds custom_data as JSONB (learnt by ``adopt``).
        self.strict_custom_data = False
        self.required = frozenset(required)
        self.allowed = frozenset(column_key) | RESERVED
        plain: dict[str, tuple[int, bool, bool, int, int]] = {}
        for name, rule in self.rules.items():
            kind = rule.plain()
            if kind is not None:
                code, low, high = kind
                plain[name] = (code, rule.nullable, name in required, low, high)
        #: The spec of ``hashing.hash_plain`` (None if a required column has no plain kind).
        self.plain = plain if self.required <= plain.keys() else None
        self.columns_text = ", ".join(sorted(column_key)) or "(no parameter columns)"
        self.spec = RowSpec(column_key, fill, frozenset(column.key for column in table.columns))
        # Every mapped attribute, "id" first, and the columns that load them.
        attr_columns = [(prop.key, prop.columns[0]) for prop in mapper.column_attrs]
        #: Whether every attribute loads a column of the table as it is: not so for a
        #: column_property of an SQL expression, which only a query can give (its
        #: records are read back, through SQLAlchemy's own statements).
        self.only_columns = all(
            isinstance(column, sa.Column) and column.table is table for _, column in attr_columns
        )
        self.exact &= self.only_columns
        attr_columns.sort(key=lambda pair: pair[0] != "id")
        self.attrs = [attr for attr, _ in attr_columns]
        self.keys = [column.key for _, column in attr_columns]
        self.columns: list[sa.Column[Any]] = [column for _, column in attr_columns]  # type: ignore[misc]

    # -- params -> Point -------------------------------------------------------------------

    def prepare(self, params: Mapping[str, Any], custom_data: Mapping[str, Any]) -> Point:
        """Validate ``params`` fully (before anything runs or is written); the id is not set."""
        if type(params) is not dict and not isinstance(params, Mapping):
            raise TypeError(
                f"params must be a dict of column names to values, not {type(params).__name__}"
            )
        if not self.allowed.issuperset(params):
            self._refuse_unknown(params)
        checks = self.checks
        labels = self.labels
        key: dict[str, Any] = {}
        values: dict[str, Any] = {}
        reserved = not RESERVED.isdisjoint(params)
        for name, value in params.items():
            if reserved and name in RESERVED:
                continue
            key[name] = value
            values[name] = checks[name](value, labels[name])
        if not self.required <= values.keys():
            missing = sorted(self.required - values.keys())
            raise ValueError(
                f"params lacks required columns of {self.name}: {names(missing)}; "
                f"its columns are {self.columns_text} (give a value for each NOT NULL column)"
            )
        if not reserved and not custom_data:
            return Point(params, key, values, {}, "")
        run_id = ""
        if "id" in params:
            run_id = check_id(params["id"])
        if "result_file" in params and not isinstance(
            params["result_file"], (str, os.PathLike, type(None))
        ):
            raise TypeError(
                "params['result_file'] must be a path if given (it is ignored: the Store "
                f"chooses the path), not {type(params['result_file']).__name__}"
            )
        if "created_at" in params and not isinstance(params["created_at"], (datetime, type(None))):
            raise TypeError(
                "params['created_at'] must be a datetime if given (it is ignored: the Store "
                f"sets it), not {type(params['created_at']).__name__}"
            )
        given = params.get("custom_data")
        if given is not None and not isinstance(given, Mapping):
            raise TypeError(
                f"params['custom_data'] must be a dict, not {type(given).__name__}; "
                "pass extra values as a dict or as keyword arguments"
            )
        merged = {**given, **custom_data} if given else dict(custom_data)
        clean = json_clean(merged, "custom_data")
        if self.strict_custom_data:
            check_json_text(clean, "custom_data")
        return Point(params, key, values, clean, run_id)

    def plain_ids(self, chunk: list[dict[str, Any]]) -> list[str | None]:
        """The id of each of ``chunk`` that ``prepare`` would take exactly as it is.

        Such a point (plain values its columns take unchanged, no reserved keys) is
        valid, and its id is the hash of its params; it needs a ``prepare`` only to
        run. None for the others, which ``prepare`` validates in full.
        """
        if self.plain is None:
            return [None] * len(chunk)
        return hashing.hash_plain(chunk, self.plain)

    def plain_point(self, params: dict[str, Any], run_id: str) -> Point:
        """The Point of ``params`` that ``plain_ids`` gave ``run_id``: what ``prepare`` would
        give, without checking again (its values are taken as they are)."""
        key = dict(params)
        return Point(params, key, key, {}, run_id)

    def point(self, params: Mapping[str, Any], custom_data: Mapping[str, Any]) -> Point:
        """``prepare``, and the id: the explicit one, else the hash of the params."""
        point = self.prepare(params, custom_data)
        if not point.id:
            point.id = hashing.hash_params(point.key)
        return point

    def identify(self, params: Mapping[str, Any]) -> str:
        """The id of ``params`` for a lookup: an explicit id as is, else the hash.

        Reserved keys other than ``id`` are stripped whatever their value: a lookup
        never uses them.
        """
        if not isinstance(params, Mapping):
            raise TypeError(
                f"params must be a dict of column names to values, not {type(params).__name__}"
            )
        self._refuse_unknown(params)
        if "id" in params:
            return check_id(params["id"])
        lookup = {key: value for key, value in params.items() if key not in RESERVED}
        point = self.prepare(lookup, {})
        return hashing.hash_params(point.key)

    def _refuse_unknown(self, params: Mapping[str, Any]) -> None:
        allowed = self.allowed
        unknown = [key for key in params if key not in allowed]
        if unknown:
            raise ValueError(
                f"params has keys that are not columns of {self.name}: "
                f"{names(unknown)}; its columns are {self.columns_text} "
                "(add a column to the model or drop the key)"
            )

    # -- the table in the database ---------------------------------------------------------

    def adopt(self, existing: Sequence[Mapping[str, Any]]) -> None:
        """Take in the column types of the table as it exists (a JSON column held as JSONB).

        ``existing`` is what SQLAlchemy's inspector reports; text such a column
        refuses is then refused by ``prepare``, before anything runs.
        """
        stored = {column["name"]: column.get("type") for column in existing}
        self.strict_custom_data = is_jsonb(stored.get("custom_data"))
        for rule in self.rules.values():
            if rule.column.name in stored:
                rule.stored_as(stored[rule.column.name])

    def drift(self, existing: Sequence[Mapping[str, Any]], dialect: Dialect) -> str:
        """What keeps this model from using a table with ``existing`` columns ('' if nothing).

        ``existing`` is what SQLAlchemy's inspector reports. Both ways count: model
        columns the table lacks, and table columns the model lacks that the database
        would need a value for (NOT NULL without a default).
        """
        table = self.table
        preparer = dialect.identifier_preparer
        quoted = preparer.format_table(table)
        present = {column["name"] for column in existing}
        missing = [column for column in table.columns if column.name not in present]
        known = {column.name for column in table.columns}
        blocking = [
            column["name"]
            for column in existing
            if column["name"] not in known
            and not column.get("nullable", True)
            and column.get("default") is None
            and column.get("autoincrement") is not True
        ]
        problems = []
        if missing:
            added = [_add_column(dialect, quoted, column) for column in missing]
            nullable = [
                column.name for column, (_, loose) in zip(missing, added, strict=True) if loose
            ]
            problems.append(
                f"table {table.name!r} lacks column(s) the model {self.name} declares: "
                f"{', '.join(column.name for column in missing)}. Add them, e.g.\n  "
                + "\n  ".join(statement for statement, _ in added)
                + (
                    f"\n({', '.join(nullable)}: NOT NULL in the model, added nullable, as the "
                    "rows already there have no value for it; add it NOT NULL DEFAULT <value> "
                    "instead if the earlier runs stand for one value)"
                    if nullable
                    else ""
                )
            )
        if blocking:
            fixes = [
                line
                for column in existing
                if column["name"] in blocking
                for line in _drop_not_null(dialect, quoted, column)
            ]
            problems.append(
                f"table {table.name!r} has NOT NULL column(s) without a default that the "
                f"model {self.name} lacks: {', '.join(blocking)}, so no row of this model "
                "could be stored. Add them to the model (the model that created the table "
                "declares them), or let the table accept rows without them, e.g.\n  "
                + "\n  ".join(fixes)
            )
        if not problems:
            return ""
        return "\n".join(problems) + "\nFor real schema migrations use Alembic."


def _add_column(dialect: Dialect, table: str, column: sa.Column[Any]) -> tuple[str, bool]:
    """An ``ADD COLUMN`` of ``column`` that runs on a table with rows; and whether it is
    added nullable although the model says NOT NULL (it has no default to fill the rows)."""
    spec = str(CreateColumn(column).compile(dialect=dialect))
    if column.nullable or column.server_default is not None:
        return f"ALTER TABLE {table} ADD COLUMN {spec};", False
    default = column.default
    if default is not None and default.is_scalar:
        try:
            literal = sa.literal(default.arg, column.type).compile(  # type: ignore[attr-defined]
                dialect=dialect, compile_kwargs={"literal_binds": True}
            )
            return f"ALTER TABLE {table} ADD COLUMN {spec} DEFAULT {literal};", False
        except (sa.exc.CompileError, NotImplementedError, TypeError, ValueError):
            pass  # no SQL literal for it: added nullable, as below
    name = dialect.identifier_preparer.format_column(column)
    return f"ALTER TABLE {table} ADD COLUMN {name} {column.type.compile(dialect=dialect)};", True


def _drop_not_null(dialect: Dialect, table: str, column: Mapping[str, Any]) -> list[str]:
    """Statements, one a line, that let ``table`` take rows without ``column``."""
    quote = dialect.identifier_preparer.quote
    name = quote(column["name"])
    if dialect.name != "sqlite":
        return [f"ALTER TABLE {table} ALTER COLUMN {name} DROP NOT NULL;"]
    # SQLite cannot change a column's constraints: a nullable copy of it replaces it.
    copy = quote(f"{column['name']}_nullable")
    kind = column["type"].compile(dialect=dialect)
    return [
        f"ALTER TABLE {table} ADD COLUMN {copy} {kind};",
        f"UPDATE {table} SET {copy} = {name};",
        f"ALTER TABLE {table} DROP COLUMN {name};",
        f"ALTER TABLE {table} RENAME COLUMN {copy} TO {name};",
    ]


def refuse_drift(schema: Schema, existing: Sequence[Mapping[str, Any]], dialect: Dialect) -> None:
    """Raise SchemaDriftError if ``schema`` cannot use the table as it exists."""
    message = schema.drift(existing, dialect)
    if message:
        raise SchemaDriftError(message)

"""Queries over a store's table: partial parameter matches, counts and a pandas view.

``Store.find``, ``Store.count`` and ``Store.to_pandas`` are thin wrappers over
these functions, and the ``entropic`` command line uses ``conditions`` on a
reflected table, so a filter means the same thing in Python and in the shell.

Floats match the way ids do: the hash rounds floats to 12 decimal places, so a
filter value ``x`` matches a stored value within ``FLOAT_TOLERANCE`` of
``round(x, 12)``. That finds ``dt=0.3`` for ``dt=0.1 + 0.2`` and also rows
stored with unrounded values (``0.30000000000000004`` is kept as passed).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal
from enum import Enum
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import make_transient_to_detached

from entropic.models import RESERVED_COLUMNS, Base

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "FILTERABLE_RESERVED",
    "FLOAT_TOLERANCE",
    "conditions",
    "count",
    "find",
    "flatten_custom_data",
    "to_pandas",
]

ModelT = TypeVar("ModelT", bound=Base)

#: Half a unit in the 12th decimal place: the widest gap between a stored float
#: and the 12-decimal value it is hashed as.
FLOAT_TOLERANCE = 5e-13

#: Reserved columns a filter may name besides the parameter columns.
FILTERABLE_RESERVED = ("id", "result_file")
_UNFILTERABLE = ("created_at", "custom_data")


def conditions(table: sa.Table, equals: Mapping[str, Any], *, owner: str) -> list[Any]:
    """SQL conditions for ``column == value`` on each item of ``equals``; ValueError if unknown.

    ``owner`` names the model or table in error messages.
    """
    params = parameter_columns(table)
    allowed = set(params) | set(FILTERABLE_RESERVED)
    unknown = [name for name in equals if name not in allowed]
    if unknown:
        hint = ""
        if any(name in _UNFILTERABLE for name in unknown):
            hint = (
                "; created_at and custom_data are not matched by equality, filter them with "
                "SQLAlchemy on the model (see docs/api.md)"
            )
        raise ValueError(
            f"cannot filter on {', '.join(map(repr, unknown))}: not a column of {owner}; "
            f"its filterable columns are {', '.join(params + list(FILTERABLE_RESERVED))}{hint}"
        )
    clauses: list[Any] = []
    for name, value in equals.items():
        column = table.c[name]
        if value is None:
            clauses.append(column.is_(None))
            continue
        value = coerce(column, value, where=f"{name}={value!r}", owner=owner)
        if _is_float(column):
            target = float.__round__(value, 12)
            clauses.append(column.between(target - FLOAT_TOLERANCE, target + FLOAT_TOLERANCE))
        else:
            clauses.append(column == value)
    return clauses


def parameter_columns(table: sa.Table) -> list[str]:
    """The table's parameter columns (every column but entropic's reserved ones), in order."""
    return [column.name for column in table.columns if column.name not in RESERVED_COLUMNS]


def unwrap_numpy(value: Any) -> Any:
    """A numpy scalar as the Python number it holds (numpy is never imported here)."""
    if type(value).__module__ == "numpy" and getattr(value, "ndim", None) == 0:
        return value.item()
    return value


def coerce(column: sa.Column[Any], value: Any, *, where: str, owner: str) -> Any:
    """``value`` as the Python type ``column`` holds, or TypeError/ValueError naming the fix."""
    value = unwrap_numpy(value)
    ctype = column.type
    kind = f"{owner}.{column.name} is {type(ctype).__name__}"
    if isinstance(ctype, sa.JSON):
        raise ValueError(
            f"cannot filter {where}: {kind}, and JSON equality differs between databases; "
            "filter it with SQLAlchemy on the model (see docs/api.md)"
        )
    if isinstance(ctype, sa.Boolean):
        if not isinstance(value, bool):
            raise TypeError(f"cannot filter {where}: {kind}; pass True or False")
        return value
    if isinstance(ctype, sa.Integer):
        whole = isinstance(value, float) and math.isfinite(value) and value.is_integer()
        if isinstance(value, bool) or not (isinstance(value, int) or whole):
            raise TypeError(f"cannot filter {where}: {kind}; pass a whole number")
        return int(value)
    if _is_float(column):
        if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
            raise TypeError(f"cannot filter {where}: {kind}; pass a number")
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"cannot filter {where}: only finite numbers can be matched")
        return number
    if isinstance(ctype, sa.String) and not isinstance(ctype, sa.Enum):
        if isinstance(value, Enum) and isinstance(value.value, str):
            value = value.value
        if not isinstance(value, str):
            raise TypeError(f"cannot filter {where}: {kind}; pass a str")
    return value


def _is_float(column: sa.Column[Any]) -> bool:
    # Numeric(asdecimal=True) stores exact decimals: those match exactly.
    ctype = column.type
    return isinstance(ctype, sa.Float) and not ctype.asdecimal


def _table(model: type[Base]) -> sa.Table:
    table = model.__table__
    assert isinstance(table, sa.Table)
    return table


def _loaded_columns(model: type[Base]) -> tuple[list[str], list[sa.Column[Any]]]:
    """Every mapped attribute of ``model`` and its column, so records come back fully loaded."""
    mapper = sa.inspect(model)
    attrs = [prop.key for prop in mapper.column_attrs]
    columns = [prop.columns[0] for prop in mapper.column_attrs]
    return attrs, columns  # type: ignore[return-value]


def find(engine: Engine, model: type[ModelT], equals: Mapping[str, Any]) -> list[ModelT]:
    """Detached, fully loaded records whose columns match ``equals``, oldest first."""
    table = _table(model)
    where = conditions(table, equals, owner=model.__name__)
    attrs, columns = _loaded_columns(model)
    stmt = sa.select(*columns).where(*where).order_by(table.c.created_at, table.c.id)
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    records = []
    for row in rows:
        record = model(**dict(zip(attrs, row, strict=True)))
        make_transient_to_detached(record)
        records.append(record)
    return records


def count(engine: Engine, model: type[Base], equals: Mapping[str, Any]) -> int:
    """How many rows match ``equals`` (the same matching as ``find``)."""
    table = _table(model)
    where = conditions(table, equals, owner=model.__name__)
    stmt = sa.select(sa.func.count()).select_from(table).where(*where)
    with engine.connect() as conn:
        return int(conn.execute(stmt).scalar_one())


def to_pandas(engine: Engine, model: type[Base], equals: Mapping[str, Any]) -> pd.DataFrame:
    """The matching rows as a DataFrame; custom_data is flattened into ``custom_data.<key>``."""
    try:
        import pandas as pd
    except ImportError:
        raise ImportError(
            "Store.to_pandas needs pandas, which is not installed; run `pip install pandas` "
            "(or `pip install entropic[pandas]`)"
        ) from None
    table = _table(model)
    where = conditions(table, equals, owner=model.__name__)
    params = parameter_columns(table)
    fixed = [*params, "id", "result_file", "created_at"]
    stmt = (
        sa.select(*(table.c[name] for name in fixed), table.c.custom_data)
        .where(*where)
        .order_by(table.c.created_at, table.c.id)
    )
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    records: list[dict[str, Any]] = []
    extra: dict[str, None] = {}  # flattened custom_data keys, in first-seen order
    for row in rows:
        record = dict(zip(fixed, row[:-1], strict=True))
        flat = flatten_custom_data(row[-1] or {})
        extra.update(dict.fromkeys(flat))
        record.update(flat)
        records.append(record)
    frame: pd.DataFrame = pd.DataFrame.from_records(records, columns=[*fixed, *extra])
    return frame


def flatten_custom_data(data: Mapping[str, Any], prefix: str = "custom_data") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` as ``{"custom_data.a.b": 1}``: nested dicts become dotted keys."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}.{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_custom_data(value, name))
        else:
            flat[name] = value
    return flat

"""Queries over a store's table: partial parameter matches, counts and a pandas view.

``Store.find``, ``Store.count`` and ``Store.to_pandas`` call these functions, and
the ``entropic`` command line uses ``conditions`` on a reflected table, so a
filter means the same thing in Python and in the shell. Each value is read by
its column's rule (``columns.py``): floats match the way ids round them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from entropic._storage.columns import rule_for
from entropic._storage.index import Index
from entropic.models import RESERVED_COLUMNS

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "FILTERABLE_RESERVED",
    "conditions",
    "count",
    "find",
    "flatten_custom_data",
    "parameter_columns",
    "to_pandas",
]

#: Reserved columns a filter may name besides the parameter columns.
FILTERABLE_RESERVED = ("id", "result_file")
_UNFILTERABLE = ("created_at", "custom_data")


def parameter_columns(table: sa.Table) -> list[str]:
    """The table's parameter columns (every column but entropic's reserved ones), in order."""
    return [column.name for column in table.columns if column.name not in RESERVED_COLUMNS]


def conditions(
    table: sa.Table, equals: Mapping[str, Any], *, owner: str, dialect: str
) -> list[Any]:
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
    return [
        rule_for(table.c[name], owner, dialect).match(value, f"filter {name}")
        for name, value in equals.items()
    ]


def _where(index: Index, equals: Mapping[str, Any]) -> list[Any]:
    assert index.schema is not None
    return conditions(index.table, equals, owner=index.schema.name, dialect=index.dialect)


def find(index: Index, equals: Mapping[str, Any]) -> list[Any]:
    """Detached, fully loaded records whose columns match ``equals``, oldest first."""
    table = index.table
    schema = index.schema
    assert schema is not None
    stmt = (
        sa.select(*schema.columns)
        .where(*_where(index, equals))
        .order_by(table.c.created_at, table.c.id)
    )
    with index.engine.connect() as conn:
        rows = conn.execute(stmt).all()
    return index.builder.build_many(rows)


def count(index: Index, equals: Mapping[str, Any]) -> int:
    """How many rows match ``equals`` (the same matching as ``find``)."""
    stmt = sa.select(sa.func.count()).select_from(index.table).where(*_where(index, equals))
    with index.engine.connect() as conn:
        return int(conn.execute(stmt).scalar_one())


def to_pandas(index: Index, equals: Mapping[str, Any]) -> pd.DataFrame:
    """The matching rows as a DataFrame; custom_data is flattened into ``custom_data.<key>``."""
    try:
        import pandas as pd
    except ImportError:
        raise ImportError(
            "Store.to_pandas needs pandas, which is not installed; run `pip install pandas` "
            "(or `pip install entropic[pandas]`)"
        ) from None
    table = index.table
    params = parameter_columns(table)
    fixed = [*params, "id", "result_file", "created_at"]
    stmt = (
        sa.select(*(table.c[name] for name in fixed), table.c.custom_data)
        .where(*_where(index, equals))
        .order_by(table.c.created_at, table.c.id)
    )
    with index.engine.connect() as conn:
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

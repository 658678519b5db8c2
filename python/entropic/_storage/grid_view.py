"""A grid sweep as an N-dimensional xarray Dataset: what ``Store.to_xarray`` builds.

A grid sweep stores one row per point of a product of parameter values. Read
back as a Dataset, each parameter column that varies is a dimension whose
coordinate is its sorted distinct values; a column that does not vary is a
scalar coordinate; every custom_data value (nested keys dotted, ``a.b``), the
id, the result file and what ``read(result_file)`` gives are variables. A point
of the grid without a row is NaN. xarray and numpy are imported only here, when
the method is called.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from entropic._storage.index import Index
from entropic._storage.query import conditions, parameter_columns

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["to_xarray"]

log = logging.getLogger("entropic")

Reader = Callable[[str], Any]

#: A grid point's value that no row gave.
_MISSING: Any = object()
#: The variables every Dataset has besides custom_data's.
_FIXED = ("id", "result_file")


def _readers(read: Reader | Mapping[str, Reader] | None) -> dict[str, Reader]:
    if read is None:
        return {}
    if callable(read):
        return {"result": read}
    if isinstance(read, Mapping) and all(
        isinstance(name, str) and callable(fn) for name, fn in read.items()
    ):
        return dict(read)
    raise TypeError(
        "read must be a function of a result file's path (read=lambda path: ...), or a dict "
        "of variable names to such functions"
    )


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _key(value: Any) -> Any:
    """``value`` as a dict key: JSON values (lists, dicts) by their text."""
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True)
    return value


def _dims(dims: Sequence[str] | None, params: list[str], rows: list[dict[str, Any]]) -> list[str]:
    if dims is None:
        return [name for name in params if len({_key(row[name]) for row in rows}) > 1]
    if isinstance(dims, str):
        dims = [dims]
    chosen = list(dims)
    unknown = [name for name in chosen if name not in params]
    if unknown:
        raise ValueError(
            f"dims {', '.join(map(repr, unknown))} are not parameter columns; the parameter "
            f"columns are {', '.join(params) or '(none)'}"
        )
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"dims names a column twice: {chosen}")
    return chosen


def _coordinate(name: str, values: list[Any]) -> list[Any]:
    """The sorted distinct values of dimension ``name``; ValueError if they cannot index one."""
    distinct = {_key(value): value for value in values}
    if None in distinct:
        raise ValueError(
            f"column {name!r} is NULL in some rows, and NULL cannot label a grid point; "
            f"filter those rows out (to_xarray({name}=...)) or leave {name} out of dims"
        )
    if any(isinstance(value, (list, dict)) for value in distinct.values()):
        raise ValueError(f"column {name!r} holds JSON values, which cannot label a grid point")
    try:
        return sorted(distinct.values())
    except TypeError:
        raise ValueError(f"the values of column {name!r} cannot be ordered") from None


def _array(np: Any, shape: tuple[int, ...], cells: list[tuple[int, ...]], values: list[Any]) -> Any:
    """The values placed at their cells, NaN elsewhere: numbers as floats, else objects."""
    present = [value for value in values if value is not _MISSING]
    full = len(present) == int(np.prod(shape, dtype=np.int64))
    numbers = all(
        isinstance(value, (int, float)) and not isinstance(value, bool) for value in present
    )
    if present and numbers:
        ints = all(isinstance(value, int) and -(2**63) <= value < 2**63 for value in present)
        array = np.full(
            shape, 0 if full and ints else np.nan, dtype=np.int64 if full and ints else float
        )
    elif full and present and all(isinstance(value, bool) for value in present):
        array = np.zeros(shape, dtype=bool)
    else:
        array = np.full(shape, np.nan, dtype=object)
    for cell, value in zip(cells, values, strict=True):
        if value is not _MISSING:
            array[cell] = value
    return array


def _read_variable(
    np: Any,
    name: str,
    shape: tuple[int, ...],
    cells: list[tuple[int, ...]],
    values: list[Any],
) -> tuple[list[str], Any]:
    """(extra dims, array) of what a reader gave: scalars, or arrays of one shape per point."""
    arrays = [np.asarray(value) for value in values if value is not _MISSING]
    if not arrays or all(array.ndim == 0 for array in arrays):
        plain = [value if value is _MISSING else _scalar(value) for value in values]
        return [], _array(np, shape, cells, plain)
    shapes = {array.shape for array in arrays}
    if len(shapes) > 1:
        raise ValueError(
            f"read gave {name!r} values of different shapes {sorted(shapes)}; return one "
            "scalar, or arrays of one shape, per result file"
        )
    (inner,) = shapes
    kind = float if all(np.issubdtype(a.dtype, np.number) for a in arrays) else object
    array = np.full(shape + inner, np.nan, dtype=kind)
    for cell, value in zip(cells, values, strict=True):
        if value is not _MISSING:
            array[cell] = np.asarray(value)
    return [f"{name}_dim_{i}" for i in range(len(inner))], array


def _scalar(value: Any) -> Any:
    item = getattr(value, "item", None)
    return item() if callable(item) and getattr(value, "ndim", None) == 0 else value


def to_xarray(
    index: Index,
    where: Mapping[str, Any],
    *,
    dims: Sequence[str] | None = None,
    read: Reader | Mapping[str, Reader] | None = None,
) -> xr.Dataset:
    """The rows matching ``where`` as a Dataset over the ``dims`` parameter columns."""
    try:
        import numpy as np
        import xarray as xr
    except ImportError:
        raise ImportError(
            "Store.to_xarray needs xarray, which is not installed; run `pip install xarray` "
            "(or `pip install entropic[xarray]`)"
        ) from None
    readers = _readers(read)
    table = index.table
    schema = index.schema
    owner = schema.name if schema is not None else table.name
    params = parameter_columns(table)
    columns = [*params, "id", "result_file", "custom_data"]
    stmt = (
        sa.select(*(table.c[name] for name in columns))
        .where(*conditions(table, where, owner=owner, dialect=index.dialect))
        .order_by(table.c.created_at, table.c.id)
    )
    with index.engine.connect() as conn:
        rows = [dict(zip(columns, row, strict=True)) for row in conn.execute(stmt)]
    chosen = _dims(dims, params, rows)
    coords = {name: _coordinate(name, [row[name] for row in rows]) for name in chosen}
    shape = tuple(len(coords[name]) for name in chosen)
    position = {name: {_key(v): i for i, v in enumerate(coords[name])} for name in chosen}
    cells: list[tuple[int, ...]] = []
    seen: dict[tuple[int, ...], dict[str, Any]] = {}
    for row in rows:
        cell = tuple(position[name][_key(row[name])] for name in chosen)
        other = seen.get(cell)
        if other is not None:
            differ = [n for n in params if n not in chosen and _key(row[n]) != _key(other[n])]
            raise ValueError(
                f"rows {other['id']} and {row['id']} fall on the same grid point "
                f"({', '.join(f'{n}={row[n]!r}' for n in chosen) or 'no dims'}); they differ in "
                f"{', '.join(differ)}: add those to dims, or filter them "
                f"(to_xarray({differ[0] if differ else 'column'}=...))"
            )
        seen[cell] = row
        cells.append(cell)
    names = set(params) | set(_FIXED) | set(readers)
    data: dict[str, list[Any]] = {name: [row[name] for row in rows] for name in _FIXED}
    scalars: dict[str, Any] = {}
    for name in params:
        if name in chosen:
            continue
        values = [row[name] for row in rows]
        if len({_key(value) for value in values}) == 1:
            scalars[name] = values[0]
        else:
            data[name] = values
    extra: dict[str, list[Any]] = {}
    for number, row in enumerate(rows):
        for key, value in _flatten(row["custom_data"] or {}).items():
            name = f"custom_data.{key}" if key in names else key
            extra.setdefault(name, [_MISSING] * len(rows))[number] = value
    data.update(extra)
    variables: dict[str, Any] = {
        name: (chosen, _array(np, shape, cells, values)) for name, values in data.items()
    }
    for name, reader in readers.items():
        values = []
        for row in rows:
            path = row["result_file"]
            if not os.path.exists(path):
                log.warning("the result file of %s is missing: %s is NaN there", row["id"], name)
                values.append(_MISSING)
            else:
                values.append(reader(path))
        inner, array = _read_variable(np, name, shape, cells, values)
        variables[name] = ([*chosen, *inner], array)
    dataset: xr.Dataset = xr.Dataset(
        variables, coords={**coords, **scalars}, attrs={"entropic_table": table.name}
    )
    return dataset

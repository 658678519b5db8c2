"""The records entropic hands back: ``Base``, whose four reserved columns every user model
inherits, and ``Failure``, one recorded failure of a point."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, Column, DateTime, String, Text
from sqlalchemy.ext.mutable import MutableDict
from sqlalchemy.orm import DeclarativeBase, Mapped, MappedColumn, mapped_column

from entropic.errors import ReservedColumnError

__all__ = [
    "ID_MAX_LENGTH",
    "RESERVED_COLUMNS",
    "Base",
    "Failure",
    "Mapped",
    "mapped_column",
    "utcnow",
]

#: Columns entropic defines on every model; params keys of these names are not parameters.
RESERVED_COLUMNS: tuple[str, ...] = ("id", "result_file", "created_at", "custom_data")

#: Longest explicit id: the id is a file name stem, and file names stop at 255 bytes.
ID_MAX_LENGTH = 255


def utcnow() -> datetime:
    """Return the current UTC time as a naive datetime (what ``datetime.utcnow`` gave, unwarned)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    """Declarative base for result models: subclass it and add one column per parameter."""

    # A negative sort_order puts entropic's columns first in every table.
    id: Mapped[str] = mapped_column(String(ID_MAX_LENGTH), primary_key=True, sort_order=-4)
    result_file: Mapped[str] = mapped_column(Text, nullable=False, sort_order=-3)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=False), nullable=False, default=utcnow, sort_order=-2
    )
    custom_data: Mapped[dict[str, Any]] = mapped_column(
        MutableDict.as_mutable(JSON()), nullable=False, default=dict, sort_order=-1
    )

    def __init_subclass__(cls, **kwargs: Any) -> None:
        _check_reserved(cls)
        super().__init_subclass__(**kwargs)

    def apply_patch(self, data: Mapping[str, Any]) -> None:
        """Update this row from ``data``: ``None`` skips a column, ``custom_data`` is patched."""
        columns = set(self.__mapper__.column_attrs.keys())
        unknown = sorted(str(key) for key in data if key not in columns)
        if unknown:
            raise ValueError(
                f"apply_patch got keys that are not columns of {type(self).__name__}: "
                f"{', '.join(unknown)}; its columns are {', '.join(sorted(columns))}"
            )
        for key, value in data.items():
            if key == "custom_data":
                if value is not None:
                    self._apply_custom_data_patch(value)
            elif value is not None:
                setattr(self, key, value)

    def _apply_custom_data_patch(self, patch: Mapping[str, Any]) -> None:
        """Patch ``custom_data``: ``{}`` clears it, a key set to ``None`` goes, others merge."""
        if not isinstance(patch, Mapping):
            raise TypeError(
                f"a custom_data patch must be a dict, not {type(patch).__name__}; "
                "pass {} to clear it or {'key': None} to remove one key"
            )
        current = self.custom_data
        if current is None:  # a new object before its first flush
            self.custom_data = current = MutableDict()
        if not patch:
            current.clear()
            return
        for key, value in patch.items():
            if value is None:
                current.pop(key, None)
            else:
                current[key] = value


def _check_reserved(cls: type) -> None:
    """Refuse a subclass that declares a reserved column again, under any attribute name."""
    own = dict(vars(cls))
    names = set(inspect.get_annotations(cls)) | set(own)
    clashes = {name for name in names if name in RESERVED_COLUMNS}
    for attr, value in own.items():
        column = value.column if isinstance(value, MappedColumn) else value
        if isinstance(column, Column) and column.name in RESERVED_COLUMNS and attr != column.name:
            clashes.add(column.name)
    if clashes:
        listed = ", ".join(sorted(clashes))
        raise ReservedColumnError(
            f"{cls.__name__} redefines {listed}, reserved by entropic.Base "
            f"(reserved columns: {', '.join(RESERVED_COLUMNS)}); rename your column "
            "(e.g. run_id) or keep the inherited one"
        )


@dataclass(frozen=True)
class Failure:
    """The last recorded failure of one point (``Store.failures()``), cleared when it succeeds."""

    id: str
    params: dict[str, Any]
    exc_type: str
    message: str
    traceback: str
    host: str
    pid: int
    failed_at: datetime
    elapsed_seconds: float

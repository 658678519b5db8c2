"""The records entropic hands back: ``Base``, whose four reserved columns every user model
inherits, and ``Failure``, one recorded failure of a point."""

from __future__ import annotations

import inspect
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import JSON, Column, DateTime, String, Text
from sqlalchemy.ext.mutable import MutableDict
from sqlalchemy.orm import DeclarativeBase, Mapped, MappedColumn, mapped_column
from sqlalchemy.orm.attributes import instance_state

from entropic.errors import ReservedColumnError

__all__ = [
    "ID_MAX_LENGTH",
    "RESERVED_COLUMNS",
    "Base",
    "CustomData",
    "Failure",
    "Mapped",
    "mapped_column",
    "utcnow",
]

#: Columns entropic defines on every model; params keys of these names are not parameters.
RESERVED_COLUMNS: tuple[str, ...] = ("id", "result_file", "created_at", "custom_data")

#: Longest explicit id: the id is a file name stem, and file names stop at 255 bytes.
ID_MAX_LENGTH = 255


_EPOCH = datetime(1970, 1, 1)


def utcnow() -> datetime:
    """Return the current UTC time as a naive datetime (what ``datetime.utcnow`` gave, unwarned).

    Built from the epoch and the clock in microseconds: the same value as
    ``datetime.now(timezone.utc).replace(tzinfo=None)`` at a third of its cost
    (every finished run takes one).
    """
    return _EPOCH + timedelta(0, 0, time.time_ns() // 1000)


class _Parents:
    """The records a custom_data dict belongs to, for change tracking: almost always one.

    SQLAlchemy keeps a weak-keyed dictionary per mutable value, which costs more
    than the rest of a record. This holds one weak reference, and turns into such a
    dictionary only when the same dict is given to a second record.
    """

    __slots__ = ("_key", "_more", "_ref")

    def __init__(self, state: Any = None, key: Any = None) -> None:
        self._ref: weakref.ref[Any] | None = None if state is None else weakref.ref(state)
        self._key: Any = key
        self._more: weakref.WeakKeyDictionary[Any, Any] | None = None

    def __setitem__(self, state: Any, key: Any) -> None:
        if self._more is not None:
            self._more[state] = key
            return
        held = self._ref() if self._ref is not None else None
        if held is None or held is state:
            self._ref, self._key = weakref.ref(state), key
            return
        self._more = weakref.WeakKeyDictionary({held: self._key, state: key})
        self._ref = self._key = None

    def pop(self, state: Any, default: Any = None) -> Any:
        if self._more is not None:
            return self._more.pop(state, default)
        if self._ref is not None and self._ref() is state:
            key, self._ref, self._key = self._key, None, None
            return key
        return default

    def items(self) -> Iterator[tuple[Any, Any]]:
        if self._more is not None:
            return iter(list(self._more.items()))
        held = self._ref() if self._ref is not None else None
        return iter(() if held is None else ((held, self._key),))


class CustomData(MutableDict[str, Any]):
    """The dict in ``custom_data``: a ``MutableDict`` (in-place changes are saved on the
    next commit of a Session holding the record) with a lighter link to its record."""

    # A loaded dict keeps the weak reference its record's state already holds to the
    # record, and makes its ``_Parents`` only when something asks for them (a change,
    # another record): most loaded records are read and dropped.
    __slots__ = ("_loaded_into",)
    _loaded_into: weakref.ref[Any]

    @property
    def _parents(self) -> Any:  # the one attribute Mutable keeps its parents in
        parents = self.__dict__.get("_parents")
        if parents is None:
            # Made whole before it is kept, so another thread never sees it half-made.
            parents = _Parents()
            ref = getattr(self, "_loaded_into", None)
            record = None if ref is None else ref()
            if record is not None:
                parents[instance_state(record)] = "custom_data"
            parents = self.__dict__.setdefault("_parents", parents)
        return parents

    @classmethod
    def loaded(cls, value: Any, state: Any) -> CustomData:
        """A loaded custom_data value linked to its record's state.

        This is what the load listener SQLAlchemy's ``Mutable`` sets up does, done
        without dispatching the event (``RecordBuilder`` calls it when that listener
        is the model's only one).
        """
        if type(value) is dict:  # as the database gives it: a new dict, its one record
            data = cls(value)
            data.track_loaded(state)
            return data
        coerced = cls.coerce("custom_data", value)  # raises as the listener would
        assert isinstance(coerced, cls)
        coerced.track(state)
        return coerced

    def track_loaded(self, state: Any) -> None:
        """Link this dict, just read into the record of ``state``, to that record: by the
        weak reference the state holds to it, its parents made when first asked for.

        Only for a new dict, before anything has asked for its parents.
        """
        self._loaded_into = state.obj

    def track(self, state: Any) -> None:
        """Link this dict to the record of ``state``, so that changes to it mark the record."""
        self._parents[state] = "custom_data"


def tracks_only_custom_data(listeners: Sequence[Callable[..., Any]]) -> bool:
    """Whether ``listeners``, a model's load listeners, are only custom_data's change tracking.

    That is the listener ``Mutable`` sets up for ``Base.custom_data``, recognised by
    what its closure holds; anything else (a listener of the user's, a second
    mutable column, another SQLAlchemy) gives False, and records are then built
    with the event dispatched as usual.
    """
    if len(listeners) != 1:
        return False
    listener = listeners[0]
    if not getattr(listener, "__qualname__", "").endswith("_listen_on_attribute.<locals>.load"):
        return False
    try:
        held = inspect.getclosurevars(listener).nonlocals
    except (TypeError, ValueError):
        return False
    return (
        held.get("cls") is CustomData
        and held.get("key") == "custom_data"
        and held.get("coerce") is True
    )


class Base(DeclarativeBase):
    """Declarative base for result models: subclass it and add one column per parameter."""

    # A negative sort_order puts entropic's columns first in every table.
    id: Mapped[str] = mapped_column(String(ID_MAX_LENGTH), primary_key=True, sort_order=-4)
    result_file: Mapped[str] = mapped_column(Text, nullable=False, sort_order=-3)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=False), nullable=False, default=utcnow, sort_order=-2
    )
    custom_data: Mapped[dict[str, Any]] = mapped_column(
        CustomData.as_mutable(JSON()), nullable=False, default=dict, sort_order=-1
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
            self.custom_data = current = CustomData()
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

"""Records: detached, fully loaded model instances made from rows of column values.

``RecordBuilder`` makes what a closed Session leaves behind without the ORM's
constructor. For a model with SQLAlchemy's default instrumentation it makes them
with a loop written for the model's number of columns (``_maker_source``): each
value stored by its own statement, where updating the record's dict from pairs
of names and values costs twice as much.
"""

from __future__ import annotations

import linecache
from collections.abc import Callable, Iterable, Sequence
from functools import cached_property
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.orm import ClassManager
from sqlalchemy.orm.attributes import instance_dict, instance_state

from entropic._storage.statements import Processor
from entropic.models import Base, CustomData, tracks_only_custom_data

#: A loop that makes the records of rows: ``(rows, out, *what it needs)``, see ``_maker_source``.
Maker = Callable[..., None]


class RecordBuilder:
    """Builds detached, fully loaded records from column values without the ORM's constructor.

    What a closed Session leaves behind, at a fraction of the cost of ``Model(**values)``
    plus ``make_transient_to_detached``: a new instance state holding every attribute
    as its committed value, an identity key, and the ``load`` event fired so that
    ``custom_data`` becomes the usual change-tracking ``MutableDict``. When that
    tracking is the model's only load listener, the builder does what it does
    directly, which costs a third of the dispatch.
    """

    def __init__(self, model: type[Base], attrs: list[str]) -> None:
        mapper = sa.inspect(model)
        self.manager = mapper.class_manager
        # The class identity keys name (the base of a single-table hierarchy).
        self.identity_class = mapper.identity_key_from_primary_key((None,))[0]
        if attrs[0] != "id":
            raise ValueError(f"a row's first column must be its id, not {attrs[0]!r}")
        self.attrs = attrs
        #: Where a row holds the result_file.
        self.result_file_at = attrs.index("result_file")
        self.custom_data_at = attrs.index("custom_data")
        self.load = self.manager.dispatch.load
        # The load listeners last seen, and whether they are only custom_data's tracking.
        self._seen: tuple[Any, ...] | None = None
        self._direct = False
        # The loops made so far, by (processed positions, direct, by id).
        self._makers: dict[tuple[tuple[int, ...], bool, bool], Maker] = {}

    def build(self, values: Sequence[Any]) -> Any:
        return self.build_many([values])[0]

    def build_many(
        self, rows: Iterable[Sequence[Any]], processors: Sequence[tuple[int, Processor]] = ()
    ) -> list[Any]:
        """One record per row of column values (in ``attrs`` order, the id first).

        ``processors`` turn the values at their positions into Python values first
        (rows as the driver gives them; see ``DriverSelect.fetch``).
        """
        records: list[Any] = []
        self._make(rows, processors, records, by_id=False)
        return records

    def build_into(
        self,
        records: dict[str, Any],
        rows: Iterable[Sequence[Any]],
        processors: Sequence[tuple[int, Processor]] = (),
    ) -> None:
        """Put ``build_many``'s records in ``records`` by id (a later row of an id replaces
        what it held)."""
        self._make(rows, processors, records, by_id=True)

    def _make(
        self,
        rows: Iterable[Sequence[Any]],
        processors: Sequence[tuple[int, Processor]],
        out: list[Any] | dict[str, Any],
        *,
        by_id: bool,
    ) -> None:
        # Without other load listeners, what firing the load event would do, undispatched.
        direct = self._tracks_only_custom_data()
        making = self._making
        if making is None:
            self._make_by_new_instance(rows, processors, out, direct=direct)
            return
        processed = tuple(i for i, _ in processors)
        key = (processed, direct, by_id)
        maker = self._makers.get(key)
        if maker is None:
            shape = (len(self.attrs), self.custom_data_at, *key)
            maker = self._makers[key] = _compiled(
                _maker_source(*shape),
                # Named by all the source depends on: one name, one source.
                f"<entropic records loop {shape}>",
            )
        maker(
            rows,
            out,
            (making.state_attr, *self.attrs),
            making.cls,
            making.state,
            self.manager,
            self.identity_class,
            self.load,
            CustomData.loaded,
            *(processor for _, processor in processors),
        )

    def _make_by_new_instance(
        self,
        rows: Iterable[Sequence[Any]],
        processors: Sequence[tuple[int, Processor]],
        out: list[Any] | dict[str, Any],
        *,
        direct: bool,
    ) -> None:
        """The records of ``rows`` through ``ClassManager.new_instance``: for the models
        ``_making_of`` turns away (instrumentation or a ``__setattr__`` of their own),
        and the reading of what ``_maker_source``'s loop does."""
        new_instance = self.manager.new_instance
        attrs = self.attrs
        identity_class = self.identity_class
        convert = [(attrs[i], i, processor) for i, processor in processors]
        loaded = CustomData.loaded
        load = self.load
        for values in rows:
            record = new_instance()
            state = instance_state(record)
            held = instance_dict(record)
            held.update(zip(attrs, values, strict=True))
            for attr, i, processor in convert:
                held[attr] = processor(values[i])
            state.key = (identity_class, (values[0],), None)
            if not direct:
                load(state, None)
            elif (data := held["custom_data"]) is not None:
                held["custom_data"] = loaded(data, state)
            if isinstance(out, dict):
                out[values[0]] = record
            else:
                out.append(record)

    @cached_property
    def _making(self) -> _Making | None:
        """How ``new_instance`` makes a record, when the model keeps SQLAlchemy's default
        instrumentation and ``object.__setattr__``: a bare instance whose ``__dict__``
        holds its new state, which is where ``instance_dict`` reads its attributes.
        Records are then made by a loop written for the model's columns
        (``_maker_source``), at less than half the cost. None (use ``new_instance``)
        otherwise (``_making_of``); worked out once, on a record made both ways.
        """
        return _making_of(self.manager)

    def _tracks_only_custom_data(self) -> bool:
        # Listeners can be added at any time: checked on each call, worked out once per set.
        listeners = tuple(self.load)
        if listeners != self._seen:
            self._direct = tracks_only_custom_data(listeners)
            self._seen = listeners
        return self._direct


class _Making(NamedTuple):
    """What ``ClassManager.new_instance`` does: ``cls.__new__(cls)``, then a ``state(record,
    manager)`` kept in the new record's ``__dict__`` under ``state_attr``."""

    cls: Any  # the model class
    state: Callable[[Any, Any], Any]
    state_attr: str


def _making_of(manager: Any) -> _Making | None:
    """The ``_Making`` of ``manager``'s records, if doing it in line gives what
    ``new_instance`` gives and what SQLAlchemy's accessors read; else None.

    Only SQLAlchemy's own class manager qualifies (custom instrumentation brings its
    own), for a model that keeps ``object.__setattr__`` (``new_instance`` assigns the
    state as an attribute: a model's own ``__setattr__`` would see it) and no class
    attribute of the state's name.
    """
    cls = manager.class_
    if type(manager) is not ClassManager or cls.__setattr__ is not object.__setattr__:
        return None
    made = manager.new_instance()
    state = instance_state(made)
    held = instance_dict(made)
    names = [name for name, value in held.items() if value is state]
    if type(made) is not cls or held is not vars(made) or len(held) != 1 or len(names) != 1:
        return None
    if hasattr(cls, names[0]):
        return None
    making = _Making(cls, type(state), names[0])
    try:
        # As the loop of _maker_source makes it.
        record = making.cls.__new__(making.cls)
        new = making.state(record, manager)
        vars(record)[making.state_attr] = new
        same = (
            instance_state(record) is new
            and instance_dict(record) is vars(record)
            and new.obj() is record
            and new.manager is state.manager
            and new.class_ is state.class_
        )
    except Exception:  # a state class whose constructor takes other arguments
        return None
    return making if same else None


def _maker_source(
    columns: int,
    custom_data_at: int,
    processed: Sequence[int],
    direct: bool,
    by_id: bool,
) -> str:
    """The source of ``make(rows, out, keys, cls, new_state, manager, identity_class,
    load, loaded, *processors)``: the records of ``rows`` (``columns`` values each, the
    id first) put in ``out`` (a list, or a dict by id), each one what
    ``_make_by_new_instance`` makes of its row.

    ``keys`` are the state's attribute name, then the attributes' names in row order:
    no name becomes code, and each key is the very object given. Each row is unpacked
    into locals and each value stored into the record's ``__dict__`` by a statement of
    its own, in the order ``new_instance`` and ``update`` would store them (so records
    share their dict's keys as they do when made that way). ``processed``: the
    positions whose value goes through a processor, in the order the processors
    are passed. With ``direct``, custom_data's load listener is done in line.
    """
    values = [f"a{i}" for i in range(columns)]
    stored = list(values)
    for k, i in enumerate(processed):
        stored[i] = f"p{k}({values[i]})"
    keys = ", ".join(["ks", *(f"k{i}" for i in range(columns))])
    lines = [
        "def make(rows, out, keys, cls, new_state, manager, identity_class, load, loaded"
        + "".join(f", p{k}" for k in range(len(processed)))
        + "):",
        f"    {keys}, = keys",
        "    new = cls.__new__",
        *([] if by_id else ["    append = out.append"]),
        f"    for {', '.join(values)}, in rows:",
        "        record = new(cls)",
        "        state = new_state(record, manager)",
        "        held = record.__dict__",
        "        held[ks] = state",
    ]
    if direct:
        # What the load listener would do: a loaded dict becomes the record's CustomData.
        lines.append(f"        data = {stored[custom_data_at]}")
        stored[custom_data_at] = "data if data is None else loaded(data, state)"
    lines.extend(f"        held[k{i}] = {value}" for i, value in enumerate(stored))
    lines.append("        state.key = (identity_class, (a0,), None)")
    if not direct:
        lines.append("        load(state, None)")
    lines.append("        out[a0] = record" if by_id else "        append(record)")
    return "\n".join(lines) + "\n"


def _compiled(source: str, filename: str) -> Maker:
    """The ``make`` function ``source`` defines, its lines kept for tracebacks."""
    namespace: dict[str, Any] = {}
    exec(compile(source, filename, "exec"), namespace)
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    maker: Maker = namespace["make"]
    return maker

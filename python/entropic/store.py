"""The Store: run each parameter set once, index its result file in SQL, hand back the record.

The Store is the "index" side (database, transactions, records); ``entropic._disk``
is the "files" side (result paths, sidecar journal, old results kept aside), and
``entropic.sweep`` runs many parameter sets. A Store pickles as its configuration
and reopens its engine wherever it is unpickled.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal
from enum import Enum as PyEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm.attributes import instance_state
from sqlalchemy.pool import StaticPool
from sqlalchemy.schema import CreateColumn

from entropic import hashing, query
from entropic._disk import Disk, Journal, check_id
from entropic._tables import FAILURES, METADATA, Failure
from entropic.errors import (
    MissingResultError,
    ParamsDepthError,
    ReservedColumnError,
    SchemaDriftError,
)
from entropic.models import RESERVED_COLUMNS, Base, utcnow

if TYPE_CHECKING:
    from concurrent.futures import Executor

    import pandas as pd
    from distributed import Client

__all__ = ["ModelT", "Point", "Runner", "Store"]

log = logging.getLogger("entropic")

ModelT = TypeVar("ModelT", bound=Base)
Runner = Callable[[dict[str, Any]], None]

_RESERVED = frozenset(RESERVED_COLUMNS)
#: How long an SQLite writer waits for another process's write lock before failing.
SQLITE_BUSY_TIMEOUT_MS = 60_000
#: Ids bound per ``IN (...)`` statement, far below every dialect's bound-parameter limit.
_ID_CHUNK = 500


@dataclass
class Point:
    """One validated parameter set: what is hashed, the column values, and its custom_data."""

    params: Mapping[str, Any]  # the caller's mapping, never modified
    key: dict[str, Any]  # params without the reserved keys: what the id is the hash of
    values: dict[str, Any]  # user column values (attribute name -> Python value)
    # A JSON-clean copy of params["custom_data"] merged with the call's **custom_data.
    custom_data: dict[str, Any]
    id: str = ""  # empty until hashed


class Store(Generic[ModelT]):
    """A run cache: one table of ``result_cls`` rows, one folder of result files."""

    def __init__(
        self,
        runner: Callable[[dict[str, Any]], None],
        result_cls: type[ModelT],
        results_dir: str | Path = "./results",
        file_suffix: str = ".h5",
        db_url: str = "sqlite:///db.sqlite3",
    ) -> None:
        if not callable(runner):
            raise TypeError(
                f"runner must be a callable taking the params dict, not {type(runner).__name__}"
            )
        _check_model(result_cls)
        self._runner = runner
        self._model = result_cls
        self._disk = Disk(results_dir, file_suffix)
        self._url = _parse_db_url(db_url)
        self._engine: Engine | None = None
        self._disk.create()
        try:
            self._create_table()
            self._recover_interrupted_runs()
        except BaseException:
            self.close()
            raise

    # -- configuration, pickling, engine ---------------------------------------------------

    @property
    def runner(self) -> Callable[[dict[str, Any]], None]:
        return self._runner

    @property
    def result_cls(self) -> type[ModelT]:
        return self._model

    @property
    def results_dir(self) -> Path:
        """The absolute results_dir (a relative one is resolved when the Store is built)."""
        return self._disk.root

    @property
    def file_suffix(self) -> str:
        return self._disk.suffix

    @property
    def db_url(self) -> str:
        """The database URL with any password masked."""
        return self._url.render_as_string(hide_password=True)

    @property
    def _shared(self) -> bool:
        """Whether other processes can open this store's database (all but in-memory SQLite)."""
        return not _is_memory_sqlite(self._url)

    @property
    def engine(self) -> Engine:
        """The Store's one engine, opened on first use in each process and reused by every call."""
        if self._engine is None or self._pid != os.getpid():
            self._open()
        assert self._engine is not None
        return self._engine

    def close(self) -> None:
        """Close the engine's connections (an in-memory database is lost); later calls reopen it."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def __enter__(self) -> Store[ModelT]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Store({self._model.__name__}, results_dir={str(self._disk.root)!r}, "
            f"file_suffix={self._disk.suffix!r}, db_url={self.db_url!r})"
        )

    def __getstate__(self) -> dict[str, Any]:
        # The configuration only: engines, pools and connections never travel.
        return {
            "runner": self._runner,
            "result_cls": self._model,
            "results_dir": str(self._disk.root),
            "file_suffix": self._disk.suffix,
            "db_url": self._url.render_as_string(hide_password=False),
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        # The table and the recovery were done where the Store was built.
        self._runner = state["runner"]
        self._model = state["result_cls"]
        self._disk = Disk(state["results_dir"], state["file_suffix"])
        self._url = sa.make_url(state["db_url"])
        self._engine = None

    def _open(self) -> None:
        memory = _is_memory_sqlite(self._url)
        if self._engine is not None and not memory:
            # A forked child must not use the parent's pooled connections.
            self._engine.dispose(close=False)
        engine = _create_engine(self._url)
        self._schema = _Schema(self._model, engine.dialect.name)
        self._upsert = _upsert_statement(self._schema.table, engine.dialect.name)
        self._insert_missing = _insert_missing_statement(self._schema.table, engine.dialect.name)
        f = FAILURES.c
        self._clear_failures = sa.delete(FAILURES).where(
            f.table_name == sa.bindparam("t"), f.id.in_(sa.bindparam("ids", expanding=True))
        )
        self._immediate = engine.dialect.name == "sqlite" and not memory
        self._pid = os.getpid()
        self._engine = engine
        self._builder = _RecordBuilder(self._model, self._schema.attrs)
        if memory:
            # A new in-memory database (say, of an unpickled copy) starts empty.
            self._schema.table.create(engine, checkfirst=True)
            METADATA.create_all(engine, checkfirst=True)

    def _create_table(self) -> None:
        """Create the model's table, or check that the existing one has every model column."""
        table = self._schema_table()
        engine = self.engine
        for own in METADATA.sorted_tables:
            if not sa.inspect(engine).has_table(own.name):
                try:
                    own.create(engine, checkfirst=True)
                except sa.exc.DBAPIError:
                    if not sa.inspect(engine).has_table(own.name):
                        raise
        if not sa.inspect(engine).has_table(table.name, schema=table.schema):
            try:
                table.create(engine, checkfirst=True)
            except sa.exc.DBAPIError:
                # Another process may have created it between our check and our CREATE.
                if not sa.inspect(engine).has_table(table.name, schema=table.schema):
                    raise
            return
        existing = {c["name"] for c in sa.inspect(engine).get_columns(table.name, table.schema)}
        missing = [column for column in table.columns if column.name not in existing]
        if missing:
            raise SchemaDriftError(_drift_message(table, missing, engine))

    def _schema_table(self) -> sa.Table:
        self.engine  # noqa: B018 - opens the engine, which builds the schema
        return self._schema.table

    # -- the contract ----------------------------------------------------------------------

    def run_or_retrieve(self, params: dict[str, Any], **custom_data: Any) -> ModelT:
        """Return the cached record of ``params``, running the runner first if there is none."""
        point = self._prepare(params, custom_data)
        record = self._get(point.id)
        if record is not None:
            if os.path.exists(record.result_file):
                log.debug("entropic: hit %s", point.id)
                return record
            # A row must never vouch for a file that is gone: run the point again.
            log.warning(
                "entropic: %s is indexed but its file %s is missing; running it again",
                point.id,
                record.result_file,
            )
        return self._execute(point, had_row=record is not None)

    def run(self, params: dict[str, Any], **custom_data: Any) -> ModelT:
        """Run the runner for ``params`` even if cached, and insert or overwrite its row."""
        point = self._prepare(params, custom_data)
        return self._execute(point, had_row=self._get(point.id) is not None)

    def retrieve(self, params: dict[str, Any]) -> ModelT | None:
        """Return the record of ``params`` (or of ``params['id']``), or ``None`` on a miss."""
        return self._get(self._identify(params))

    def register(
        self, params: dict[str, Any], result_file: str | Path, **custom_data: Any
    ) -> ModelT:
        """Index a result file produced elsewhere under the id of ``params``; nothing is run."""
        point = self._prepare(params, custom_data)
        path = os.path.abspath(os.fspath(result_file))
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"cannot register {path}: no such file; write the result first, then register it"
            )
        row = self._row(point, path, point.custom_data)
        self._persist_batch([row], [], clear_failures=())
        log.info("entropic: registered %s -> %s", point.id, path)
        return self._record(row)

    def sweep(
        self,
        params: Iterable[dict[str, Any]],
        client: Client | Executor | None = None,
        *,
        progress: bool = False,
    ) -> list[ModelT]:
        """Run or retrieve every parameter set; one record per distinct id, in input order.

        Runner failures do not stop the sweep: the other points run, then
        ``SweepError`` reports them. ``client`` is a Dask ``distributed.Client`` (or a
        ``concurrent.futures.Executor``); see docs/sweeps.md.
        """
        from entropic.sweep import sweep

        return sweep(self, params, client, progress=progress)

    def failures(self) -> list[Failure]:
        """The recorded failures of points that have not succeeded since, newest first."""
        f = FAILURES.c
        query = (
            sa.select(FAILURES)
            .where(f.table_name == self._schema_table().name)
            .order_by(f.failed_at.desc(), f.id)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [Failure(**{k: v for k, v in row.items() if k != "table_name"}) for row in rows]

    def delete(self, params: dict[str, Any], remove_file: bool = False) -> bool:
        """Delete the row of ``params`` (and its file if ``remove_file``); True if there was one."""
        run_id = self._identify(params)
        table = self._schema_table()
        with self._begin_write() as conn:
            current = conn.execute(
                sa.select(table.c.result_file).where(table.c.id == run_id)
            ).scalar_one_or_none()
            if current is None:
                return False
            if remove_file and not self._disk.contains(current):
                raise ValueError(
                    f"the file of run {run_id} ({current}) is outside results_dir "
                    f"({self._disk.root}), and entropic never deletes files there; call "
                    "delete(params) without remove_file and remove the file yourself"
                )
            conn.execute(sa.delete(table).where(table.c.id == run_id))
        # A leftover journal entry would bring the row back when the next Store opens.
        self._disk.remove_sidecar(run_id)
        if remove_file:
            Path(current).unlink(missing_ok=True)
        log.info("entropic: deleted %s%s", run_id, " and its file" if remove_file else "")
        return True

    # -- identity and validation -----------------------------------------------------------

    def _prepare(
        self, params: Mapping[str, Any], custom_data: Mapping[str, Any], *, hashed: bool = True
    ) -> Point:
        """Validate ``params`` fully (before anything runs or is written) and work out its id."""
        schema = self._schema if self._engine is not None else self._load_schema()
        if not isinstance(params, Mapping):
            raise TypeError(
                f"params must be a dict of column names to values, not {type(params).__name__}"
            )
        allowed = schema.allowed
        unknown = [key for key in params if key not in allowed]
        if unknown:
            raise ValueError(
                f"params has keys that are not columns of {schema.name}: "
                f"{_names(unknown)}; its columns are {schema.columns_text} "
                "(add a column to the model or drop the key)"
            )
        checks = schema.checks
        key: dict[str, Any] = {}
        values: dict[str, Any] = {}
        for name, value in params.items():
            if name in _RESERVED:
                continue
            key[name] = value
            values[name] = checks[name](value)
        if not schema.required <= values.keys():
            missing = sorted(schema.required - values.keys())
            raise ValueError(
                f"params lacks required columns of {schema.name}: {_names(missing)}; "
                f"its columns are {schema.columns_text} (give a value for each NOT NULL column)"
            )
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
        point = Point(params, key, values, _json_clean(merged, "custom_data"), run_id)
        if hashed and not run_id:
            point.id = hashing.hash_params(key)
        return point

    def _identify(self, params: Mapping[str, Any]) -> str:
        """The id of ``params`` for a lookup: an explicit id as is, else the validated hash."""
        if isinstance(params, Mapping) and "id" in params:
            schema = self._schema if self._engine is not None else self._load_schema()
            unknown = [key for key in params if key not in schema.allowed]
            if unknown:
                raise ValueError(
                    f"params has keys that are not columns of {schema.name}: "
                    f"{_names(unknown)}; its columns are {schema.columns_text}"
                )
            return check_id(params["id"])
        return self._prepare(params, {}).id

    def _load_schema(self) -> _Schema:
        self.engine  # noqa: B018 - opens the engine, which builds the schema
        return self._schema

    def _worker_schema(self) -> None:
        """Give an unpickled Store (on a worker) its schema without opening an engine."""
        if self._engine is None and not hasattr(self, "_schema"):
            self._schema = _Schema(self._model, self._url.get_backend_name())

    # -- running and persisting ------------------------------------------------------------

    def _execute(self, point: Point, had_row: bool) -> ModelT:
        """Run one validated point, persist it and return its record."""
        row = self._run_point(point, had_row)
        self._persist([row])
        return self._record(row)

    def _run_point(
        self, point: Point, had_row: bool, journal: Journal | None = None
    ) -> dict[str, Any]:
        """Run the runner for one point and journal its row; the store is unchanged on failure.

        Returns the row, written to its sidecar but not yet to the database
        (``_persist`` does that, for one row or a batch), or to ``journal`` if given.
        With ``had_row`` the file
        at the result path is the row's: it is kept aside and put back if the run
        fails. Without, a file there is the leftover of a run that died before its
        row was written, and is replaced.
        """
        disk = self._disk
        run_id = point.id
        path = disk.result_file(run_id)
        if had_row:
            kept_old = disk.move_aside(run_id)
        else:
            with suppress(FileNotFoundError):
                os.unlink(path)
            kept_old = False
        call = {k: v for k, v in point.params.items() if k != "created_at"}
        call["result_file"] = path
        call["id"] = run_id
        call["custom_data"] = point.custom_data
        log.debug("entropic: running %s", run_id)
        start = time.perf_counter()
        try:
            self._runner(call)
            elapsed = time.perf_counter() - start
            if not os.path.isfile(path):
                raise MissingResultError(
                    f"the runner returned without writing the result file of run {run_id}: "
                    f"{path}; the runner must write to params['result_file']"
                )
            custom = call.get("custom_data")
            if not isinstance(custom, Mapping):
                raise TypeError(
                    f"the runner of run {run_id} replaced params['custom_data'] with a "
                    f"{type(custom).__name__}; it must stay a dict"
                )
            custom = _json_clean(custom, "custom_data")
            custom["elapsed_seconds"] = elapsed
            row = self._row(point, path, custom)
            if journal is not None:
                journaled = journal.append(row)
            else:
                journaled = disk.write_sidecar(run_id, row)
            if not journaled:
                log.warning(
                    "entropic: run %s has column values JSON cannot hold; it is written to "
                    "the database without a sidecar",
                    run_id,
                )
        except BaseException:
            disk.discard_result(run_id)
            if kept_old:
                disk.restore_aside(run_id)
            log.info("entropic: run %s failed after %.3f s", run_id, time.perf_counter() - start)
            raise
        log.debug("entropic: ran %s in %.3f s", run_id, elapsed)
        return row

    def _persist(self, rows: list[dict[str, Any]]) -> None:
        """Write journalled rows to the database in one transaction, then clear their journal.

        If the database write fails, the sidecars stay and the next Store ingests them.
        """
        self._persist_batch(rows, [])  # also clears the failures these runs recorded earlier
        disk = self._disk
        for row in rows:
            disk.discard_aside(row["id"])
            disk.remove_sidecar(row["id"])

    def _persist_batch(
        self,
        rows: list[dict[str, Any]],
        failures: list[dict[str, Any]],
        *,
        clear_failures: Iterable[str] | None = None,
        also: Callable[[Connection], None] | None = None,
        overwrite: bool = True,
    ) -> None:
        """One transaction: write ``rows``, clear failure records, record ``failures``.

        Failure records are cleared for ``clear_failures`` (by default, the ids of
        ``rows``) and replaced for ``failures``; ``also`` runs in the same transaction
        (a sweep releases its claims there). With ``overwrite=False`` rows already in
        the table are left as they are (ingesting a journal whose rows may be older
        than what was written since).
        """
        table = self._schema_table()
        name = table.name
        clear = [row["id"] for row in rows] if clear_failures is None else list(clear_failures)
        clear.extend(failure["id"] for failure in failures)
        with self._begin_write() as conn:
            if rows:
                if overwrite and self._upsert is not None:
                    conn.execute(self._upsert, rows)
                elif overwrite:
                    _generic_upsert(conn, table, rows)
                elif self._insert_missing is not None:
                    conn.execute(self._insert_missing, rows)
                else:
                    _generic_insert_missing(conn, table, rows)
            for i in range(0, len(clear), _ID_CHUNK):
                conn.execute(self._clear_failures, {"t": name, "ids": clear[i : i + _ID_CHUNK]})
            if failures:
                conn.execute(
                    sa.insert(FAILURES), [{**failure, "table_name": name} for failure in failures]
                )
            if also is not None:
                also(conn)

    def _row(self, point: Point, result_file: str, custom_data: dict[str, Any]) -> dict[str, Any]:
        """The full row of a point, keyed by column key, as it will be stored."""
        schema = self._schema
        row = dict(schema.fill)
        column_key = schema.column_key
        for name, value in point.values.items():
            row[column_key[name]] = value
        row["id"] = point.id
        row["result_file"] = result_file
        row["created_at"] = utcnow()
        row["custom_data"] = custom_data
        return row

    @contextmanager
    def _begin_write(self) -> Iterator[Connection]:
        """A write transaction; on an SQLite file it takes the write lock before anything else."""
        with self.engine.begin() as conn:
            if self._immediate:
                # A deferred transaction that upgrades to writing later fails at once
                # with SQLITE_BUSY when another process writes; IMMEDIATE waits for
                # the lock (busy_timeout) instead. sqlite3's commit() ends it.
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            yield conn

    def _record(self, row: Mapping[str, Any]) -> ModelT:
        """A detached, fully loaded record built from a row already held, without a query."""
        return self._records([row])[0]

    def _get(self, run_id: str) -> ModelT | None:
        """The detached record of ``run_id``, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(self._schema.select_one, {"id": run_id}).first()
        return None if row is None else self._detached(row)

    def _get_many(self, run_ids: list[str]) -> dict[str, ModelT]:
        """Detached records of those of ``run_ids`` that are stored (one query for all)."""
        with self.engine.connect() as conn:
            rows = conn.execute(self._schema.select_many, {"ids": run_ids}).all()
        build = self._builder.build
        return {row[0]: build(row) for row in rows}

    def _records(self, rows: Sequence[Mapping[str, Any]]) -> list[ModelT]:
        """Detached records built from rows the caller holds (read back if not exact)."""
        schema = self._schema
        if not schema.exact:
            found = self._get_many([row["id"] for row in rows])
            return [found[row["id"]] for row in rows]
        keys = schema.keys
        build = self._builder.build
        return [build([row[key] for key in keys]) for row in rows]

    def _detached(self, row: Sequence[Any]) -> ModelT:
        # Core rows turned into records cost a fraction of a Session.get.
        return self._builder.build(row)  # type: ignore[no-any-return]

    # -- recovery --------------------------------------------------------------------------

    def _recover_interrupted_runs(self) -> tuple[list[str], list[str]]:
        """Finish what processes that died left behind; return (ingested ids, restored ids).

        A sidecar whose result file exists is a finished run the database may not
        have: it is ingested. So are the rows of the journals of sweeps whose
        process is gone. An old result still kept aside without a sidecar belongs
        to a re-run that died before finishing: it is put back, so the row still
        points at its intact earlier file. Ids claimed by a live process (another
        sweep, mid-run on them) are left alone, and so are the journals of live sweeps.
        """
        from entropic._claims import Claims, owner_alive

        disk = self._disk
        disk.clear_tmp()
        claims = Claims(self, enabled=self._shared)
        sidecar_ids = disk.list_sidecars()
        aside_ids = disk.list_aside()
        busy = claims.live_ids(sorted(set(sidecar_ids) | set(aside_ids)))
        rows: list[dict[str, Any]] = []
        for run_id in sidecar_ids:
            if run_id in busy:
                continue
            try:
                row = disk.read_sidecar(run_id)
            except (OSError, ValueError, KeyError) as exc:
                log.warning("entropic: ignoring unreadable sidecar of %s: %s", run_id, exc)
                continue
            if os.path.isfile(row.get("result_file", "")) and row.get("id") == run_id:
                rows.append(self._schema.stored_row(row))
            else:
                disk.remove_sidecar(run_id)
        if rows:
            self._persist(rows)
        ingested = [row["id"] for row in rows]
        ingested.extend(
            self._ingest_journals(lambda owner, path: not owner_alive(owner, _mtime(path)))
        )
        restored = [
            run_id for run_id in aside_ids if run_id not in busy and disk.restore_aside(run_id)
        ]
        # Claims of processes that are gone: their finished runs were ingested above.
        claims.purge_stale()
        if ingested or restored:
            log.warning(
                "entropic: recovered interrupted runs in %s: %d finished run(s) ingested from "
                "sidecars and journals, %d earlier result(s) restored",
                disk.root,
                len(ingested),
                len(restored),
            )
        return ingested, restored

    def _ingest_journals(self, gone: Callable[[str, Path], bool]) -> list[str]:
        """Insert the rows journalled by sweeps ``gone(owner, path)`` says are over.

        Only lines of finished runs whose result file is there are taken, and a row
        already in the table is kept (it may be newer than the journal). Returns the
        ids taken; the journals are removed.
        """
        disk = self._disk
        ingested: list[str] = []
        for path, owner in disk.list_journals():
            if not gone(owner, path):
                continue
            try:
                found = disk.read_journal(path)
            except OSError as exc:
                log.warning("entropic: ignoring unreadable journal %s: %s", path.name, exc)
                continue
            journaled = [
                self._schema.stored_row(row)
                for row in found
                if isinstance(row.get("id"), str) and os.path.isfile(row.get("result_file", ""))
            ]
            if journaled:
                self._persist_batch(journaled, [], overwrite=False)
                ingested.extend(row["id"] for row in journaled)
            path.unlink(missing_ok=True)
        return ingested

    # -- queries ---------------------------------------------------------------------------

    def find(self, **equals: Any) -> list[ModelT]:
        """Records whose columns equal ``equals`` (floats as ids round them), oldest first."""
        return query.find(self.engine, self._model, equals)

    def count(self, **equals: Any) -> int:
        """How many rows ``find(**equals)`` would return."""
        return query.count(self.engine, self._model, equals)

    def to_pandas(self, **equals: Any) -> pd.DataFrame:
        """The rows ``find(**equals)`` would return as a DataFrame (needs pandas)."""
        return query.to_pandas(self.engine, self._model, equals)


def _mtime(path: Path) -> datetime | None:
    """The last change of ``path`` as naive UTC (a journal's heartbeat), or None."""
    try:
        stamp = path.stat().st_mtime
    except OSError:
        return None
    return datetime.fromtimestamp(stamp, timezone.utc).replace(tzinfo=None)


# -- the model -----------------------------------------------------------------------------


def _check_model(model: object) -> None:
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


class _Schema:
    """What the Store needs from a model, worked out once: columns, checks, defaults."""

    def __init__(self, model: type[Base], dialect: str) -> None:
        mapper = sa.inspect(model)
        table = model.__table__
        assert isinstance(table, sa.Table)
        self.table = table
        self.name = model.__name__
        self.column_key: dict[str, str] = {}
        self.checks: dict[str, Callable[[Any], Any]] = {}
        self.fill: dict[str, Any] = {}
        self.exact = True
        required: set[str] = set()
        for prop in mapper.column_attrs:
            column = prop.columns[0]
            if prop.key in _RESERVED or not isinstance(column, sa.Column):
                continue
            self.column_key[prop.key] = column.key
            check, exact = _checker(self.name, prop.key, column, dialect)
            self.checks[prop.key] = check
            self.exact &= exact
            has_default = column.default is not None or column.server_default is not None
            if not column.nullable and not has_default:
                required.add(prop.key)
            elif column.server_default is not None or (
                column.default is not None and not column.default.is_scalar
            ):
                self.exact = False  # the database or a function decides: read it back
            else:
                scalar = column.default.arg if column.default is not None else None  # type: ignore[attr-defined]
                self.fill[column.key] = scalar
        self.required = frozenset(required)
        self.allowed = frozenset(self.column_key) | _RESERVED
        self.columns_text = ", ".join(sorted(self.column_key)) or "(no parameter columns)"
        # Every mapped attribute, "id" first, and the select statements that load them.
        attr_columns = [(prop.key, prop.columns[0]) for prop in mapper.column_attrs]
        attr_columns.sort(key=lambda pair: pair[0] != "id")
        self.attrs = [attr for attr, _ in attr_columns]
        self.keys = [column.key for _, column in attr_columns]
        columns = [column for _, column in attr_columns]
        self.select_one = sa.select(*columns).where(table.c.id == sa.bindparam("id"))
        self.select_many = sa.select(*columns).where(
            table.c.id.in_(sa.bindparam("ids", expanding=True))
        )
        self.table_keys = frozenset(column.key for column in table.columns)

    def stored_row(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """A journalled or sidecar row as the table stores it: its columns, defaults filled."""
        keys = self.table_keys
        return {**self.fill, **{k: v for k, v in row.items() if k in keys}}


_INT_BITS = {"sqlite": 64}


def _checker(model: str, name: str, column: sa.Column[Any], dialect: str) -> tuple[Any, bool]:
    """A function that validates and converts one column's value, and whether it is exact.

    Exact means the value the function returns is what the database gives back,
    so records can be built without reading them back.
    """
    ctype = column.type
    nullable = bool(column.nullable)
    where = f"params[{name!r}]"
    target = f"column {model}.{name} is {type(ctype).__name__}"

    def convert(value: Any) -> Any:
        raise NotImplementedError

    exact = True
    if isinstance(ctype, sa.Boolean):

        def convert(value: Any) -> Any:
            if isinstance(value, bool):
                return value
            raise TypeError(f"{where} = {value!r} is not a bool, but {target}")

    elif isinstance(ctype, sa.Integer):
        if isinstance(ctype, sa.BigInteger):
            bits = 64
        elif isinstance(ctype, sa.SmallInteger):
            bits = 16
        else:
            bits = _INT_BITS.get(dialect, 32)
        low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1

        def convert(value: Any) -> Any:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(
                    f"{where} = {value!r} is a {type(value).__name__}, but {target}; pass an int"
                )
            if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
                raise ValueError(
                    f"{where} = {value!r} is not a whole number, but {target}; pass an int"
                )
            result = int(value)
            if not low <= result <= high:
                raise ValueError(
                    f"{where} = {value!r} does not fit {target} ({bits}-bit on {dialect}); "
                    "use a BigInteger column"
                )
            return result

    elif isinstance(ctype, sa.Float):
        exact = not ctype.asdecimal

        def convert(value: Any) -> Any:
            if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
                raise TypeError(
                    f"{where} = {value!r} is a {type(value).__name__}, but {target}; pass a number"
                )
            try:
                result = float(value)
            except OverflowError:
                raise ValueError(f"{where} = {value!r} is too large for {target}") from None
            if math.isnan(result):
                raise ValueError(
                    f"{where} is NaN, which SQL databases cannot store or match reliably; "
                    "pass a number, or None for a nullable column"
                )
            return result

    elif isinstance(ctype, sa.Numeric):
        exact = False

        def convert(value: Any) -> Any:
            if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
                raise TypeError(
                    f"{where} = {value!r} is a {type(value).__name__}, but {target}; pass a number"
                )
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{where} = {value!r} is not finite, but {target}")
            return value

    elif isinstance(ctype, sa.Enum):
        exact = False
        enum_class = ctype.enum_class
        choices = set(ctype.enums)

        def convert(value: Any) -> Any:
            if enum_class is not None and isinstance(value, enum_class):
                return value
            if isinstance(value, str) and value in choices:
                return value
            raise ValueError(f"{where} = {value!r} is not one of {sorted(choices)} ({target})")

    elif isinstance(ctype, sa.String):
        length = ctype.length

        def convert(value: Any) -> Any:
            if isinstance(value, PyEnum) and isinstance(value.value, str):
                value = value.value
            if not isinstance(value, str):
                raise TypeError(
                    f"{where} = {value!r} is a {type(value).__name__}, but {target}; pass a str"
                )
            if length is not None and len(value) > length:
                raise ValueError(f"{where} is {len(value)} characters long, but {target}({length})")
            return value

    elif isinstance(ctype, sa.DateTime):
        exact = not ctype.timezone

        def convert(value: Any) -> Any:
            if not isinstance(value, datetime):
                raise TypeError(f"{where} = {value!r} is not a datetime, but {target}")
            return value

    elif isinstance(ctype, sa.Date):

        def convert(value: Any) -> Any:
            if isinstance(value, datetime) or not isinstance(value, date):
                raise TypeError(f"{where} = {value!r} is not a date, but {target}")
            return value

    elif isinstance(ctype, sa.JSON):

        def convert(value: Any) -> Any:
            return _json_value(value, where)

    else:
        exact = False

        def convert(value: Any) -> Any:
            return value

    def check(value: Any) -> Any:
        if value is None:
            if nullable:
                return None
            raise ValueError(f"{where} is None, but column {model}.{name} is NOT NULL")
        if type(value) not in _PLAIN:
            value = query.unwrap_numpy(value)
        return convert(value)

    return check, exact


_PLAIN = frozenset({int, float, str, bool})


def _json_default(value: Any) -> Any:
    module = type(value).__module__
    if module == "numpy" or module.startswith("numpy."):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _json_value(value: Any, where: str) -> Any:
    try:
        return json.loads(json.dumps(value, allow_nan=False, default=_json_default))
    except RecursionError:
        raise ParamsDepthError(
            f"{where} is nested too deeply to store as JSON; flatten it (at most "
            f"{hashing.MAX_DEPTH} levels)"
        ) from None
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"{where} cannot be stored as JSON ({exc}); use numbers, strings, booleans, "
            "None, lists and dicts with string keys (NaN and infinity are not JSON)"
        ) from None


def _json_clean(data: Mapping[str, Any], name: str) -> dict[str, Any]:
    """A deep, JSON-round-tripped copy of ``data``, or a TypeError naming the bad key."""
    clean: dict[str, Any] = {}
    for key, value in data.items():
        if not isinstance(key, str):
            raise TypeError(f"{name} keys must be str, not {type(key).__name__} ({key!r})")
        clean[key] = _json_value(value, f"{name}[{key!r}]")
    return clean


def _names(keys: Iterable[Any], most: int = 20) -> str:
    """The keys as text, the first ``most`` of them only, so a huge dict gives a short message."""
    listed = list(keys)
    shown = ", ".join(repr(key) for key in listed[:most])
    return shown if len(listed) <= most else f"{shown}, ... ({len(listed)} keys in all)"


def _drift_message(table: sa.Table, missing: list[sa.Column[Any]], engine: Engine) -> str:
    preparer = engine.dialect.identifier_preparer
    statements = [
        f"ALTER TABLE {preparer.format_table(table)} ADD COLUMN "
        f"{CreateColumn(column).compile(dialect=engine.dialect)};"
        for column in missing
    ]
    names = ", ".join(column.name for column in missing)
    return (
        f"table {table.name!r} lacks column(s) the model declares: {names}. Add them, e.g.\n  "
        + "\n  ".join(statements)
        + "\n(a NOT NULL column needs a DEFAULT for the rows already there); for real schema "
        "migrations use Alembic"
    )


# -- engines -------------------------------------------------------------------------------


def _parse_db_url(db_url: object) -> sa.URL:
    if isinstance(db_url, sa.URL):
        url = db_url
    elif isinstance(db_url, str):
        try:
            url = sa.make_url(db_url)
        except sa.exc.ArgumentError:
            raise ValueError(
                "db_url is not a SQLAlchemy database URL; use e.g. 'sqlite:///db.sqlite3' or "
                "'postgresql+psycopg://user:password@host/dbname'"
            ) from None
    else:
        raise TypeError(f"db_url must be a str, not {type(db_url).__name__}")
    if url.get_backend_name() == "sqlite" and not _is_memory_sqlite(url):
        # Absolute, so a Store unpickled in another working directory opens the same file.
        database = os.path.abspath(str(url.database))
        if not os.path.isdir(os.path.dirname(database)):
            raise FileNotFoundError(
                f"the folder of the SQLite database {database} does not exist; create it first"
            )
        url = url.set(database=database)
    return url


def _is_memory_sqlite(url: sa.URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def _create_engine(url: sa.URL) -> Engine:
    if url.get_backend_name() != "sqlite":
        return sa.create_engine(url)
    if _is_memory_sqlite(url):
        # One connection shared by every call, or each call would see a new empty database.
        return sa.create_engine(
            url, poolclass=StaticPool, connect_args={"check_same_thread": False}
        )
    engine = sa.create_engine(url)
    event.listen(engine, "connect", _sqlite_connect)
    return engine


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Take transaction control from the sqlite3 module: reads run without BEGIN (one
    # snapshot per statement) and writers start with BEGIN IMMEDIATE (Store._begin_write).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA journal_mode = WAL")
    # In WAL mode NORMAL survives any process crash; only power loss can drop the last commits.
    cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.close()


def _upsert_statement(table: sa.Table, dialect: str) -> Any:
    """INSERT ... ON CONFLICT (id) DO UPDATE for the dialects that have it, else None."""
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    elif dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert  # type: ignore[assignment]
    else:
        return None
    stmt = insert(table)
    return stmt.on_conflict_do_update(
        index_elements=[table.c.id],
        set_={
            column.key: stmt.excluded[column.key] for column in table.columns if column.key != "id"
        },
    )


def _insert_missing_statement(table: sa.Table, dialect: str) -> Any:
    """INSERT ... ON CONFLICT (id) DO NOTHING for the dialects that have it, else None."""
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    elif dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert  # type: ignore[assignment]
    else:
        return None
    return insert(table).on_conflict_do_nothing(index_elements=[table.c.id])


def _generic_insert_missing(conn: Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """Insert those of ``rows`` whose id is not in the table yet."""
    for row in rows:
        if conn.execute(sa.select(table.c.id).where(table.c.id == row["id"])).first() is None:
            conn.execute(sa.insert(table).values(row))


def _generic_upsert(conn: Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """An upsert for dialects without ON CONFLICT: UPDATE, then INSERT the rows it missed."""
    for row in rows:
        changes = {key: value for key, value in row.items() if key != "id"}
        result = conn.execute(sa.update(table).where(table.c.id == row["id"]).values(changes))
        if result.rowcount == 0:
            conn.execute(sa.insert(table).values(row))


class _RecordBuilder:
    """Builds detached, fully loaded records from column values without the ORM's constructor.

    What a closed Session leaves behind, at a fraction of the cost of ``Model(**values)``
    plus ``make_transient_to_detached``: a new instance state holding every attribute
    as its committed value, an identity key, and the ``load`` event fired so that
    ``custom_data`` becomes the usual change-tracking ``MutableDict``.
    """

    def __init__(self, model: type[Base], attrs: list[str]) -> None:
        mapper = sa.inspect(model)
        self.manager = mapper.class_manager
        self.identity_class = mapper._identity_class
        self.attrs = attrs
        self.load = self.manager.dispatch.load

    def build(self, values: Sequence[Any]) -> Any:
        record = self.manager.new_instance()
        state = instance_state(record)
        state.dict.update(zip(self.attrs, values, strict=False))
        state.key = (self.identity_class, (values[0],), None)
        self.load(state, None)
        return record

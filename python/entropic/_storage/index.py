"""The index: one engine per process, write transactions, and the rows of one table.

``Index`` is the database side of a store: it opens its engine lazily (again in a
forked or unpickled process), writes batches of rows in one transaction (with
the dialect's upsert or insert-if-missing, chosen here and nowhere else), and
reads rows back as detached records. The command line builds one on a reflected
table, so it writes exactly as a Store does.
"""

from __future__ import annotations

import logging
import numbers
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from operator import itemgetter
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import StaticPool

from entropic._storage.codec import dumps, loads
from entropic._storage.records import RecordBuilder
from entropic._storage.schema import Schema, refuse_drift
from entropic._storage.statements import (
    DriverIds,
    DriverSelect,
    DriverWrite,
    Processor,
    compile_select,
    compile_write,
)
from entropic._storage.tables import CLAIMS, FAILURES, METADATA
from entropic.models import Failure

__all__ = [
    "ID_CHUNK",
    "SQLITE_BUSY_TIMEOUT_MS",
    "ChangeMark",
    "Index",
    "create_engine",
    "insert_missing",
    "is_memory_sqlite",
    "is_row_error",
    "mask_url",
    "parse_db_url",
    "secrets_of",
    "sqlite_json_bind",
    "sqlite_json_result",
    "upsert",
]

log = logging.getLogger("entropic")

#: How long an SQLite writer waits for another process's write lock before failing.
SQLITE_BUSY_TIMEOUT_MS = 60_000
#: Pages an SQLite connection keeps in memory, in KiB (SQLite's default is 2 MiB): a
#: sweep's lookups by id land all over the file, which a small cache reads again and again.
#: A sweep keeps to one connection, whose cache fills up to this.
SQLITE_CACHE_KIB = 32_768
#: How much the write-ahead log of an SQLite file may hold before its pages are copied
#: back into the database file, in bytes (SQLite's default is 1000 pages, 4 MiB): a
#: batch of a large sweep touches pages all over the id index, and each copy ends with
#: an fsync, so fewer and larger copies write and wait less. The log is cut back to
#: this size after a copy.
SQLITE_WAL_BYTES = 128 * 1024 * 1024
#: At most this long after the last one, a commit of rows on an SQLite file is followed by
#: a copy of the log back into the file (which ends with an fsync), so a power cut can
#: drop no more than about this many seconds of commits however slowly the log grows.
SQLITE_SYNC_SECONDS = 10.0
#: Ids bound per ``IN (...)`` statement (and claims per insert), far below every
#: dialect's bound-parameter limit. The one batch size of every chunked statement; a power
#: of two, as statements over fewer ids are padded to one (``statements.padded``).
ID_CHUNK = 512
#: A look-up of at least this many ids (``Index.find``) reads the whole table instead of
#: looking the ids up, when the table holds no more rows than ids: on SQLite and
#: PostgreSQL, reading every row costs about half of finding a stored row by its id. It
#: costs more than looking for an id that is not there: when none of the ids is stored,
#: the read costs up to about twice the look-up by id.
SCAN_MIN_IDS = 4096
#: Rows fetched at a time by such a read.
SCAN_BATCH_ROWS = ID_CHUNK
_CAUGHT = (sa.exc.StatementError, UnicodeError, OverflowError)


def is_row_error(exc: BaseException) -> bool:
    """Whether the database refused a row's values (not a lost connection or a full disk)."""
    if isinstance(exc, (UnicodeError, OverflowError)):
        return True  # a driver that could not encode a value (sqlite3: an int beyond 64 bits)
    if isinstance(exc, (sa.exc.IntegrityError, sa.exc.DataError, sa.exc.ProgrammingError)):
        return True
    # Raised while SQLAlchemy processed the values, before the database saw them.
    return isinstance(exc, sa.exc.StatementError) and not isinstance(exc, sa.exc.DBAPIError)


# -- engines -------------------------------------------------------------------------------


def parse_db_url(db_url: object) -> sa.URL:
    """``db_url`` as a URL; an SQLite file's path made absolute. Errors name the fix."""
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
    if url.get_backend_name() == "sqlite" and not is_memory_sqlite(url):
        # Absolute, so a Store unpickled in another working directory opens the same file.
        database = os.path.abspath(str(url.database))
        if not os.path.isdir(os.path.dirname(database)):
            raise FileNotFoundError(
                f"the folder of the SQLite database {database} does not exist; create it first"
            )
        url = url.set(database=database)
    return url


#: Query parameters of a URL that hold secrets (psycopg and libpq accept these).
_SECRET_QUERY_KEYS = frozenset({"password", "passwd", "sslpassword", "sslkey_password"})


#: Stands in for a secret of the query while a URL is rendered (quoting would turn
#: ``***`` into ``%2A%2A%2A``); letters and digits only, so it is never quoted.
_MASK_TOKEN = "entropicmasked7f3a9c"


def mask_url(url: sa.URL) -> str:
    """``url`` as text with its password masked, in the user part and in the query alike."""
    query = {
        key: (_MASK_TOKEN if key.lower() in _SECRET_QUERY_KEYS else value)
        for key, value in url.query.items()
    }
    shown = url.set(query=query).render_as_string(hide_password=True)
    return shown.replace(_MASK_TOKEN, "***")


def _password_in_user_part(url: sa.URL) -> sa.URL:
    """A PostgreSQL URL with ``?password=`` in its query as the same URL with the password
    in the user part, where SQLAlchemy hides it (in an engine's repr, say); psycopg
    connects with the same password either way."""
    if url.get_backend_name() != "postgresql" or "password" not in url.query:
        return url
    password = url.query["password"]
    if not isinstance(password, str):
        return url  # given twice: left for the driver to judge
    return url.difference_update_query(["password"]).set(password=password)


def secrets_of(url: sa.URL) -> list[str]:
    """The secret texts in ``url`` (to scrub from messages that quote it)."""
    found = [url.password] if url.password else []
    for key, value in url.query.items():
        if key.lower() in _SECRET_QUERY_KEYS:
            found.extend([value] if isinstance(value, str) else list(value))
    return [str(secret) for secret in found if secret]


def is_memory_sqlite(url: sa.URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def create_engine(url: sa.URL) -> Engine:
    """The engine entropic uses for ``url``: on SQLite, WAL, a busy timeout and exact JSON."""
    if url.get_backend_name() != "sqlite":
        return sa.create_engine(_password_in_user_part(url))
    if is_memory_sqlite(url):
        # One connection shared by every call, or each call would see a new empty database.
        return sa.create_engine(
            url,
            poolclass=StaticPool,
            connect_args={"check_same_thread": False},
            json_serializer=sqlite_json_bind,
            json_deserializer=loads,
        )
    # Last in, first out: a thread that returns its connection gets the same one back,
    # so that a sweep's reads and writes keep to one connection (Index.change_mark).
    engine = sa.create_engine(
        url, json_serializer=sqlite_json_bind, json_deserializer=loads, pool_use_lifo=True
    )
    event.listen(engine, "connect", _sqlite_connect)
    return engine


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Take transaction control from the sqlite3 module: reads run without BEGIN (one
    # snapshot per statement) and writers start with BEGIN IMMEDIATE (Index.begin_write).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA journal_mode = WAL")
    # In WAL mode NORMAL survives any process crash; only power loss can drop the last commits.
    cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.execute(f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}")
    page_size = cursor.execute("PRAGMA page_size").fetchone()[0]
    cursor.execute(f"PRAGMA wal_autocheckpoint = {SQLITE_WAL_BYTES // page_size}")
    cursor.execute(f"PRAGMA journal_size_limit = {SQLITE_WAL_BYTES}")
    cursor.close()


def sqlite_json_result(value: Any) -> Any:
    """A SQLite JSON column's value as SQLAlchemy reads it with ``loads``, in one call.

    Text is JSON text; None is NULL; a number is kept (a row written when the
    column's numeric affinity turned bare numbers into numbers); a BLOB is JSON
    bytes. The empty object, what most records' custom_data holds, is read
    without a decoder.
    """
    if type(value) is str:
        return {} if value == "{}" else loads(value)
    if value is None:
        return None
    if isinstance(value, numbers.Number):
        return value
    return loads(value)


def sqlite_json_bind(value: Any) -> str | bytes:
    """JSON text for SQLite; a bare number as a BLOB.

    SQLite gives a column declared JSON numeric affinity, so the text of a bare
    number would be stored as a number: 10**30 would come back as 1e+30 and 1.0
    as 1. A BLOB keeps the text exactly; reading it back parses the same JSON.
    """
    text = dumps(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return text.encode("ascii")
    return text


# -- statements: the one place that knows each dialect's insert ----------------------------


def _dialect_insert(dialect: str) -> Callable[[sa.Table], Any] | None:
    """The dialect's INSERT construct with ON CONFLICT, or None where there is none."""
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert

        return insert
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert
    return None


def upsert(table: sa.Table, dialect: str, *, newer_only: bool = False) -> Any:
    """INSERT ... ON CONFLICT (id) DO UPDATE for the dialects that have it, else None.

    With ``newer_only`` a stored row is replaced only by a row with a later created_at.
    """
    insert = _dialect_insert(dialect)
    if insert is None:
        return None
    stmt = insert(table)
    return stmt.on_conflict_do_update(
        index_elements=[table.c.id],
        set_={
            column.key: stmt.excluded[column.key] for column in table.columns if column.key != "id"
        },
        where=table.c.created_at < stmt.excluded.created_at if newer_only else None,
    )


def insert_missing(table: sa.Table, dialect: str) -> Any:
    """INSERT ... ON CONFLICT (primary key) DO NOTHING for the dialects that have it, else None."""
    insert = _dialect_insert(dialect)
    if insert is None:
        return None
    return insert(table).on_conflict_do_nothing(index_elements=list(table.primary_key.columns))


def _generic_write(
    conn: Connection,
    table: sa.Table,
    rows: list[dict[str, Any]],
    *,
    overwrite: bool,
    newer_only: bool = False,
) -> None:
    """Upsert (or insert the missing of) ``rows`` on dialects without ON CONFLICT."""
    for row in rows:
        if overwrite:
            changes = {key: value for key, value in row.items() if key != "id"}
            update = sa.update(table).where(table.c.id == row["id"])
            if newer_only:
                update = update.where(table.c.created_at < row["created_at"])
            result = conn.execute(update.values(changes))
            if result.rowcount == 0 and (
                not newer_only
                or conn.execute(sa.select(table.c.id).where(table.c.id == row["id"])).first()
                is None
            ):
                conn.execute(sa.insert(table).values(row))
        elif conn.execute(sa.select(table.c.id).where(table.c.id == row["id"])).first() is None:
            conn.execute(sa.insert(table).values(row))


# -- the index -----------------------------------------------------------------------------


def _driver(conn: Connection) -> Any:
    """The driver's own connection under ``conn`` (sqlite3's, on an SQLite file)."""
    return conn.connection.driver_connection


class ChangeMark(NamedTuple):
    """How an SQLite file stood when ``Index.change_mark`` looked (``Index.unchanged_since``)."""

    #: The driver's connection it was read on.
    driver: Any
    #: Its ``PRAGMA data_version`` then, which changes when another connection commits.
    version: int
    #: The rows changed through that connection by then (sqlite3's ``total_changes``)...
    changes: int
    #: ...and how many of them each owner changed (``begin_write(owner=...)``).
    own: dict[str, int]


class Index:
    """The rows of one table in one database, through one engine per process.

    With a ``schema`` (a Store's model) it also builds records; without one (the
    command line's reflected table) it reads and writes plain rows.
    """

    def __init__(self, url: sa.URL, table: sa.Table, schema: Schema | None = None) -> None:
        self.url = url
        #: The URL as shown to people: secrets masked.
        self.shown_url = mask_url(url)
        self.table = table
        self.name = str(table.name)  # a plain str: drivers bind it without an adapter look-up
        self.schema = schema
        self.memory = is_memory_sqlite(url)
        #: Whether other processes can open this database (all but in-memory SQLite).
        self.shared = not self.memory
        self.dialect = url.get_backend_name()
        self._engine: Engine | None = None
        self._pid = -1
        # Compiled for the open engine (``_compile_driver_statements``); None: SQLAlchemy's path.
        self._writes: dict[tuple[bool, bool], DriverWrite | None] = {}
        self._select_driver: DriverSelect | None = None
        self._clear_failures: DriverIds | None = None
        self._upsert = upsert(table, self.dialect)
        self._upsert_newer = upsert(table, self.dialect, newer_only=True)
        self._insert_missing = insert_missing(table, self.dialect)
        f = FAILURES.c
        self._any_failure = sa.select(f.id).where(f.table_name == sa.bindparam("t")).limit(1)
        self._immediate = self.dialect == "sqlite" and not self.memory
        self._synced = time.monotonic()
        # The rows each owner changed through each driver connection (see change_mark),
        # by id of the connection: only the thread holding it adds to its counts.
        self._own_changes: dict[int, dict[str, int]] = {}
        if schema is not None:
            self.builder = RecordBuilder(schema.model, schema.attrs)
            self._select_one = sa.select(*schema.columns).where(table.c.id == sa.bindparam("id"))
            self._select_many = sa.select(*schema.columns).where(
                table.c.id.in_(sa.bindparam("ids", expanding=True))
            )

    # -- engine ----------------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        """The engine, opened on first use in each process and reused by every call."""
        if self._engine is None or self._pid != os.getpid():
            self._open()
        assert self._engine is not None
        return self._engine

    def _open(self) -> None:
        if self._engine is not None and not self.memory:
            # A forked child must not use the parent's pooled connections.
            self._engine.dispose(close=False)
        engine = create_engine(self.url)
        self._pid = os.getpid()
        self._engine = engine
        self._compile_driver_statements(engine)
        if self.memory:
            # A new in-memory database (say, of an unpickled copy) starts empty.
            self.table.create(engine, checkfirst=True)
            METADATA.create_all(engine, checkfirst=True)

    def _compile_driver_statements(self, engine: Engine) -> None:
        """The writes and the look-ups compiled for this engine's driver (see statements)."""
        keys = frozenset(column.key for column in self.table.columns)
        dialect = engine.dialect
        # create_engine gave SQLite sqlite_json_bind: JSON dicts are written by it directly.
        json_bind = sqlite_json_bind if dialect.name == "sqlite" else None
        self._writes = {
            (False, False): compile_write(self._insert_missing, dialect, keys, json_bind),
            (True, False): compile_write(self._upsert, dialect, keys, json_bind),
            (True, True): compile_write(self._upsert_newer, dialect, keys, json_bind),
        }
        self._select_driver = None
        f = FAILURES.c
        self._clear_failures = DriverIds(
            lambda ids: sa.delete(FAILURES).where(f.table_name == sa.bindparam("t"), ids),
            f.id,
            dialect,
        )
        if self.schema is not None and self.schema.only_columns:
            # create_engine gave SQLite codec.loads: sqlite_json_result reads its JSON the same.
            json_result = sqlite_json_result if dialect.name == "sqlite" else None
            self._select_driver = compile_select(
                self.schema.columns, self.table.c.id, dialect, json_result
            )

    def close(self) -> None:
        """Close the engine's connections (an in-memory database is lost); later calls reopen."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def create_tables(self) -> None:
        """Create entropic's tables and this one if missing; refuse a table the model cannot use."""
        engine = self.engine
        table = self.table
        for own in METADATA.sorted_tables:
            self._create(own)
        if not sa.inspect(engine).has_table(table.name, schema=table.schema):
            self._create(table)
            return
        if self.schema is not None:
            existing = sa.inspect(engine).get_columns(table.name, table.schema)
            refuse_drift(self.schema, existing, engine.dialect)
            self.schema.adopt(existing)

    def _create(self, table: sa.Table) -> None:
        engine = self.engine
        if sa.inspect(engine).has_table(table.name, schema=table.schema):
            return
        try:
            table.create(engine, checkfirst=True)
        except sa.exc.DBAPIError:
            # Another process may have created it between our check and our CREATE.
            if not sa.inspect(engine).has_table(table.name, schema=table.schema):
                raise

    @contextmanager
    def begin_write(self, owner: str | None = None) -> Iterator[Connection]:
        """A write transaction; on an SQLite file it takes the write lock before anything else.

        With ``owner`` (a sweep's claims owner), the rows it changes count as that
        owner's own (see ``unchanged_since``): the caller vouches that it writes only
        claims and rows of points that owner ran.
        """
        with self.engine.begin() as conn:
            if not self._immediate:
                yield conn
                return
            # A deferred transaction that upgrades to writing later fails at once
            # with SQLITE_BUSY when another process writes; IMMEDIATE waits for
            # the lock (busy_timeout) instead. sqlite3's commit() ends it.
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            if owner is None:
                yield conn
                return
            driver = _driver(conn)
            start = driver.total_changes
            try:
                yield conn
            finally:
                # Still held: no other thread counts for this connection meanwhile. A
                # connection closed under us is never handed out again: nothing to count.
                with suppress(sqlite3.Error):
                    changed = driver.total_changes - start
                    own = self._own_changes.setdefault(id(driver), {})
                    own[owner] = own.get(owner, 0) + changed

    # -- watching for other writers --------------------------------------------------------

    def change_mark(self) -> ChangeMark | None:
        """How an SQLite file stands now, for ``unchanged_since``; None on other databases.

        Taken before a sweep looks its points up, so that a claim can tell later
        whether anything but the sweep's own writes could have changed what it found.
        """
        if not self._immediate:
            return None
        with self.engine.connect() as conn:
            driver = _driver(conn)
            own = dict(self._own_changes.get(id(driver), {}))
            changes = driver.total_changes
            version = conn.exec_driver_sql("PRAGMA data_version").scalar_one()
        return ChangeMark(driver, version, changes, own)

    def unchanged_since(self, conn: Connection, mark: ChangeMark | None, owner: str) -> bool:
        """Whether nothing but ``owner``'s own writes was committed since ``mark``.

        Call it inside a write transaction (``begin_write``), whose lock keeps it
        true until the commit. True only on the connection the mark was read on, when
        its ``PRAGMA data_version`` (which a commit on any other connection, in any
        process, changes) is the same, and when every row changed through that
        connection since (its ``total_changes``, which counts what any thread, a
        Session or the raw driver changed, committed or not) was changed by
        ``owner``'s own writes (``begin_write(owner=...)``). False whenever it
        cannot tell.
        """
        if mark is None:
            return False
        driver = _driver(conn)
        if driver is not mark.driver:
            return False
        own = self._own_changes.get(id(driver), {}).get(owner, 0) - mark.own.get(owner, 0)
        if driver.total_changes - mark.changes != own:
            return False
        return bool(conn.exec_driver_sql("PRAGMA data_version").scalar_one() == mark.version)

    def forget_owner(self, owner: str) -> None:
        """Drop the counts of ``owner``'s changes (its sweep has ended)."""
        for own in list(self._own_changes.values()):
            own.pop(owner, None)

    # -- writing ---------------------------------------------------------------------------

    def persist(
        self,
        rows: list[dict[str, Any]],
        failures: Sequence[Mapping[str, Any]] = (),
        *,
        clear_failures: Iterable[str] | None = None,
        also: Callable[[Connection], None] | None = None,
        overwrite: bool = True,
        newer_only: bool = False,
        owner: str | None = None,
    ) -> list[tuple[dict[str, Any], BaseException]]:
        """One transaction: write ``rows``, clear failure records, record ``failures``.

        Failure records are cleared for ``clear_failures`` (by default, the ids of
        ``rows``) and replaced for ``failures``; ``also`` runs in the same
        transaction (a sweep releases its claims there). With ``overwrite=False``
        rows already in the table are left as they are; with ``newer_only`` a stored
        row is replaced only by a row whose created_at is later (a journal or a sidecar
        may hold a run older than what was written since, or newer).

        If the database refuses a row's values, the rows are written one by one,
        so one bad row never costs the others: the rows it refused are returned
        with the error, and nothing of theirs is written. ``owner``: see ``begin_write``.
        """
        name = self.name
        clear = [row["id"] for row in rows] if clear_failures is None else list(clear_failures)
        clear.extend(failure["id"] for failure in failures)
        try:
            with self.begin_write(owner) as conn:
                self._write(conn, rows, overwrite=overwrite, newer_only=newer_only)
                self._record_failures(conn, clear, failures)
                if also is not None:
                    also(conn)
            self._sync_if_due()
            return []
        except _CAUGHT as exc:
            if not rows or not is_row_error(exc):
                raise
            first = exc
        rejected: list[tuple[dict[str, Any], BaseException]] = []
        for row in rows:
            try:
                with self.begin_write(owner) as conn:
                    self._write(conn, [row], overwrite=overwrite, newer_only=newer_only)
            except _CAUGHT as exc:
                if not is_row_error(exc):
                    raise
                rejected.append((row, exc))
        if not rejected:
            raise first  # the batch failed, yet every row alone went in: not a row's fault
        refused = {row["id"] for row, _ in rejected}
        with self.begin_write(owner) as conn:
            self._record_failures(conn, [i for i in clear if i not in refused], failures)
            if also is not None:
                also(conn)
        log.debug("%s refused %d of %d row(s)", name, len(rejected), len(rows))
        self._sync_if_due()
        return rejected

    def _sync_if_due(self) -> None:
        """On an SQLite file, copy the log back (``SQLITE_SYNC_SECONDS`` apart at most).

        A passive copy: it waits for no reader or writer, and copies what it can. A
        copy that fails costs nothing but durability until the next one: the commits
        are made, and SQLite copies the log itself once it reaches SQLITE_WAL_BYTES.
        """
        if not self._immediate:
            return
        now = time.monotonic()
        if now - self._synced < SQLITE_SYNC_SECONDS:
            return
        self._synced = now
        try:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sa.exc.DBAPIError as exc:
            log.debug("%s: copying the SQLite log back failed: %s", self.shown_url, exc)

    def _write(
        self,
        conn: Connection,
        rows: list[dict[str, Any]],
        *,
        overwrite: bool,
        newer_only: bool = False,
    ) -> None:
        if not rows:
            return
        driver = self._writes.get((overwrite, newer_only and overwrite))
        if driver is not None and driver.accepts(rows):
            driver.execute(conn, rows)
            return
        if not overwrite:
            statement = self._insert_missing
        else:
            statement = self._upsert_newer if newer_only else self._upsert
        if statement is not None:
            conn.execute(statement, rows)
        else:
            _generic_write(conn, self.table, rows, overwrite=overwrite, newer_only=newer_only)

    def _record_failures(
        self, conn: Connection, clear: list[str], failures: Sequence[Mapping[str, Any]]
    ) -> None:
        if clear and conn.execute(self._any_failure, {"t": self.name}).first() is None:
            clear = []  # no failure recorded for this table: nothing to clear
        clear_failures = self._clear_failures
        assert clear_failures is not None  # compiled when the engine opened
        for i in range(0, len(clear), ID_CHUNK):
            clear_failures.execute(conn, clear[i : i + ID_CHUNK], {"t": self.name})
        if failures:
            conn.execute(
                sa.insert(FAILURES), [{**failure, "table_name": self.name} for failure in failures]
            )

    def delete(self, run_id: str, check: Callable[[str], None] | None = None) -> str | None:
        """Delete the row of ``run_id``; return its result_file, or None if there was none.

        ``check(result_file)`` runs inside the transaction first and may raise to
        keep the row.
        """
        table = self.table
        with self.begin_write() as conn:
            current = conn.execute(
                sa.select(table.c.result_file).where(table.c.id == run_id)
            ).scalar_one_or_none()
            if current is None:
                return None
            if check is not None:
                check(current)
            conn.execute(sa.delete(table).where(table.c.id == run_id))
        return str(current)

    def delete_many(self, run_ids: list[str]) -> int:
        """Delete the rows of ``run_ids``; return how many there were."""
        table = self.table
        removed = 0
        with self.begin_write() as conn:
            for i in range(0, len(run_ids), ID_CHUNK):
                removed += conn.execute(
                    sa.delete(table).where(table.c.id.in_(run_ids[i : i + ID_CHUNK]))
                ).rowcount
        return removed

    # -- reading ---------------------------------------------------------------------------

    def get(self, run_id: str) -> Any:
        """The detached record of ``run_id``, or None."""
        engine = self.engine
        driver = self._select_driver
        with engine.connect() as conn:
            if driver is not None:
                fetched, processors = driver.fetch(conn, [run_id])
                return self.builder.build_many(fetched, processors)[0] if fetched else None
            row = conn.execute(self._select_one, {"id": run_id}).first()
        return None if row is None else self.builder.build(row)

    def find(
        self,
        run_ids: list[str],
        keep: Callable[[str], bool],
        keep_many: Callable[[int], Callable[[str], bool]] | None = None,
        found: dict[str, Any] | None = None,
    ) -> tuple[dict[str, Any], int]:
        """Detached records of those of ``run_ids`` that are stored and whose result_file
        ``keep`` accepts, by id, and the count of the stored rows it refused. The records
        are put in ``found`` if given (and it is returned), else in a new dict.

        ``ID_CHUNK`` ids a query; or, for ``SCAN_MIN_IDS`` ids or more in a table of
        no more rows than that, one read of the whole table. That read asks
        ``keep_many(len(run_ids))`` for a ``keep`` that answers as ``keep`` does, for
        many result files at once.
        """
        if found is None:
            found = {}
        driver = self._select_driver
        if driver is not None and len(run_ids) >= SCAN_MIN_IDS:
            with self.engine.connect() as conn:
                if driver.has_at_most(conn, len(run_ids)):
                    if keep_many is not None:
                        keep = keep_many(len(run_ids))
                    return found, self._scan(conn, driver, set(run_ids), keep, found)
        left_out = 0
        for i in range(0, len(run_ids), ID_CHUNK):
            left_out += self._get_into(found, run_ids[i : i + ID_CHUNK], keep)
        return found, left_out

    def _scan(
        self,
        conn: Connection,
        driver: DriverSelect,
        wanted: set[str],
        keep: Callable[[str], bool],
        found: dict[str, Any],
    ) -> int:
        """Put in ``found`` the kept records of the ``wanted`` ids, reading every row;
        returns the count of rows ``keep`` refused."""
        left_out = 0
        with driver.scan(conn, SCAN_BATCH_ROWS) as (batches, processors):
            for batch in batches:
                rows = [row for row in batch if row[0] in wanted]
                left_out += self._keep_into(found, rows, processors, keep)
        return left_out

    def _get_into(
        self, found: dict[str, Any], run_ids: list[str], keep: Callable[[str], bool] | None
    ) -> int:
        """Put in ``found`` the detached records of those of ``run_ids`` that are stored (one
        query for all). With ``keep``, only the rows whose result_file it accepts become
        records (the others are never built); returns the count of rows left out."""
        engine = self.engine
        driver = self._select_driver
        with engine.connect() as conn:
            if driver is not None:
                rows, processors = driver.fetch(conn, run_ids)
            else:
                rows, processors = conn.execute(self._select_many, {"ids": run_ids}).all(), []
        return self._keep_into(found, rows, processors, keep)

    def _keep_into(
        self,
        found: dict[str, Any],
        rows: Sequence[Sequence[Any]],
        processors: Sequence[tuple[int, Processor]],
        keep: Callable[[str], bool] | None,
    ) -> int:
        """Put in ``found`` the records, by id, of the ``rows`` whose result_file ``keep``
        accepts; returns the count it refused."""
        left_out = 0
        if keep is not None and rows:
            at = self.builder.result_file_at
            convert = dict(processors).get(at)
            if convert is None:
                kept = [row for row in rows if keep(row[at])]
            else:
                kept = [row for row in rows if keep(convert(row[at]))]
            left_out = len(rows) - len(kept)
            rows = kept
        self.builder.build_into(found, rows, processors)
        return left_out

    def records(self, rows: Sequence[Mapping[str, Any]]) -> list[Any]:
        """Detached records built from rows the caller holds (read back if not exact)."""
        schema = self.schema
        assert schema is not None
        if not schema.exact:
            found: dict[str, Any] = {}
            ids = [row["id"] for row in rows]
            for i in range(0, len(ids), ID_CHUNK):
                self._get_into(found, ids[i : i + ID_CHUNK], None)
            return [found[row["id"]] for row in rows]
        values = itemgetter(*schema.keys)  # every model has several columns: gives tuples
        return self.builder.build_many([values(row) for row in rows])

    def result_files(self, run_ids: list[str]) -> dict[str, str]:
        """The result_file of each of ``run_ids`` that has a row."""
        table = self.table
        stmt = sa.select(table.c.id, table.c.result_file).where(
            table.c.id.in_(sa.bindparam("ids", expanding=True))
        )
        found: dict[str, str] = {}
        with self.engine.connect() as conn:
            for i in range(0, len(run_ids), ID_CHUNK):
                found.update(
                    (run_id, path)
                    for run_id, path in conn.execute(stmt, {"ids": run_ids[i : i + ID_CHUNK]})
                )
        return found

    def failures(self) -> list[Failure]:
        """The recorded failures of points that have not succeeded since, newest first."""
        f = FAILURES.c
        query = (
            sa.select(FAILURES).where(f.table_name == self.name).order_by(f.failed_at.desc(), f.id)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [Failure(**{k: v for k, v in row.items() if k != "table_name"}) for row in rows]

    def has_own_tables(self) -> dict[str, bool]:
        """Whether entropic's claims and failures tables exist in this database."""
        inspector = sa.inspect(self.engine)
        return {table.name: inspector.has_table(table.name) for table in (CLAIMS, FAILURES)}

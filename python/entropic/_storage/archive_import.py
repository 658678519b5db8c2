"""Importing an archive: check all of it first, then write it as a run does.

``check_import`` reads and checks all of an archive (``archive_format.py``)
against the target table before anything is written: every member, every
checksum, every id (recomputed from its parameters), every value (read by the
target column's rule). ``apply_import`` then writes as a run does: under claims,
each file through ``.entropic/tmp`` and a rename, the earlier file kept aside and
a sidecar written until the rows are committed in one transaction, so a crash at
any point leaves what recovery finishes or undoes.
"""

from __future__ import annotations

import json
import logging
import math
import os
import stat
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from entropic import hashing
from entropic._storage.archive_format import (
    MANIFEST,
    ROWS,
    ArchiveReader,
    Manifest,
    listed,
)
from entropic._storage.claims import Claims
from entropic._storage.codec import decode_row
from entropic._storage.columns import json_clean, rule_for
from entropic._storage.disk import Disk, check_id
from entropic._storage.index import ID_CHUNK, Index, upsert
from entropic._storage.tables import FAILURES
from entropic.errors import ArchiveError
from entropic.models import RESERVED_COLUMNS

__all__ = ["ImportPlan", "ImportReport", "apply_import", "check_import"]

log = logging.getLogger("entropic")

# -- import --------------------------------------------------------------------------------


@dataclass
class ImportReport:
    """What ``Store.import_`` did with each row of the archive, by id."""

    path: Path
    #: Rows the store did not have (or had without their result file).
    inserted: list[str] = field(default_factory=list)
    #: Rows the archive holds a newer version of: row and file replaced.
    replaced: list[str] = field(default_factory=list)
    #: Rows the store holds as new or newer: left as they are.
    kept: list[str] = field(default_factory=list)
    #: Rows a live process is running right now: left to it.
    busy: list[str] = field(default_factory=list)


@dataclass
class _Entry:
    row: dict[str, Any]  # as the target table stores it, by column key
    created_at: datetime
    member: str
    size: int
    sha256: str


@dataclass
class ImportPlan:
    """An archive that passed every check against one target table, ready to be written."""

    archive: ArchiveReader
    entries: dict[str, _Entry]
    explicit: list[str]

    def close(self) -> None:
        self.archive.close()


def _naive_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value
    return value.astimezone(timezone.utc).replace(tzinfo=None)


def _fit_columns(manifest: Manifest, table: sa.Table, where: str) -> None:
    """Refuse an archive whose columns the target table cannot hold."""
    present = {column.name for column in table.columns}
    archived = [described["name"] for described in manifest.columns]
    unknown = [name for name in archived if name not in present]
    if unknown:
        raise ArchiveError(
            f"{where} does not fit table {table.name!r}: its rows have column(s) "
            f"{', '.join(unknown)} that the table lacks; add them to the model and the table "
            "(ALTER TABLE ... ADD COLUMN), or import into the store those rows belong to"
        )
    needed = [
        column.name
        for column in table.columns
        if column.name not in archived
        and not column.nullable
        and column.default is None
        and column.server_default is None
    ]
    if needed:
        raise ArchiveError(
            f"{where} does not fit table {table.name!r}: the table has NOT NULL column(s) "
            f"{', '.join(needed)} without a default, which the archive's rows lack; give them "
            "a default, or import into the store those rows belong to"
        )


def check_import(
    index: Index,
    path: str | os.PathLike[str],
    *,
    suffix: str,
    explicit_ids: bool = False,
    new_table: bool = False,
) -> ImportPlan:
    """Read and check the whole archive at ``path`` against ``index``'s table; write nothing.

    ``suffix`` is the target store's file_suffix; with ``new_table`` the table does
    not exist yet (it will be created), so no row of it is read. ArchiveError names
    the first problem found.
    """
    archive = ArchiveReader(path)
    try:
        entries, explicit = _check(archive, index, suffix, explicit_ids, new_table)
    except BaseException:
        archive.close()
        raise
    return ImportPlan(archive, entries, explicit)


def _check(
    archive: ArchiveReader, index: Index, suffix: str, explicit_ids: bool, new_table: bool
) -> tuple[dict[str, _Entry], list[str]]:
    manifest, where = archive.manifest, archive.where
    table = index.table
    if manifest.file_suffix != suffix:
        raise ArchiveError(
            f"{where} holds files ending in {manifest.file_suffix!r}, but this store's "
            f"file_suffix is {suffix!r}; import it into a store with "
            f"file_suffix={manifest.file_suffix!r}"
        )
    expected = {MANIFEST, ROWS} | {entry["name"] for entry in manifest.files}
    missing = sorted(expected - archive.members.keys())
    if missing:
        raise ArchiveError(
            f"{where} is damaged: it lacks {listed(missing)}, listed in its manifest; "
            "export it again"
        )
    extra = sorted(archive.members.keys() - expected)
    if extra:
        raise ArchiveError(
            f"{where} is refused: it holds {listed(extra)}, which its manifest does not list"
        )
    _fit_columns(manifest, table, where)

    rows_info = manifest.rows
    archive.digest(ROWS, rows_info["size"], rows_info["sha256"])
    lines = archive.read(ROWS).split(b"\n")
    if lines[-1] != b"":
        raise ArchiveError(f"{where} is damaged: {ROWS} does not end with a newline")
    lines.pop()
    if len(lines) != rows_info["count"]:
        raise ArchiveError(
            f"{where} is damaged: {ROWS} has {len(lines)} rows, its manifest says "
            f"{rows_info['count']}"
        )
    names = [described["name"] for described in manifest.columns]
    name_set = set(names)
    params = [name for name in names if name not in RESERVED_COLUMNS]
    columns = {column.name: column for column in table.columns}
    rules = {name: rule_for(columns[name], table.name, index.dialect) for name in params}
    files = {entry["id"]: entry for entry in manifest.files}
    entries: dict[str, _Entry] = {}
    explicit: list[str] = []
    keys: list[dict[str, Any]] = []
    hashed_ids: list[tuple[int, str]] = []
    for number, line in enumerate(lines, start=1):
        at = f"{where}: row {number} of {ROWS}"
        try:
            doc = json.loads(line.decode("utf-8"))
            if not isinstance(doc, dict):
                raise ValueError("not a JSON object")
            row = decode_row(doc.get("row"), doc.get("types", {}))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise ArchiveError(f"{at} is damaged ({exc})") from None
        run_id = row["id"]
        at = f"{at} (id {run_id})"
        if set(row) != name_set:
            raise ArchiveError(
                f"{at} has the columns {', '.join(sorted(row))}, but the manifest lists "
                f"{', '.join(names)}: the archive is damaged"
            )
        try:
            check_id(run_id)
        except (TypeError, ValueError):
            raise ArchiveError(f"{at} has an id that cannot name a file: {run_id!r}") from None
        if run_id in entries:
            raise ArchiveError(f"{where} is refused: it holds two rows with the id {run_id}")
        entry = files.get(run_id)
        if entry is None:
            raise ArchiveError(f"{where} is damaged: its manifest lists no file for row {run_id}")
        hashed, as_int = doc.get("hashed"), doc.get("as_int", [])
        if hashed is None:
            explicit.append(run_id)
        else:
            if not (
                isinstance(hashed, list)
                and isinstance(as_int, list)
                and set(hashed) <= set(params)
                and set(as_int) <= set(hashed)
            ):
                raise ArchiveError(f"{at} names unknown parameter columns: it is damaged")
            key = {name: row[name] for name in hashed}
            for name in as_int:
                value = key[name]
                if not (isinstance(value, float) and math.isfinite(value) and value.is_integer()):
                    raise ArchiveError(f"{at}: column {name!r} is not a whole number: damaged")
                key[name] = int(value)
            keys.append(key)
            hashed_ids.append((number, run_id))
        entries[run_id] = _entry(row, rules, columns, entry, at)
    if len(entries) != len(files):
        unused = sorted(files.keys() - entries.keys())
        raise ArchiveError(
            f"{where} is damaged: its manifest lists files of {listed(unused)}, which "
            f"{ROWS} has no row for"
        )
    try:
        ids = hashing.hash_many(keys)
    except (TypeError, ValueError) as exc:
        raise ArchiveError(
            f"{where} is damaged: a row's parameters cannot be hashed ({exc})"
        ) from None
    for (number, run_id), computed in zip(hashed_ids, ids, strict=True):
        if computed != run_id:
            raise ArchiveError(
                f"{where}: row {number} of {ROWS} has the id {run_id}, but its parameters hash "
                f"to {computed}: the row was altered after the export; export it again"
            )
    if explicit and not explicit_ids:
        raise ArchiveError(
            f"{where} has {len(explicit)} row(s) whose id is not the hash of their parameters "
            f"(ids given explicitly, e.g. to register): {listed(explicit)}; nothing can check "
            "that such an id names the same run in this store, so they are imported only on "
            "request: Store.import_(path, explicit_ids=True) or `entropic import "
            "--explicit-ids`"
        )
    if explicit and not new_table:
        _refuse_conflicts(index, entries, explicit, params, columns, where)
    for entry in manifest.files:
        archive.digest(entry["name"], entry["size"], entry["sha256"])
    return entries, explicit


def _entry(
    row: dict[str, Any],
    rules: Mapping[str, Any],
    columns: Mapping[str, sa.Column[Any]],
    file_entry: Mapping[str, Any],
    at: str,
) -> _Entry:
    """One archive row as the target table stores it (its values read by the target's rules)."""
    created = row["created_at"]
    if not isinstance(created, datetime):
        raise ArchiveError(f"{at}: created_at is not a date-time")
    custom = row["custom_data"]
    if not isinstance(custom, dict):
        raise ArchiveError(f"{at}: custom_data is not a JSON object")
    stored: dict[str, Any] = {}
    try:
        stored["custom_data"] = json_clean(custom, "custom_data")
        for name, rule in rules.items():
            stored[columns[name].key] = rule.check(row[name], f"column {name!r}")
    except (TypeError, ValueError) as exc:
        raise ArchiveError(f"{at} does not fit the store's table: {exc}") from None
    created = _naive_utc(created)
    stored[columns["id"].key] = row["id"]
    stored[columns["created_at"].key] = created
    return _Entry(stored, created, file_entry["name"], file_entry["size"], file_entry["sha256"])


def _refuse_conflicts(
    index: Index,
    entries: Mapping[str, _Entry],
    explicit: list[str],
    params: list[str],
    columns: Mapping[str, sa.Column[Any]],
    where: str,
) -> None:
    """Refuse explicit ids that name a row of other parameters in the target store."""
    table = index.table
    selected = [columns[name] for name in params]
    with index.engine.connect() as conn:
        for i in range(0, len(explicit), ID_CHUNK):
            chunk = explicit[i : i + ID_CHUNK]
            stmt = sa.select(table.c.id, *selected).where(table.c.id.in_(chunk))
            for run_id, *values in conn.execute(stmt):
                ours = entries[run_id].row
                theirs = dict(zip(params, values, strict=True))
                differ = [n for n in params if theirs[n] != ours[columns[n].key]]
                if differ:
                    raise ArchiveError(
                        f"{where}: the explicit id {run_id} names a run of other parameters in "
                        f"this store ({', '.join(f'{n}={theirs[n]!r}' for n in differ)}) than in "
                        "the archive; nothing was imported (delete or rename one of them first)"
                    )


def apply_import(
    plan: ImportPlan,
    index: Index,
    disk: Disk,
    *,
    before_write: Callable[[], None] | None = None,
) -> ImportReport:
    """Write a checked archive: each row the store lacks, or holds an older version of.

    Rows are claimed first (points a live process is running are left to it);
    files are written through ``.entropic/tmp`` and renamed into place, each with
    a sidecar; the rows are committed in one transaction that also releases the
    claims. If anything fails, every file is put back as it was and no row is
    written.
    """
    report = ImportReport(Path(os.path.abspath(plan.archive.path)))
    if before_write is not None:
        before_write()
    entries = plan.entries
    claims = Claims(index)
    ids = list(entries)
    won: list[str] = []
    committed = False
    try:
        won, report.busy = claims.claim(ids) if ids else ([], [])
        claims.start_heartbeat()
        existing = _existing(index, won)
        writes: list[str] = []
        for run_id in won:
            current = existing.get(run_id)
            if current is None or not os.path.exists(current[1]):
                report.inserted.append(run_id)
                writes.append(run_id)
            elif entries[run_id].created_at > current[0]:
                report.replaced.append(run_id)
                writes.append(run_id)
            else:
                report.kept.append(run_id)
        _write(plan, index, disk, claims, writes, existing, won)
        committed = True
    finally:
        claims.stop_heartbeat()
        if not committed and won:
            try:
                claims.release(won)
            except Exception as exc:  # the database is gone; the claims go stale
                log.warning("could not release the import's claims: %s", exc)
        claims.close()
    log.info(
        "imported %s into %s: %d new, %d replaced, %d kept, %d busy",
        plan.archive.path,
        index.name,
        len(report.inserted),
        len(report.replaced),
        len(report.kept),
        len(report.busy),
    )
    return report


def _existing(index: Index, ids: list[str]) -> dict[str, tuple[datetime, str]]:
    """(created_at, result_file) of the rows of ``ids`` the store holds."""
    table = index.table
    found: dict[str, tuple[datetime, str]] = {}
    stmt = sa.select(table.c.id, table.c.created_at, table.c.result_file).where(
        table.c.id.in_(sa.bindparam("ids", expanding=True))
    )
    with index.engine.connect() as conn:
        for i in range(0, len(ids), ID_CHUNK):
            for run_id, created, result_file in conn.execute(stmt, {"ids": ids[i : i + ID_CHUNK]}):
                found[run_id] = (_naive_utc(created), str(result_file))
    return found


def _write(
    plan: ImportPlan,
    index: Index,
    disk: Disk,
    claims: Claims,
    writes: list[str],
    existing: dict[str, tuple[datetime, str]],
    won: list[str],
) -> None:
    """Write the files of ``writes``, then their rows and the claims' release in one transaction."""
    archive, entries = plan.archive, plan.entries
    table = index.table
    result_key = table.c.result_file.key
    done: list[tuple[str, bool]] = []  # (id, whether an earlier file was kept aside)
    rows: list[dict[str, Any]] = []
    try:
        for run_id in writes:
            path = disk.result_file(run_id)
            with suppress(FileNotFoundError):
                if stat.S_ISDIR(os.lstat(path).st_mode):
                    raise ArchiveError(
                        f"{path} is a folder where the result file of {run_id} belongs; move "
                        "it out of results_dir, then import again (nothing was imported)"
                    )
        for run_id in writes:
            entry = entries[run_id]
            path = disk.result_file(run_id)
            row = {**entry.row, result_key: path}
            # Aside, sidecar, file: a crash before the file is in place leaves a sidecar
            # whose file is gone (dropped by recovery, which puts the earlier file back);
            # after, a finished row that recovery indexes.
            done.append((run_id, disk.move_aside(run_id)))
            disk.write_sidecar(run_id, row)
            with archive.open(entry.member) as source:
                try:
                    disk.write_result(run_id, source, entry.size, entry.sha256)  # type: ignore[arg-type]
                except ValueError as exc:
                    raise ArchiveError(
                        f"{archive.where} changed while it was imported ({exc}); nothing was "
                        "imported"
                    ) from None
            rows.append(row)
        statement = upsert(table, index.dialect)
        f = FAILURES.c
        with index.begin_write() as conn:
            if _existing_in(conn, table, writes) != {
                i: existing[i][0] for i in writes if i in existing
            }:
                raise ArchiveError(
                    "the store changed while the archive was imported (another process wrote "
                    "or deleted some of its rows); nothing was imported: import it again"
                )
            for i in range(0, len(rows), ID_CHUNK):
                chunk = rows[i : i + ID_CHUNK]
                if statement is not None:
                    conn.execute(statement, chunk)
                else:
                    for row in chunk:
                        conn.execute(sa.delete(table).where(table.c.id == row["id"]))
                        conn.execute(sa.insert(table), row)
            for i in range(0, len(writes), ID_CHUNK):
                conn.execute(
                    sa.delete(FAILURES).where(
                        f.table_name == index.name, f.id.in_(writes[i : i + ID_CHUNK])
                    )
                )
            release = claims.releaser(won)
            if release is not None:
                release(conn)
    except BaseException:
        for run_id, kept in reversed(done):
            disk.remove_sidecar(run_id)
            disk.discard_result(run_id)
            if kept:
                disk.restore_aside(run_id)
        raise
    for run_id, _kept in done:
        disk.discard_aside(run_id)
        disk.remove_sidecar(run_id)


def _existing_in(conn: sa.Connection, table: sa.Table, ids: list[str]) -> dict[str, datetime]:
    """created_at of the rows of ``ids`` the table holds, read inside a write transaction."""
    found: dict[str, datetime] = {}
    for i in range(0, len(ids), ID_CHUNK):
        stmt = sa.select(table.c.id, table.c.created_at).where(
            table.c.id.in_(ids[i : i + ID_CHUNK])
        )
        found.update((run_id, _naive_utc(created)) for run_id, created in conn.execute(stmt))
    return found

"""Archives: a store's rows and result files in one tar file, to carry them to another store.

An archive is a tar file (gzip, bzip2 or xz compressed when its name ends in
``.gz``/``.tgz``, ``.bz2`` or ``.xz``) holding exactly:

- ``rows.jsonl``: one row a line, written by the row codec (``codec.py``), so
  datetimes, dates, decimals and bytes come back as such, with the names of the
  parameter columns whose hash is the row's id (``null`` for an explicit id);
- ``files/{id}{file_suffix}``: the result file of each row;
- ``manifest.json`` (last): the format version, the entropic version, the table,
  its columns and their types, the file suffix, and the size and SHA-256 of
  ``rows.jsonl`` and of every file, by id.

``check_import`` reads and checks all of it against the target table before
anything is written: every member (no absolute, ``..``, link or special
members), every checksum, every id (recomputed from its parameters), every value
(read by the target column's rule). ``apply_import`` then writes as a run does:
under claims, each file through ``.entropic/tmp`` and a rename, the earlier file
kept aside and a sidecar written until the rows are committed in one
transaction, so a crash at any point leaves what recovery finishes or undoes.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import logging
import lzma
import math
import os
import secrets
import stat
import tarfile
import tempfile
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import IO, Any, BinaryIO, Literal

import sqlalchemy as sa

from entropic import hashing
from entropic._storage.claims import Claims
from entropic._storage.codec import decode_row, encode_row
from entropic._storage.columns import json_clean, rule_for
from entropic._storage.disk import Disk, check_file_suffix, check_id
from entropic._storage.index import ID_CHUNK, Index, upsert
from entropic._storage.tables import FAILURES
from entropic.errors import ArchiveError
from entropic.models import ID_MAX_LENGTH, RESERVED_COLUMNS

__all__ = [
    "FORMAT_VERSION",
    "ExportReport",
    "ImportPlan",
    "ImportReport",
    "Manifest",
    "apply_import",
    "check_import",
    "describe_column",
    "export_archive",
    "read_manifest",
    "table_for",
]

log = logging.getLogger("entropic")

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ROWS = "rows.jsonl"
FILES = "files/"
_CHUNK = 1 << 20
#: Ids named in one error message at most.
_SHOWN = 5
_HEX = frozenset("0123456789abcdef")
#: Up to this many NULL columns, every subset of them is tried as the ones params left out.
_MAX_NULL_SUBSETS = 6

# Column types an archive names, most specific first (Double is a Float, Float a Numeric, ...).
_KINDS: tuple[tuple[type[Any], str], ...] = (
    (sa.Boolean, "boolean"),
    (sa.Enum, "enum"),
    (sa.BigInteger, "big_integer"),
    (sa.SmallInteger, "small_integer"),
    (sa.Integer, "integer"),
    (sa.Double, "double"),
    (sa.Float, "float"),
    (sa.Numeric, "numeric"),
    (sa.Text, "text"),
    (sa.String, "string"),
    (sa.DateTime, "datetime"),
    (sa.Date, "date"),
    (sa.Time, "time"),
    (sa.JSON, "json"),
    (sa.LargeBinary, "binary"),
)


def _entropic_version() -> str:
    try:
        return version("entropic")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0+unknown"


def _listed(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:_SHOWN])
    return shown if len(ids) <= _SHOWN else f"{shown}, ... ({len(ids)} in all)"


# -- column types --------------------------------------------------------------------------


def describe_column(column: sa.Column[Any]) -> dict[str, Any]:
    """A column's name, portable type and nullability, as the manifest lists it."""
    ctype = column.type
    kind = next((name for sa_type, name in _KINDS if isinstance(ctype, sa_type)), "other")
    described: dict[str, Any] = {"name": column.name, "type": kind}
    length = getattr(ctype, "length", None)
    if kind in ("string", "text", "enum") and isinstance(length, int):
        described["length"] = length
    if kind == "numeric":
        described["precision"] = getattr(ctype, "precision", None)
        described["scale"] = getattr(ctype, "scale", None)
        described["asdecimal"] = bool(getattr(ctype, "asdecimal", True))
    if kind == "datetime":
        described["timezone"] = bool(getattr(ctype, "timezone", False))
    if kind == "enum":
        described["enums"] = list(getattr(ctype, "enums", []))
    if kind == "other":
        try:
            described["sql"] = str(ctype)
        except Exception:  # a dialect-only type the default dialect cannot print
            described["sql"] = type(ctype).__name__
    described["nullable"] = bool(column.nullable)
    return described


def _column_type(described: Mapping[str, Any]) -> Any:
    """The SQLAlchemy type of a described column, or None for a type entropic cannot name."""
    kind = described.get("type")
    simple: dict[str, Any] = {
        "boolean": sa.Boolean,
        "big_integer": sa.BigInteger,
        "small_integer": sa.SmallInteger,
        "integer": sa.Integer,
        "double": sa.Double,
        "float": sa.Float,
        "text": sa.Text,
        "date": sa.Date,
        "time": sa.Time,
        "json": sa.JSON,
        "binary": sa.LargeBinary,
    }
    if kind in simple:
        return simple[kind]()
    length = described.get("length")
    length = length if isinstance(length, int) and length > 0 else None
    if kind == "string":
        return sa.String(length)
    if kind == "enum":
        enums = described.get("enums")
        if isinstance(enums, list) and enums and all(isinstance(e, str) for e in enums):
            return sa.Enum(*enums, native_enum=False, length=length or max(map(len, enums)))
        return None
    if kind == "numeric":
        precision, scale = described.get("precision"), described.get("scale")
        precision = precision if isinstance(precision, int) else None
        scale = scale if isinstance(scale, int) else None
        if described.get("asdecimal", True):
            return sa.Numeric(precision, scale, asdecimal=True)
        return sa.Numeric(precision, scale, asdecimal=False)
    if kind == "datetime":
        return sa.DateTime(timezone=bool(described.get("timezone", False)))
    return None


def table_for(manifest: Manifest, name: str) -> sa.Table:
    """A table for the archive's rows, named ``name``, to create where none exists yet."""
    columns: list[sa.Column[Any]] = [
        sa.Column("id", sa.String(ID_MAX_LENGTH), primary_key=True),
        sa.Column("result_file", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=False), nullable=False),
        sa.Column("custom_data", sa.JSON, nullable=False),
    ]
    for described in manifest.columns:
        if described["name"] in RESERVED_COLUMNS:
            continue
        ctype = _column_type(described)
        if ctype is None:
            raise ArchiveError(
                f"the archive's column {described['name']!r} has a type entropic cannot create "
                f"({described.get('sql', described['type'])}); create table {name!r} yourself "
                "(with your model: Store(...) creates it), then import into it"
            )
        columns.append(sa.Column(described["name"], ctype, nullable=bool(described["nullable"])))
    return sa.Table(name, sa.MetaData(), *columns)


# -- the manifest --------------------------------------------------------------------------


@dataclass
class Manifest:
    """What ``manifest.json`` says: the source table, its columns, and every member's checksum."""

    table: str
    file_suffix: str
    columns: list[dict[str, Any]]
    rows: dict[str, Any]  # name, count, size, sha256 of rows.jsonl
    files: list[dict[str, Any]]  # id, name, size, sha256 of each result file
    entropic_version: str
    created_at: str

    def as_json(self) -> dict[str, Any]:
        return {
            "entropic_archive": FORMAT_VERSION,
            "entropic_version": self.entropic_version,
            "created_at": self.created_at,
            "table": self.table,
            "file_suffix": self.file_suffix,
            "columns": self.columns,
            "rows": self.rows,
            "files": self.files,
        }


def _checksum(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and set(value) <= _HEX


def _size(value: object) -> bool:
    return type(value) is int and value >= 0


def _parse_manifest(data: bytes, where: str) -> Manifest:
    def bad(problem: str) -> ArchiveError:
        return ArchiveError(f"{where} is damaged: its {MANIFEST} {problem}; export it again")

    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise bad(f"is not JSON ({exc})") from None
    if not isinstance(doc, dict) or "entropic_archive" not in doc:
        raise bad("is not an entropic archive manifest")
    fmt = doc["entropic_archive"]
    if type(fmt) is not int or fmt < 1:
        raise bad(f"has an unknown format {fmt!r}")
    if fmt > FORMAT_VERSION:
        raise ArchiveError(
            f"{where} has archive format {fmt}, made by a newer entropic "
            f"({doc.get('entropic_version', '?')}); this one reads format {FORMAT_VERSION}: "
            "upgrade entropic to import it"
        )
    table, suffix = doc.get("table"), doc.get("file_suffix")
    if not isinstance(table, str) or not table:
        raise bad("names no table")
    if not isinstance(suffix, str):
        raise bad("names no file_suffix")
    try:
        check_file_suffix(suffix)
    except (TypeError, ValueError) as exc:
        raise bad(f"has an unusable file_suffix: {exc}") from None
    columns = doc.get("columns")
    if not isinstance(columns, list) or not all(
        isinstance(c, dict)
        and isinstance(c.get("name"), str)
        and isinstance(c.get("type"), str)
        and isinstance(c.get("nullable"), bool)
        for c in columns
    ):
        raise bad("does not list the columns (name, type, nullable)")
    names = [c["name"] for c in columns]
    if len(set(names)) != len(names):
        raise bad("lists a column twice")
    if not set(RESERVED_COLUMNS) <= set(names):
        raise bad(f"lacks entropic's columns {', '.join(RESERVED_COLUMNS)}")
    rows = doc.get("rows")
    if not (
        isinstance(rows, dict)
        and rows.get("name") == ROWS
        and _size(rows.get("count"))
        and _size(rows.get("size"))
        and _checksum(rows.get("sha256"))
    ):
        raise bad(f"does not give the row count, size and SHA-256 of {ROWS}")
    files = doc.get("files")
    if not isinstance(files, list):
        raise bad("does not list the files")
    seen: set[str] = set()
    for entry in files:
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("id"), str)
            and isinstance(entry.get("name"), str)
            and _size(entry.get("size"))
            and _checksum(entry.get("sha256"))
        ):
            raise bad("has a file entry without id, name, size and SHA-256")
        run_id = entry["id"]
        try:
            check_id(run_id)
        except (TypeError, ValueError):
            raise bad(f"lists an unusable id {run_id!r}") from None
        if run_id in seen:
            raise bad(f"lists the id {run_id} twice")
        seen.add(run_id)
        if entry["name"] != f"{FILES}{run_id}{suffix}":
            raise bad(f"names the file of {run_id} {entry['name']!r}, not {FILES}{run_id}{suffix}")
    return Manifest(
        table,
        suffix,
        columns,
        rows,
        files,
        str(doc.get("entropic_version", "")),
        str(doc.get("created_at", "")),
    )


# -- reading an archive --------------------------------------------------------------------


def _damage(exc: BaseException) -> bool:
    """Whether ``exc`` says the archive's bytes are bad (not that it could not be opened)."""
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError)):
        return False
    return isinstance(exc, (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError))


def _member_problem(member: tarfile.TarInfo) -> str:
    name = member.name
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "an absolute path"
    if ".." in name.replace("\\", "/").split("/"):
        return "a path out of the archive (..)"
    if member.issym():
        return f"a symlink (to {member.linkname!r})"
    if member.islnk():
        return f"a hard link (to {member.linkname!r})"
    if not member.isreg():
        return "not a regular file (a folder or a device)"
    return ""


class _Archive:
    """An archive opened for reading: its members checked for safety, its manifest parsed."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.where = f"archive {self.path}"
        if not self.path.is_file():
            raise FileNotFoundError(
                f"no archive at {self.path}; give the file entropic export (or Store.export) wrote"
            )
        try:
            self.tar = tarfile.open(self.path, "r:*")  # noqa: SIM115 - closed by close()
        except Exception as exc:
            if not _damage(exc):
                raise
            raise ArchiveError(
                f"{self.where} is not a readable tar archive ({exc}); give the file "
                "`entropic export` (or Store.export) wrote"
            ) from None
        try:
            self.members: dict[str, tarfile.TarInfo] = {}
            for member in self._read(self.tar.getmembers):
                problem = _member_problem(member)
                if problem:
                    raise ArchiveError(
                        f"{self.where} is refused: its member {member.name!r} is {problem}; an "
                        f"entropic archive holds only regular files ({MANIFEST}, {ROWS}, "
                        f"{FILES}<id><suffix>), so it was not made by entropic or was altered"
                    )
                if member.name in self.members:
                    raise ArchiveError(
                        f"{self.where} is refused: it holds the member {member.name!r} twice"
                    )
                self.members[member.name] = member
            self.manifest = _parse_manifest(self.read(MANIFEST), self.where)
        except BaseException:
            self.tar.close()
            raise

    def close(self) -> None:
        self.tar.close()

    def _read(self, function: Callable[[], Any]) -> Any:
        try:
            return function()
        except Exception as exc:
            if not _damage(exc):
                raise
            raise ArchiveError(
                f"{self.where} is damaged (truncated or corrupt: {exc}); export it again"
            ) from None

    def open(self, name: str) -> IO[bytes]:
        member = self.members.get(name)
        if member is None:
            raise ArchiveError(
                f"{self.where} is damaged: it lacks the member {name!r}; export it again"
            )
        handle = self._read(lambda: self.tar.extractfile(member))
        assert handle is not None  # a regular member
        return handle  # type: ignore[no-any-return]

    def read(self, name: str) -> bytes:
        with self.open(name) as handle:
            return self._read(handle.read)  # type: ignore[no-any-return]

    def digest(self, name: str, size: int, sha256: str) -> None:
        """Check that member ``name`` has ``size`` bytes with this SHA-256; ArchiveError if not."""
        member = self.members.get(name)
        if member is not None and member.size != size:
            raise ArchiveError(
                f"{self.where} is damaged: {name} has {member.size} bytes, its manifest says "
                f"{size}; export it again"
            )
        digest = hashlib.sha256()
        with self.open(name) as handle:
            while chunk := self._read(lambda: handle.read(_CHUNK)):
                digest.update(chunk)
        if digest.hexdigest() != sha256:
            raise ArchiveError(
                f"{self.where} is damaged: {name} does not match its SHA-256 in the manifest; "
                "export it again"
            )


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """The manifest of the archive at ``path`` (its members checked for safety too)."""
    archive = _Archive(path)
    archive.close()
    return archive.manifest


# -- export --------------------------------------------------------------------------------


@dataclass
class ExportReport:
    """What ``Store.export`` wrote: how many rows (each with its file), and what it left out."""

    path: Path
    rows: int
    #: Ids that are not the hash of their row's parameters (explicit ids).
    explicit: list[str] = field(default_factory=list)
    #: Rows left out because their result file is gone (``entropic check`` lists them).
    missing: list[str] = field(default_factory=list)


def _plain(value: Any) -> Any:
    return value.name if isinstance(value, Enum) else value


def _hash_recipe(
    run_id: str, row: Mapping[str, Any], params: Sequence[str]
) -> tuple[list[str], list[str]] | None:
    """(the parameter columns, those hashed as ints) whose values hash to ``run_id``, or None.

    A Store hashes the params it was given, not the stored values: a column the
    params left out holds NULL or its default, and an int given for a float
    column is stored as a float. The usual ways back are tried in turn.
    """
    nulls = [name for name in params if row[name] is None]
    given = [name for name in params if row[name] is not None]
    whole = {
        name
        for name in given
        if isinstance(row[name], float) and math.isfinite(row[name]) and row[name].is_integer()
    }
    # Which NULL columns the params left out: none, all, or (when few) any subset.
    dropped: list[tuple[str, ...]] = [(), tuple(nulls)]
    if len(nulls) <= _MAX_NULL_SUBSETS:
        dropped += [
            combo for size in range(1, len(nulls)) for combo in itertools.combinations(nulls, size)
        ]
    bases = [[name for name in params if name not in drop] for drop in dropped]
    # Then a column left out to take its (non-NULL) default.
    bases += [[name for name in base if name != gone] for base in bases[:2] for gone in given]
    tried: list[tuple[list[str], list[str]]] = []
    for names in bases:
        tried.append((names, []))
        ints = [name for name in names if name in whole]
        if ints:
            tried.append((names, ints))
    for names, ints in tried:
        key = {name: row[name] for name in names}
        for name in ints:
            key[name] = int(key[name])
        try:
            if hashing.hash_params(key) == run_id:
                return names, ints
        except (TypeError, ValueError):
            continue
    return None


class _HashingReader:
    """A file read through once, its SHA-256 computed on the way."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.sha256 = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size)
        self.sha256.update(data)
        return data


def _tar_mode(path: Path) -> Literal["w", "w:gz", "w:bz2", "w:xz"]:
    name = path.name.lower()
    if name.endswith((".tar.gz", ".tgz", ".gz")):
        return "w:gz"
    if name.endswith((".tar.bz2", ".tbz2", ".bz2")):
        return "w:bz2"
    if name.endswith((".tar.xz", ".txz", ".xz")):
        return "w:xz"
    return "w"


def _member(name: str, size: int, mtime: float) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = int(mtime)
    info.mode = 0o644
    return info


def export_archive(
    index: Index,
    path: str | os.PathLike[str],
    *,
    suffix: str,
    conditions: Sequence[Any] = (),
) -> ExportReport:
    """Write the rows matching ``conditions`` and their result files to a new archive at ``path``.

    The archive is written beside ``path`` under a temporary name and renamed
    when complete, so ``path`` is the whole archive or nothing. Rows whose file is
    gone are left out and reported.
    """
    target = Path(os.path.abspath(os.fspath(path)))
    if target.exists() or target.is_symlink():
        raise FileExistsError(
            f"{target} exists; remove it or give another path (an export never overwrites)"
        )
    if not target.parent.is_dir():
        raise FileNotFoundError(f"the folder of {target} does not exist; create it first")
    table = index.table
    names = [column.name for column in table.columns]
    params = [name for name in names if name not in RESERVED_COLUMNS]
    stmt = sa.select(*table.columns).where(*conditions).order_by(table.c.created_at, table.c.id)
    report = ExportReport(target, 0)
    kept: list[tuple[str, str]] = []  # (id, result file)
    with tempfile.SpooledTemporaryFile(max_size=64 << 20) as lines:
        rows_sha = hashlib.sha256()
        with index.engine.connect() as conn:
            for values in conn.execution_options(yield_per=ID_CHUNK).execute(stmt):
                row = {name: _plain(value) for name, value in zip(names, values, strict=True)}
                run_id, result_file = row["id"], row["result_file"]
                if not (isinstance(result_file, str) and os.path.isfile(result_file)):
                    report.missing.append(run_id)
                    continue
                recipe = _hash_recipe(run_id, row, params)
                plain, types = encode_row(row)
                line: dict[str, Any] = {"row": plain, "types": types}
                if recipe is None:
                    line["hashed"] = None
                    report.explicit.append(run_id)
                else:
                    line["hashed"] = recipe[0]
                    if recipe[1]:
                        line["as_int"] = recipe[1]
                try:
                    text = json.dumps(line, ensure_ascii=True, separators=(",", ":"))
                except (TypeError, ValueError) as exc:
                    raise ArchiveError(
                        f"row {run_id} holds a value an archive cannot hold ({exc}); archives "
                        "hold JSON values, datetimes, dates, decimals and bytes"
                    ) from None
                data = (text + "\n").encode("ascii")
                rows_sha.update(data)
                lines.write(data)
                kept.append((run_id, result_file))
        rows_size = lines.tell()
        lines.seek(0)
        report.rows = len(kept)
        rows = {"name": ROWS, "count": len(kept), "size": rows_size, "sha256": rows_sha.hexdigest()}
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
        try:
            with tarfile.open(tmp, _tar_mode(target)) as tar:
                now = time.time()
                tar.addfile(_member(ROWS, rows_size, now), lines)
                files = [
                    _add_file(tar, run_id, result_file, suffix) for run_id, result_file in kept
                ]
                manifest = Manifest(
                    table.name,
                    suffix,
                    [describe_column(column) for column in table.columns],
                    rows,
                    files,
                    _entropic_version(),
                    datetime.now(timezone.utc).replace(tzinfo=None).isoformat(),
                )
                doc = json.dumps(manifest.as_json(), ensure_ascii=True, indent=1).encode("ascii")
                tar.addfile(_member(MANIFEST, len(doc), now), io.BytesIO(doc))
            os.replace(tmp, target)
        except BaseException:
            with suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
    log.info("exported %d row(s) of %s to %s", report.rows, table.name, target)
    return report


def _add_file(tar: tarfile.TarFile, run_id: str, result_file: str, suffix: str) -> dict[str, Any]:
    """Add the result file of ``run_id`` to ``tar``; its manifest entry."""
    name = f"{FILES}{run_id}{suffix}"
    try:
        handle = open(result_file, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise ArchiveError(
            f"the result file of {run_id} ({result_file}) could not be read during the export "
            f"({exc.strerror or exc}); nothing was written: run the export again"
        ) from None
    with handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ArchiveError(
                f"the result file of {run_id} ({result_file}) is not a regular file; nothing "
                "was written"
            )
        reader = _HashingReader(handle)
        try:
            tar.addfile(_member(name, info.st_size, info.st_mtime), reader)
        except OSError as exc:
            if isinstance(exc, tarfile.TarError) or "unexpected end of data" in str(exc):
                raise ArchiveError(
                    f"the result file of {run_id} ({result_file}) changed during the export; "
                    "nothing was written: run the export again"
                ) from None
            raise
    return {"id": run_id, "name": name, "size": info.st_size, "sha256": reader.sha256.hexdigest()}


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

    archive: _Archive
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
    archive = _Archive(path)
    try:
        entries, explicit = _check(archive, index, suffix, explicit_ids, new_table)
    except BaseException:
        archive.close()
        raise
    return ImportPlan(archive, entries, explicit)


def _check(
    archive: _Archive, index: Index, suffix: str, explicit_ids: bool, new_table: bool
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
            f"{where} is damaged: it lacks {_listed(missing)}, listed in its manifest; "
            "export it again"
        )
    extra = sorted(archive.members.keys() - expected)
    if extra:
        raise ArchiveError(
            f"{where} is refused: it holds {_listed(extra)}, which its manifest does not list"
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
            f"{where} is damaged: its manifest lists files of {_listed(unused)}, which "
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
            f"(ids given explicitly, e.g. to register): {_listed(explicit)}; nothing can check "
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

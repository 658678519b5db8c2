"""The archive format: its manifest, its column descriptions, and reading a tar file safely.

An archive is a tar file (gzip, bzip2 or xz compressed when its name ends in
``.gz``/``.tgz``, ``.bz2`` or ``.xz``) holding exactly:

- ``rows.jsonl``: one row a line, written by the row codec (``codec.py``), so
  datetimes, dates, decimals and bytes come back as such, with the names of the
  parameter columns whose hash is the row's id (``null`` for an explicit id);
- ``files/{id}{file_suffix}``: the result file of each row;
- ``manifest.json`` (last): the format version, the entropic version, the table,
  its columns and their types, the file suffix, and the size and SHA-256 of
  ``rows.jsonl`` and of every file, by id.

``ArchiveReader`` refuses absolute, ``..``, link and special members before it
reads anything; ``archive_export.py`` and ``archive_import.py`` write and read archives with it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import lzma
import os
import tarfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa

from entropic._storage.disk import check_file_suffix, check_id
from entropic.errors import ArchiveError
from entropic.models import ID_MAX_LENGTH, RESERVED_COLUMNS

__all__ = [
    "FILES",
    "FORMAT_VERSION",
    "MANIFEST",
    "ROWS",
    "ArchiveReader",
    "Manifest",
    "describe_column",
    "entropic_version",
    "listed",
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


def entropic_version() -> str:
    try:
        return version("entropic")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0+unknown"


def listed(ids: Sequence[str]) -> str:
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


class ArchiveReader:
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
    archive = ArchiveReader(path)
    archive.close()
    return archive.manifest

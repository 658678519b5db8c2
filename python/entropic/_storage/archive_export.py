"""Exporting a store: its rows and result files in one archive, to carry them to another store.

The format is ``archive_format.py``'s; ``archive_import.py`` reads an archive
back into a store.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import logging
import math
import os
import secrets
import stat
import tarfile
import tempfile
import time
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any, BinaryIO, Literal

import sqlalchemy as sa

from entropic import hashing
from entropic._storage.archive_format import (
    FILES,
    MANIFEST,
    ROWS,
    Manifest,
    describe_column,
    entropic_version,
)
from entropic._storage.codec import encode_row
from entropic._storage.index import ID_CHUNK, Index
from entropic.errors import ArchiveError
from entropic.models import RESERVED_COLUMNS

__all__ = ["ExportReport", "export_archive"]

log = logging.getLogger("entropic")

#: Up to this many NULL columns, every subset of them is tried as the ones params left out.
_MAX_NULL_SUBSETS = 6


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
                    entropic_version(),
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

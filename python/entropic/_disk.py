"""The files of a Store: result paths, the sidecar journal and old results kept aside.

Everything entropic writes lives inside ``results_dir``. Result files are
``results_dir/{id}{file_suffix}``; entropic's own files live under
``results_dir/.entropic/``, a name no result file can take because ids never
start with a dot:

- ``.entropic/sidecars/{id}.json``: the row of a finished run, written
  atomically before the database and removed after the commit, so a process
  that dies in between loses nothing;
- ``.entropic/aside/{id}``: the previous result of a run being re-run, put
  back if the re-run fails or dies;
- ``.entropic/tmp/``: half-written sidecars, renamed into place when complete;
- ``.entropic/journal/{owner}.{n}.jsonl``: what a sweep uses instead of one
  sidecar per run: the rows of the runs of one batch, one JSON line each,
  appended as each run finishes and removed once the batch is committed (one
  ``write`` per run instead of creating, renaming and deleting a file).
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

__all__ = ["Disk", "Journal", "check_file_suffix", "check_id"]

META_DIR = ".entropic"
SIDECAR_SUFFIX = ".json"
#: File names are limited to 255 bytes on the filesystems entropic runs on.
NAME_MAX = 255
SIDECAR_VERSION = 1
JOURNAL_SUFFIX = ".jsonl"


def check_id(run_id: object) -> str:
    """Return ``run_id`` if it is a safe file stem, else raise naming the problem."""
    if not isinstance(run_id, str):
        raise TypeError(
            f"params['id'] must be a str (a file name stem), not {type(run_id).__name__}; "
            "pass a string id or leave 'id' out to use the hash of the params"
        )
    problem = ""
    if not run_id:
        problem = "is empty"
    elif "/" in run_id or "\\" in run_id:
        problem = "contains a path separator"
    elif "\0" in run_id:
        problem = "contains a NUL character"
    elif run_id.startswith("."):
        problem = "starts with '.' (so '.', '..' and hidden names are refused)"
    elif len(run_id.encode("utf-8")) > NAME_MAX - 16:
        problem = f"is longer than {NAME_MAX - 16} bytes"
    if problem:
        raise ValueError(
            f"params['id'] {run_id!r} {problem}; an explicit id becomes the result file's "
            "name, so use letters, digits, '-', '_' or '.' (not first), or leave 'id' out"
        )
    return run_id


def check_file_suffix(file_suffix: object) -> str:
    """Return ``file_suffix`` if it can end a file name inside results_dir, else raise."""
    if not isinstance(file_suffix, str):
        raise TypeError(
            f"file_suffix must be a str such as '.h5', not {type(file_suffix).__name__}"
        )
    separators = {"/", "\\", "\0", os.sep} | ({os.altsep} if os.altsep else set())
    if any(sep in file_suffix for sep in separators):
        raise ValueError(
            f"file_suffix {file_suffix!r} contains a path separator or NUL; result files "
            "live directly in results_dir, so pass a plain extension such as '.h5'"
        )
    if len(file_suffix.encode("utf-8")) > 15:
        raise ValueError(
            f"file_suffix {file_suffix!r} is longer than 15 bytes; use a short extension"
        )
    return file_suffix


class Disk:
    """Paths and file operations of one results_dir; never touches anything outside it."""

    def __init__(self, results_dir: str | os.PathLike[str], file_suffix: str) -> None:
        self.suffix = check_file_suffix(file_suffix)
        self.root = Path(os.path.abspath(os.fspath(results_dir)))
        self._root = str(self.root)
        self.meta = self.root / META_DIR
        self.sidecars = self.meta / "sidecars"
        self.aside = self.meta / "aside"
        self.tmp = self.meta / "tmp"
        self.journal = self.meta / "journal"

    def create(self) -> None:
        """Create results_dir and entropic's folders in it, with a clear error if that fails."""
        if self.root.exists() and not self.root.is_dir():
            raise NotADirectoryError(f"results_dir {self.root} exists and is not a directory")
        try:
            for folder in (self.root, self.sidecars, self.aside, self.tmp, self.journal):
                folder.mkdir(parents=True, exist_ok=True)
        except PermissionError as exc:
            raise PermissionError(
                f"cannot create results_dir {self.root} or its .entropic folder ({exc.strerror}); "
                "pick a results_dir you can write to"
            ) from exc
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise PermissionError(
                f"results_dir {self.root} is not writable; pick a results_dir you can write to"
            )

    # -- paths -----------------------------------------------------------------------------

    def result_path(self, run_id: str) -> Path:
        """The result file of a run: ``results_dir/{id}{file_suffix}``."""
        return self.root / f"{run_id}{self.suffix}"

    def result_file(self, run_id: str) -> str:
        """``result_path`` as a str, built without pathlib (it is on every run's path)."""
        return f"{self._root}{os.sep}{run_id}{self.suffix}"

    def sidecar_path(self, run_id: str) -> Path:
        return self.sidecars / f"{run_id}{SIDECAR_SUFFIX}"

    def aside_path(self, run_id: str) -> Path:
        return self.aside / run_id

    def contains(self, path: str | os.PathLike[str]) -> bool:
        """Whether ``path`` is inside results_dir (symlinks resolved), so entropic may delete it."""
        target = Path(os.path.realpath(os.fspath(path)))
        root = Path(os.path.realpath(self.root))
        return target != root and root in target.parents

    # -- result files ----------------------------------------------------------------------

    def discard_result(self, run_id: str) -> None:
        """Remove the result file of ``run_id`` if there is one (a partial file of a failed run)."""
        self.result_path(run_id).unlink(missing_ok=True)

    def move_aside(self, run_id: str) -> bool:
        """Move the existing result of ``run_id`` aside before a re-run; return if there was one."""
        try:
            os.replace(self.result_path(run_id), self.aside_path(run_id))
        except FileNotFoundError:
            return False
        return True

    def restore_aside(self, run_id: str) -> bool:
        """Put the result kept aside back (over any partial new file); return if there was one."""
        try:
            os.replace(self.aside_path(run_id), self.result_path(run_id))
        except FileNotFoundError:
            return False
        return True

    def discard_aside(self, run_id: str) -> None:
        """Drop the old result kept aside once the new one is journalled."""
        self.aside_path(run_id).unlink(missing_ok=True)

    def list_aside(self) -> list[str]:
        """Ids whose old result is still kept aside (a re-run in progress, or one that died)."""
        return sorted(entry.name for entry in _scan(self.aside) if entry.is_file())

    # -- sidecars --------------------------------------------------------------------------

    def write_sidecar(self, run_id: str, row: dict[str, Any]) -> bool:
        """Journal a finished run's row atomically (whole file or none); False if not JSON-able."""
        plain, types = _encode_row(row)
        try:
            text = json.dumps(
                {"entropic_sidecar": SIDECAR_VERSION, "id": run_id, "row": plain, "types": types}
            )
        except (TypeError, ValueError):
            return False  # a custom column type: the row goes straight to the database
        fd, tmp = tempfile.mkstemp(prefix=f"{run_id[:64]}.", suffix=".tmp", dir=self.tmp)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.replace(tmp, self.sidecar_path(run_id))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return True

    def read_sidecar(self, run_id: str) -> dict[str, Any]:
        """The row journalled for ``run_id``, its values decoded back to datetimes etc."""
        with open(self.sidecar_path(run_id), encoding="utf-8") as handle:
            data = json.load(handle)
        if not isinstance(data, dict) or data.get("entropic_sidecar") != SIDECAR_VERSION:
            raise ValueError(f"{self.sidecar_path(run_id)} is not an entropic sidecar")
        return _decode_row(data["row"], data.get("types", {}))

    def remove_sidecar(self, run_id: str) -> None:
        self.sidecar_path(run_id).unlink(missing_ok=True)

    def list_sidecars(self) -> list[str]:
        """Ids with a journalled row not yet known to be in the database."""
        cut = len(SIDECAR_SUFFIX)
        return sorted(
            entry.name[:-cut]
            for entry in _scan(self.sidecars)
            if entry.name.endswith(SIDECAR_SUFFIX) and entry.is_file()
        )

    def list_journals(self) -> list[tuple[Path, str]]:
        """(path, owner token) of every sweep journal left in results_dir."""
        found = []
        for entry in _scan(self.journal):
            if entry.name.endswith(JOURNAL_SUFFIX) and entry.is_file():
                owner = entry.name[: -len(JOURNAL_SUFFIX)].rpartition(".")[0]
                found.append((Path(entry.path), owner))
        return sorted(found)

    def read_journal(self, path: Path) -> list[dict[str, Any]]:
        """The complete rows of a journal; a line cut short by a kill is skipped."""
        rows = []
        with open(path, "rb") as handle:
            for line in handle:
                if not line.endswith(b"\n"):
                    break
                try:
                    data = json.loads(line)
                    rows.append(_decode_row(data["row"], data.get("types", {})))
                except (ValueError, KeyError, TypeError):
                    continue
        return rows

    def clear_tmp(self) -> int:
        """Remove half-written sidecars left by a process that died; return how many."""
        removed = 0
        for entry in _scan(self.tmp):
            if entry.is_file():
                Path(entry.path).unlink(missing_ok=True)
                removed += 1
        return removed


#: One encoder for every journal line (``json.dumps`` with options builds one per call).
_COMPACT = json.JSONEncoder(separators=(",", ":")).encode


class Journal:
    """The journal of one sweep: finished rows appended until their batch is committed."""

    def __init__(self, disk: Disk, owner: str) -> None:
        self.folder = disk.journal
        self.owner = owner
        self.serial = 0
        self.fd = -1
        self.path = ""

    def append(self, row: dict[str, Any]) -> bool:
        """Journal one finished run's row; False if its values are not JSON-able."""
        plain, types = _encode_row(row)
        try:
            line = _COMPACT({"row": plain, "types": types})
        except (TypeError, ValueError):
            return False
        if self.fd < 0:
            self.path = os.path.join(self.folder, f"{self.owner}.{self.serial}{JOURNAL_SUFFIX}")
            self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        # One write of one whole line: a kill leaves it complete or cut short, never mixed.
        os.write(self.fd, (line + "\n").encode("utf-8"))
        return True

    def rotate(self) -> None:
        """Drop the journal of a committed batch; the next run starts a new one."""
        if self.fd >= 0:
            os.close(self.fd)
            os.unlink(self.path)
            self.fd = -1
            self.serial += 1

    def close(self) -> None:
        """Close without removing (what was not committed stays for recovery)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
            self.serial += 1


def _scan(folder: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as entries:
            return list(entries)
    except FileNotFoundError:
        return []


# Sidecars are JSON; a column value JSON lacks is written as text and its type noted
# beside the row, so custom_data and JSON columns are never mistaken for one.
_DECODERS: dict[str, Any] = {
    "datetime": datetime.fromisoformat,
    "date": date.fromisoformat,
    "decimal": Decimal,
    "bytes": base64.b64decode,
}


def _encode_row(row: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    plain: dict[str, Any] = {}
    types: dict[str, str] = {}
    for key, value in row.items():
        if isinstance(value, datetime):
            plain[key], types[key] = value.isoformat(), "datetime"
        elif isinstance(value, date):
            plain[key], types[key] = value.isoformat(), "date"
        elif isinstance(value, Decimal):
            plain[key], types[key] = str(value), "decimal"
        elif isinstance(value, bytes):
            plain[key], types[key] = base64.b64encode(value).decode("ascii"), "bytes"
        else:
            plain[key] = value
    return plain, types


def _decode_row(plain: dict[str, Any], types: dict[str, str]) -> dict[str, Any]:
    row = dict(plain)
    for key, kind in types.items():
        row[key] = _DECODERS[kind](row[key])
    return row

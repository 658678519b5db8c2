"""The files of a store: result paths and entropic's own folder, never anything outside.

Result files are ``results_dir/{id}{file_suffix}``. entropic's own files live
under ``results_dir/.entropic/``, a name no result file can take because ids
never start with a dot:

- ``sidecars/{id}.json``: the row of a finished run, written atomically before
  the database and removed after the commit, so a process that dies in between
  loses nothing;
- ``journal/{owner}.{n}.jsonl``: what a sweep uses instead of one sidecar per
  run: the rows of one batch, one JSON line each, removed once it is committed;
- ``aside/{id}``: the previous result of a run being re-run, put back if the
  re-run fails or dies;
- ``tmp/``: half-written sidecars, renamed into place when complete;
- ``quarantine/``: what recovery could not use (an unreadable sidecar, a row the
  database refused, a symlink where a folder belongs), each with its reason;
- ``store.json``: the table whose results the folder holds.

Every operation inside ``.entropic`` goes through file descriptors of its
folders, opened without following symlinks: a symlink placed there is moved to
the quarantine, never followed, so nothing outside results_dir is read, written,
moved or deleted.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
import stat
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import suppress
from datetime import datetime, timezone
from itertools import islice
from pathlib import Path
from typing import Any, BinaryIO

from entropic._storage.codec import decode_line, decode_sidecar, encode_sidecar

__all__ = [
    "META_DIR",
    "RESULT_GONE",
    "Disk",
    "QuarantineEntry",
    "check_file_suffix",
    "check_id",
    "is_file",
    "lexists",
    "present",
    "write_all",
]

META_DIR = ".entropic"
SIDECAR_SUFFIX = ".json"
JOURNAL_SUFFIX = ".jsonl"
REASON_SUFFIX = ".reason.json"
MARKER = "store.json"
#: entropic's folders inside ``.entropic``; the quarantine opens first, as the others
#: may need it.
FOLDERS = ("quarantine", "sidecars", "journal", "aside", "tmp")
#: Why a sidecar is obsolete rather than unusable: its run's file was removed since.
RESULT_GONE = "its result file is gone"
#: Half-written files in tmp older than this belong to a process that died.
TMP_MAX_AGE_SECONDS = 600.0
#: File names are limited to 255 bytes on the filesystems entropic runs on...
NAME_MAX = 255
#: ...and paths to 4,096 (Linux's limit, its terminating NUL included).
PATH_MAX = 4096
#: A quarantined file's name, in bytes: its reason file adds REASON_SUFFIX.
QUARANTINE_NAME_MAX = NAME_MAX - len(REASON_SUFFIX)

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def is_file(path: str) -> bool:
    """Whether ``path`` is a regular file (links followed), as ``os.path.isfile``."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def lexists(path: str) -> bool:
    """Whether ``path`` names something, a symlink itself included, as ``os.path.lexists``.

    One ``faccessat`` call that does not follow links: no stat result is built.
    """
    try:
        return os.access(path, os.F_OK, follow_symlinks=False)
    except ValueError:  # an embedded NUL: no such file
        return False


def present(path: str) -> bool:
    """Whether ``path`` names something that exists (links followed), as ``os.path.exists``.

    One ``access`` call: no stat result is built, which halves the cost of the look
    a cache hit makes at its result file.
    """
    try:
        return os.access(path, os.F_OK)
    except ValueError:  # an embedded NUL: no such file
        return False


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
    elif not _is_unicode(run_id):
        problem = "contains a lone surrogate, which is not valid Unicode"
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
    if not _is_unicode(file_suffix) or len(file_suffix.encode("utf-8")) > 15:
        raise ValueError(
            f"file_suffix {file_suffix!r} is longer than 15 bytes or not valid Unicode; use "
            "a short extension such as '.h5'"
        )
    return file_suffix


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (``os.write`` may write less than it is given)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:  # pragma: no cover - write(2) returns >0 or fails
            raise OSError(errno.EIO, "write wrote nothing")
        view = view[written:]


class QuarantineEntry:
    """One thing recovery could not use, kept in ``.entropic/quarantine`` with its reason."""

    def __init__(self, name: str, reason: str, source: str, run_id: str) -> None:
        self.name = name  # the file's name in the quarantine folder
        self.reason = reason
        self.source = source  # where it came from: sidecars, journal, aside, tmp, ...
        self.id = run_id

    def __repr__(self) -> str:
        return f"QuarantineEntry({self.name!r}, {self.reason!r})"


def _close_all(fds: dict[str, int]) -> None:
    for fd in fds.values():
        if fd >= 0:
            with suppress(OSError):
                os.close(fd)
    fds.clear()


class Disk:
    """Paths and file operations of one results_dir; never touches anything outside it."""

    def __init__(
        self, results_dir: str | os.PathLike[str], file_suffix: str, *, readonly: bool = False
    ) -> None:
        self.suffix = check_file_suffix(file_suffix)
        #: Look only: create nothing, move nothing (what would be quarantined is listed
        #: in ``odd`` instead).
        self.readonly = readonly
        self.odd: list[tuple[str, str, str]] = []  # (folder, name, why) seen when readonly
        root = os.path.abspath(os.fspath(results_dir))
        if not _is_unicode(root):
            raise ValueError(
                f"results_dir {root!r} is not valid Unicode text, so result paths could not "
                "be stored in the database; pick a results_dir with a plain name"
            )
        self.root = Path(root)
        self._root = root
        self.meta = self.root / META_DIR
        self._fds: dict[str, int] = {}
        self._pid = -1
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _close_all, self._fds)

    def __getstate__(self) -> dict[str, Any]:
        return {"root": self._root, "suffix": self.suffix, "readonly": self.readonly}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["root"], state["suffix"], readonly=state["readonly"])  # type: ignore[misc]

    def close(self) -> None:
        """Close the folders' descriptors; the next operation opens them again."""
        with self._lock:
            _close_all(self._fds)

    # -- folders ---------------------------------------------------------------------------

    def create(self) -> None:
        """Create results_dir and entropic's folders in it, with a clear error if that fails."""
        if self.root.exists() and not self.root.is_dir():
            raise NotADirectoryError(f"results_dir {self.root} exists and is not a directory")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self._open()
        except PermissionError as exc:
            raise PermissionError(
                f"cannot create results_dir {self.root} or its .entropic folder ({exc.strerror}); "
                "pick a results_dir you can write to"
            ) from exc
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise PermissionError(
                f"results_dir {self.root} is not writable; pick a results_dir you can write to"
            )

    def _fd(self, folder: str) -> int:
        """The descriptor of ``folder`` ("root", "meta" or one of FOLDERS) in this process."""
        if self._pid != os.getpid() or folder not in self._fds:
            self._open()
        return self._fds[folder]

    def _open(self) -> None:
        with self._lock:
            if self._pid == os.getpid() and len(self._fds) == len(FOLDERS) + 2:
                return
            _close_all(self._fds)  # a forked child opens its own
            self._pid = os.getpid()
            displaced: list[tuple[str, str, str]] = []  # (folder, name, what it was)
            # results_dir itself may be a symlink: that is the user's choice.
            root = os.open(self._root, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
            self._fds["root"] = root
            self._fds["meta"] = meta = self._subfolder(root, "root", META_DIR, displaced)
            for folder in FOLDERS:
                self._fds[folder] = self._subfolder(meta, "meta", folder, displaced)
            for parent, name, what in displaced:
                self._quarantine_from(
                    parent, name, f"{what} where entropic's folder belongs; it was not followed"
                )

    def _subfolder(
        self, parent: int, parent_name: str, name: str, displaced: list[tuple[str, str, str]]
    ) -> int:
        """Open folder ``name`` in ``parent`` without following a symlink, creating it if missing.

        Anything else in its place (a symlink, a file) is renamed out of the way,
        recorded in ``displaced`` and later moved to the quarantine.
        """
        if parent < 0:
            return -1
        for _ in range(5):
            try:
                return os.open(name, _DIR_FLAGS, dir_fd=parent)
            except FileNotFoundError:
                if self.readonly:
                    return -1
                with suppress(FileExistsError):
                    os.mkdir(name, 0o777, dir_fd=parent)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                what = "a symlink" if _is_link(name, parent) else "a file"
                if self.readonly:
                    self.odd.append((parent_name, name, f"{what} where entropic's folder belongs"))
                    return -1
                moved = f"{name}.displaced-{_stamp()}"
                os.rename(name, moved, src_dir_fd=parent, dst_dir_fd=parent)
                displaced.append((parent_name, moved, what))
        raise OSError(errno.EAGAIN, f"cannot open {name} in {self.meta}: it keeps changing")

    def _entries(self, folder: str) -> list[os.DirEntry[str]]:
        fd = self._fd(folder)
        if fd < 0:
            return []
        fd = os.dup(fd)
        try:
            with os.scandir(fd) as entries:
                return list(entries)
        finally:
            os.close(fd)

    def _regular(self, folder: str, suffix: str = "", *, links: bool = False) -> Iterator[str]:
        """Names of the regular files in ``folder`` ending with ``suffix`` (and symlinks, with
        ``links``); anything else there (a folder, a name entropic never writes) is moved to
        the quarantine, never followed."""
        for entry in self._entries(folder):
            name = entry.name
            kept = entry.is_file(follow_symlinks=False) or (links and entry.is_symlink())
            if kept and name.endswith(suffix):
                yield name
            elif folder != "quarantine":
                what = "a symlink" if entry.is_symlink() else "not a regular file entropic wrote"
                self._quarantine_from(folder, name, f"{what} in .entropic/{folder}")

    # -- paths -----------------------------------------------------------------------------

    def result_path(self, run_id: str) -> Path:
        """The result file of a run: ``results_dir/{id}{file_suffix}``."""
        return self.root / f"{run_id}{self.suffix}"

    def result_file(self, run_id: str) -> str:
        """``result_path`` as a str, built without pathlib (it is on every run's path)."""
        return f"{self._root}{os.sep}{run_id}{self.suffix}"

    def present_many(self, count: int) -> Callable[[str], bool]:
        """``present``, for about ``count`` paths: one listing of results_dir answers for
        the regular files in it, at half the cost of an ``access`` call each.

        A path the listing does not hold (a file made since, a symlink, anything not
        spelled as ``result_file`` spells it) is looked at on its own, so an answer is
        never "no" where ``present`` would say "yes"; nor "yes" where it would say
        "no" when asked: a folder ``access`` could not look into (no search
        permission for the real user, a path too long for a name to fit) is not
        listed. Nor is a folder of more than twice ``count`` entries (listing it
        could cost more than it saves), or one that cannot be listed: each path is
        looked at. A file removed after the listing still counts, as one removed
        just after its own look would.
        """
        limit = 2 * count
        if len(os.fsencode(self._root)) + 1 + NAME_MAX >= PATH_MAX or not os.access(
            self._root, os.X_OK
        ):
            return present
        try:
            # Listed by its name with a separator last, each entry's path is spelled as
            # result_file spells it: results_dir, the separator, the name.
            with os.scandir(f"{self._root}{os.sep}") as entries:
                files = {
                    entry.path
                    for entry in islice(entries, limit)
                    if entry.is_file(follow_symlinks=False)
                }
                if next(entries, None) is not None:
                    return present
        except OSError:
            return present

        def check(path: str) -> bool:
            # A path is taken out once answered: its text is freed as the records are
            # built, and a path asked for again is looked at on its own.
            try:
                files.remove(path)
            except KeyError:
                return present(path)
            return True

        return check

    def contains(self, path: str | os.PathLike[str]) -> bool:
        """Whether ``path`` is inside results_dir (symlinks resolved), so entropic may delete it."""
        target = Path(os.path.realpath(os.fspath(path)))
        root = Path(os.path.realpath(self.root))
        return target != root and root in target.parents

    def owns_result(self, path: object, run_id: str) -> bool:
        """Whether ``path`` names an existing result file of ``run_id`` directly in results_dir."""
        if not isinstance(path, str):
            return False
        folder, name = os.path.split(path)
        return (
            folder == self._root
            and name.startswith(run_id)
            and (len(name) == len(run_id) or name[len(run_id)] == ".")
            and os.path.isfile(path)
        )

    # -- result files ----------------------------------------------------------------------

    def write_result(self, run_id: str, source: BinaryIO, size: int, sha256: str) -> None:
        """Copy ``size`` bytes of ``source`` to the result file of ``run_id``, whole or not at all.

        The bytes go to a file in ``.entropic/tmp`` that replaces the result file only
        if it holds exactly ``size`` bytes whose SHA-256 is ``sha256``; else ValueError,
        and nothing in results_dir changed.
        """
        tmp_fd = self._fd("tmp")
        name = f"{run_id[:64]}.{secrets.token_hex(6)}.tmp"
        fd = os.open(name, _CREATE_FLAGS, 0o644, dir_fd=tmp_fd)
        try:
            digest = hashlib.sha256()
            written = 0
            try:
                while chunk := source.read(min(1 << 20, size - written) or 1):
                    digest.update(chunk)
                    write_all(fd, chunk)
                    written += len(chunk)
                    if written > size:
                        break
            finally:
                os.close(fd)
            if written != size or digest.hexdigest() != sha256:
                raise ValueError(
                    f"the file of run {run_id} changed while it was copied: it no longer has "
                    f"the size and SHA-256 it was checked against"
                )
            os.replace(
                name, f"{run_id}{self.suffix}", src_dir_fd=tmp_fd, dst_dir_fd=self._fd("root")
            )
        except BaseException:
            _unlink(name, tmp_fd)
            raise

    def discard_result(self, run_id: str) -> None:
        """Remove the result file of ``run_id`` if there is one (a partial file of a failed run)."""
        with suppress(FileNotFoundError):
            os.unlink(f"{run_id}{self.suffix}", dir_fd=self._fd("root"))

    def move_aside(self, run_id: str) -> bool:
        """Move the existing result of ``run_id`` aside before a re-run; return if there was one."""
        try:
            os.replace(
                f"{run_id}{self.suffix}",
                run_id,
                src_dir_fd=self._fd("root"),
                dst_dir_fd=self._fd("aside"),
            )
        except FileNotFoundError:
            return False
        return True

    def restore_aside(self, run_id: str, name: str | None = None) -> bool:
        """Put the result kept aside back (over any partial new file); return if there was one.

        ``name`` is the result file's name in results_dir (by default ``{id}{suffix}``).
        """
        aside = self._fd("aside")
        try:
            if not _is_file_or_link(run_id, aside):
                self._quarantine_from("aside", run_id, "not a file in .entropic/aside")
                return False
            os.replace(
                run_id,
                name or f"{run_id}{self.suffix}",
                src_dir_fd=aside,
                dst_dir_fd=self._fd("root"),
            )
        except FileNotFoundError:
            return False
        return True

    def discard_aside(self, run_id: str) -> None:
        """Drop the old result kept aside once the new one is journalled."""
        _unlink(run_id, self._fd("aside"))

    def list_aside(self) -> list[str]:
        """Ids whose old result is still kept aside (a re-run in progress, or one that died).

        A result file may be a symlink (the runner's choice): it was moved aside as a
        link, and is put back as one, never followed.
        """
        return sorted(self._regular("aside", links=True))

    # -- sidecars --------------------------------------------------------------------------

    def write_sidecar(self, run_id: str, row: dict[str, Any]) -> bool:
        """Journal a finished run's row atomically (whole file or none); False if not JSON-able."""
        text = encode_sidecar(run_id, row)
        if text is None:
            return False  # a custom column type: the row goes straight to the database
        tmp_fd = self._fd("tmp")
        name = f"{_clip(run_id, 64)}.{secrets.token_hex(6)}.tmp"
        fd = os.open(name, _CREATE_FLAGS, 0o644, dir_fd=tmp_fd)
        try:
            try:
                write_all(fd, text.encode("utf-8", "surrogatepass"))
            finally:
                os.close(fd)
            os.replace(
                name,
                f"{run_id}{SIDECAR_SUFFIX}",
                src_dir_fd=tmp_fd,
                dst_dir_fd=self._fd("sidecars"),
            )
        except BaseException:
            _unlink(name, tmp_fd)
            raise
        return True

    def read_sidecar(self, run_id: str) -> dict[str, Any]:
        """The row journalled for ``run_id``; OSError or ValueError if there is none to read."""
        return decode_sidecar(self._read("sidecars", f"{run_id}{SIDECAR_SUFFIX}"))

    def inspect_sidecar(self, run_id: str) -> tuple[dict[str, Any] | None, str]:
        """(row, "") if the sidecar of ``run_id`` is a finished run's, else (None, why not)."""
        try:
            row = self.read_sidecar(run_id)
        except FileNotFoundError:
            return None, "it is gone"
        except OSError as exc:
            return None, f"unreadable: {exc.strerror or exc}"
        except ValueError as exc:
            return None, f"unreadable: {exc}"
        if row["id"] != run_id:
            return None, f"it holds the row of {row['id']!r}"
        if not self.owns_result(row["result_file"], run_id):
            return None, RESULT_GONE
        return row, ""

    def finished_sidecar(self, run_id: str) -> dict[str, Any] | None:
        """The row of ``run_id``'s sidecar if it shows a finished run, else None."""
        return self.inspect_sidecar(run_id)[0]

    def remove_sidecar(self, run_id: str) -> None:
        _unlink(f"{run_id}{SIDECAR_SUFFIX}", self._fd("sidecars"))

    def list_sidecars(self) -> list[str]:
        """Ids with a journalled row not yet known to be in the database."""
        cut = len(SIDECAR_SUFFIX)
        return sorted(name[:-cut] for name in self._regular("sidecars", SIDECAR_SUFFIX))

    def quarantine_sidecar(self, run_id: str, reason: str) -> None:
        self._quarantine_from("sidecars", f"{run_id}{SIDECAR_SUFFIX}", reason, run_id)

    # -- journals --------------------------------------------------------------------------

    def journal_name(self, owner: str, serial: int) -> str:
        return f"{owner}.{serial}{JOURNAL_SUFFIX}"

    def open_journal(self, name: str) -> int:
        """A descriptor appending to journal ``name`` (created if missing, never a symlink)."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        return os.open(name, flags, 0o644, dir_fd=self._fd("journal"))

    def list_journals(self) -> list[tuple[str, str]]:
        """(name, owner token) of every sweep journal left in results_dir."""
        found = []
        for name in self._regular("journal", JOURNAL_SUFFIX):
            owner = name[: -len(JOURNAL_SUFFIX)].rpartition(".")[0]
            found.append((name, owner))
        return sorted(found)

    def journal_path(self, name: str) -> Path:
        return self.meta / "journal" / name

    def journal_mtime(self, name: str) -> datetime | None:
        """The last write to journal ``name`` as naive UTC (a dead sweep's last sign), or None."""
        try:
            stamp = os.stat(name, dir_fd=self._fd("journal"), follow_symlinks=False).st_mtime
        except OSError:
            return None
        return datetime.fromtimestamp(stamp, timezone.utc).replace(tzinfo=None)

    def read_journal(self, name: str) -> tuple[list[dict[str, Any]], list[tuple[int, bytes, str]]]:
        """(complete rows, unusable lines as (line number, text, why)) of journal ``name``.

        A last line without its newline was cut short by a kill: that run never
        finished journalling, so it is dropped silently.
        """
        rows: list[dict[str, Any]] = []
        bad: list[tuple[int, bytes, str]] = []
        data = self._read("journal", name)
        for number, line in enumerate(data.split(b"\n")[:-1], start=1):
            try:
                rows.append(decode_line(line))
            except ValueError as exc:
                bad.append((number, line, str(exc)))
        return rows, bad

    def remove_journal(self, name: str) -> None:
        _unlink(name, self._fd("journal"))

    # -- tmp -------------------------------------------------------------------------------

    def list_tmp(self) -> list[str]:
        """Names of the half-written files in tmp; anything else there goes to the quarantine."""
        return sorted(self._regular("tmp"))

    def clear_tmp(self, max_age: float = TMP_MAX_AGE_SECONDS) -> int:
        """Remove half-written files older than ``max_age`` seconds (a live process writes
        its files in milliseconds, so these belong to one that died); return how many."""
        removed = 0
        tmp = self._fd("tmp")
        now = time.time()
        for name in list(self._regular("tmp")):
            try:
                age = now - os.stat(name, dir_fd=tmp, follow_symlinks=False).st_mtime
            except FileNotFoundError:
                continue
            if age >= max_age:
                _unlink(name, tmp)
                removed += 1
        return removed

    # -- quarantine ------------------------------------------------------------------------

    def _quarantine_from(self, folder: str, name: str, reason: str, run_id: str = "") -> str:
        """Move ``folder/name`` (never followed) to the quarantine with its reason; its new name."""
        if self.readonly:
            self.odd.append((folder, name, reason))
            return ""
        target = _clip(f"{_stamp()}-{folder}-{name}", QUARANTINE_NAME_MAX)
        try:
            os.rename(name, target, src_dir_fd=self._fd(folder), dst_dir_fd=self._fd("quarantine"))
        except FileNotFoundError:
            return ""
        self._write_reason(target, reason, folder, run_id)
        return target

    def quarantine_data(self, label: str, data: bytes, reason: str, run_id: str = "") -> str:
        """Keep ``data`` (journal lines, say) in the quarantine with its reason; its name."""
        target = _clip(f"{_stamp()}-{label}", QUARANTINE_NAME_MAX)
        fd = os.open(target, _CREATE_FLAGS, 0o644, dir_fd=self._fd("quarantine"))
        try:
            write_all(fd, data)
        finally:
            os.close(fd)
        self._write_reason(target, reason, label.partition("-")[0], run_id)
        return target

    def _write_reason(self, target: str, reason: str, source: str, run_id: str) -> None:
        text = json.dumps(
            {"reason": reason, "from": source, "id": run_id, "at": _stamp()}, ensure_ascii=True
        )
        fd = os.open(
            f"{target}{REASON_SUFFIX}", _CREATE_FLAGS, 0o644, dir_fd=self._fd("quarantine")
        )
        try:
            write_all(fd, text.encode("ascii"))
        finally:
            os.close(fd)

    def list_quarantine(self) -> list[QuarantineEntry]:
        """Everything in the quarantine, each with the reason it was put there."""
        # Every entry, a symlink or a folder set aside included: each has its reason beside it.
        names = {entry.name for entry in self._entries("quarantine")}
        found = []
        for name in names:
            if name.endswith(REASON_SUFFIX) and name[: -len(REASON_SUFFIX)] in names:
                continue
            reason, source, run_id = "no reason was recorded", "", ""
            if f"{name}{REASON_SUFFIX}" in names:
                try:
                    data = json.loads(self._read("quarantine", f"{name}{REASON_SUFFIX}"))
                    reason = str(data.get("reason", reason))
                    source = str(data.get("from", ""))
                    run_id = str(data.get("id", ""))
                except (OSError, ValueError, AttributeError, RecursionError):
                    pass
            found.append(QuarantineEntry(name, reason, source, run_id))
        return sorted(found, key=lambda entry: entry.name)

    def read_quarantined(self, name: str) -> bytes:
        return self._read("quarantine", name)

    def release_quarantined(self, name: str) -> None:
        """Drop a quarantined entry and its reason (it was dealt with)."""
        quarantine = self._fd("quarantine")
        _unlink(name, quarantine)
        _unlink(f"{name}{REASON_SUFFIX}", quarantine)

    def quarantine_path(self, name: str) -> Path:
        return self.meta / "quarantine" / name

    # -- the store this folder belongs to --------------------------------------------------

    def read_marker(self) -> dict[str, Any] | None:
        """What ``store.json`` says (the table whose results these are), or None."""
        try:
            data = json.loads(self._read("meta", MARKER))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, RecursionError) as exc:
            self._quarantine_from("meta", MARKER, f"an unreadable {MARKER}: {exc}")
            return None
        if not isinstance(data, dict) or not isinstance(data.get("table"), str):
            self._quarantine_from("meta", MARKER, f"{MARKER} does not name a table")
            return None
        return data

    def write_marker(self, data: dict[str, Any]) -> None:
        """Write ``store.json`` atomically."""
        tmp_fd = self._fd("tmp")
        name = f"{MARKER}.{secrets.token_hex(6)}.tmp"
        fd = os.open(name, _CREATE_FLAGS, 0o644, dir_fd=tmp_fd)
        try:
            try:
                write_all(fd, json.dumps(data, ensure_ascii=True).encode("ascii"))
            finally:
                os.close(fd)
            os.replace(name, MARKER, src_dir_fd=tmp_fd, dst_dir_fd=self._fd("meta"))
        except BaseException:
            _unlink(name, tmp_fd)
            raise

    # -- reading ---------------------------------------------------------------------------

    def _read(self, folder: str, name: str) -> bytes:
        folder_fd = self._fd(folder)
        if folder_fd < 0:
            raise FileNotFoundError(errno.ENOENT, "no such folder", folder)
        fd = os.open(name, _READ_FLAGS, dir_fd=folder_fd)
        try:
            chunks = []
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)


def _clip(name: str, limit: int) -> str:
    """``name`` cut to at most ``limit`` bytes on disk, never inside a character."""
    raw = os.fsencode(name)
    if len(raw) <= limit:
        return name
    return os.fsdecode(raw[:limit].decode("utf-8", "ignore").encode("utf-8"))


def _unlink(name: str, dir_fd: int) -> None:
    """Remove ``name`` (a symlink itself, never its target) if it is there."""
    with suppress(FileNotFoundError):
        os.unlink(name, dir_fd=dir_fd)


def _is_link(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _is_file_or_link(name: str, dir_fd: int) -> bool:
    mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
    return stat.S_ISREG(mode) or stat.S_ISLNK(mode)


def _stamp() -> str:
    now = datetime.now(timezone.utc)
    return f"{now:%Y%m%dT%H%M%S}.{now.microsecond:06d}-{secrets.token_hex(2)}"

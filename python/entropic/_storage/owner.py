"""Who is running what: this host, owner tokens for running processes, and their liveness.

An owner token names one sweep (or one ``run``) of one process: host, pid, the
process's start time and a random suffix. Claims and journals carry it, so that
any process can tell whether their owner may still be working: on the same host
by the pid and its start time (a reused pid has another), on another host by a
heartbeat younger than ``CLAIM_TTL_SECONDS``.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections import Counter
from datetime import datetime, timedelta, timezone

from entropic.models import utcnow

__all__ = [
    "CLAIM_TTL_SECONDS",
    "HOST",
    "file_mtime",
    "new_owner",
    "owner_alive",
    "parse_owner",
    "proc_start",
    "release_owner",
    "take_owner",
]

#: A claim held by a process on another host is stale after this long without a heartbeat.
CLAIM_TTL_SECONDS = float(os.environ.get("ENTROPIC_CLAIM_TTL", "60"))

HOST = socket.gethostname()[:200]

#: Owners of this process that are still working (a sweep or a run in progress), with how
#: many calls of this process are working under each (threads may share a Store's owner).
_WORKING: Counter[str] = Counter()
#: This process's start time, by pid (a forked child has its own).
_STARTED: dict[int, str] = {}


def proc_start(pid: int) -> tuple[str, bool]:
    """(start time in clock ticks, is a zombie) of ``pid`` from /proc; ("", False) elsewhere."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read().decode("ascii", "replace")
    except OSError:
        return "", False
    # The command name may contain spaces and parentheses; the fields follow the last ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    return (fields[19] if len(fields) > 19 else ""), (fields[:1] == ["Z"])


def new_owner(*, working: bool = True) -> str:
    """A token naming one sweep of this process: host, pid, process start time, a random part.

    The owner counts as working until ``release_owner`` (with ``working=False``,
    only between ``take_owner`` and ``release_owner``): a claim of an owner of
    this process that is not working (a sweep or a run that failed before it could
    release its claims) is stale, so a retry in the same process never waits on it.
    """
    owner = f"{HOST}~{os.getpid()}~{_started()}~{secrets.token_hex(4)}"
    if working:
        take_owner(owner)
    return owner


def take_owner(owner: str) -> None:
    """Count ``owner`` (of this process) as working, once more."""
    _WORKING[owner] += 1


def release_owner(owner: str) -> None:
    """One call working under ``owner`` is done; with none left, its leftover claims are stale."""
    if _WORKING[owner] > 1:
        _WORKING[owner] -= 1
    else:
        del _WORKING[owner]


def _started() -> str:
    pid = os.getpid()
    start = _STARTED.get(pid)
    if start is None:
        start = _STARTED[pid] = proc_start(pid)[0]
    return start


def parse_owner(owner: str) -> tuple[str, int, str]:
    """(host, pid, start) of an owner token; pid -1 if it is not one."""
    parts = owner.rsplit("~", 3)
    if len(parts) != 4 or not parts[1].isdigit():
        return owner, -1, ""
    return parts[0], int(parts[1]), parts[2]


def owner_alive(owner: str, heartbeat_at: datetime | None, now: datetime | None = None) -> bool:
    """Whether the process behind ``owner`` may still be running what it claimed."""
    host, pid, start = parse_owner(owner)
    if host == HOST and pid == os.getpid() and start == _started():
        return owner in _WORKING
    if host == HOST and pid > 0:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # alive, under another user
        except OverflowError:
            return False  # no such pid can exist
        current, zombie = proc_start(pid)
        if zombie:
            return False
        # A different start time means the pid was reused by another process.
        return not (start and current and current != start)
    if heartbeat_at is None:
        return False
    age = (now or utcnow()) - heartbeat_at
    return age < timedelta(seconds=CLAIM_TTL_SECONDS)


def file_mtime(path: str | os.PathLike[str]) -> datetime | None:
    """The last change of ``path`` as naive UTC (a journal's heartbeat), or None."""
    try:
        stamp = os.stat(path).st_mtime
    except OSError:
        return None
    return datetime.fromtimestamp(stamp, timezone.utc).replace(tzinfo=None)

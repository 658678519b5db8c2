"""Real faults for the fault tests: a full filesystem, a read-only folder, a killed backend.

Nothing here imitates a database or a filesystem: a small tmpfs really fills up,
a read-only bind mount really refuses an unlink, ``pg_terminate_backend`` really
ends a PostgreSQL connection, and an SQLite lock is really held by another
connection. What needs root (mounting) skips with the reason when it cannot be had.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa

import entropic

T = TypeVar("T")
TESTS = Path(__file__).resolve().parents[1]


def child_env() -> dict[str, str]:
    """The environment a child process of the tests needs to import entropic and the tests."""
    package = str(Path(entropic.__file__).resolve().parents[1])
    path = os.pathsep.join([str(TESTS), package, os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path}


def start_child(spec: dict[str, Any], module: str = "_fault_child") -> subprocess.Popen[str]:
    """Start ``reliability.<module>`` on ``spec`` (see _fault_child), in its own session."""
    return subprocess.Popen(
        [sys.executable, "-m", f"reliability.{module}", json.dumps(spec)],
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def run_child(spec: dict[str, Any], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``reliability._fault_child`` on ``spec`` to its end (or its death)."""
    proc = start_child(spec)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def entropic_check(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``entropic check ARGS`` in a process of its own."""
    return subprocess.run(
        [sys.executable, "-m", "entropic", "check", *args],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def bounded(call: Callable[[], T], seconds: float, what: str) -> T:
    """``call()`` in a thread; fail the test if it is still running after ``seconds``."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # handed back to the test's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, name=f"bounded: {what}", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"{what} still running after {seconds:.0f} s: it hangs")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]  # type: ignore[no-any-return]


def _mount(args: list[str]) -> str:
    done = subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)
    return "" if done.returncode == 0 else (done.stderr.strip() or f"exit {done.returncode}")


def _umount(path: Path) -> None:
    done = subprocess.run(["umount", str(path)], capture_output=True, timeout=30)
    if done.returncode != 0:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


@contextlib.contextmanager
def small_filesystem(path: Path, size_kib: int) -> Iterator[Path]:
    """A tmpfs of ``size_kib`` KiB mounted at ``path`` (root only; the test skips otherwise)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill up needs root")
    path.mkdir(parents=True, exist_ok=True)
    problem = _mount(["-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(path)])
    if problem:
        pytest.skip(f"cannot mount a tmpfs at {path}: {problem}")
    try:
        yield path
    finally:
        _umount(path)


def fill(folder: Path) -> Path:
    """Fill the filesystem of ``folder`` to the last byte with one file; return it."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for size in (1 << 20, 1 << 16, 1 << 12, 1 << 9, 1):
            block = b"\0" * size
            while True:
                try:
                    if os.write(fd, block) < size:
                        break
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    return filler


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[Path]:
    """``folder`` bind-mounted read-only over itself (root only; the test skips otherwise).

    Root ignores permission bits, so a chmod would not stop it; a read-only mount does.
    """
    if os.geteuid() != 0:
        pytest.skip("a read-only bind mount needs root (and chmod does not stop root)")
    problem = _mount(["--bind", str(folder), str(folder)])
    if problem:
        pytest.skip(f"cannot bind-mount {folder}: {problem}")
    try:
        problem = _mount(["-o", "remount,bind,ro", str(folder)])
        if problem:
            pytest.skip(f"cannot remount {folder} read-only: {problem}")
        yield folder
    finally:
        _umount(folder)


def terminate_backends(db_url: str) -> int:
    """End every other connection to the database of ``db_url`` (pg_terminate_backend)."""
    admin = sa.create_engine(db_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    try:
        with admin.connect() as conn:
            ended = conn.execute(
                sa.text(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) "
                    "FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).scalar_one()
    finally:
        admin.dispose()
    return int(ended)


def sqlite_path(db_url: str) -> str:
    database = sa.make_url(db_url).database
    assert database, f"not an SQLite file: {db_url}"
    return database

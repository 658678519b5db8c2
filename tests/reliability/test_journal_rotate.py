"""A committed journal that cannot be removed: one WARNING, never a descriptor closed twice.

After each batch commits, the sweep closes its journal and unlinks it. Here the
unlink really fails: ``.entropic/journal`` is made append-only (``chattr +a``:
files can be created, not removed) or immutable (``chattr +i``: neither) on the
real filesystem; permissions would not stop root. The sweep must not end with
``OSError: [Errno 9] Bad file descriptor``, must close each journal descriptor
exactly once (a recorder around the journal's ``os.close`` counts them), and
may warn once. Later runs that cannot create a journal fail with the real error.
The next Store, once the folder is writable again, clears what was left.
"""

from __future__ import annotations

import logging
import os
import subprocess
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from entropic import Store, SweepError, hash_params
from entropic import sweep as sweeps
from entropic._storage import journal as journal_module
from entropic._storage.disk import Disk

from ._support import Rel, checked_runner, journal, read_checked, rows

POINTS = [{"n": n} for n in range(7)]  # batches of 2: three commits and a final one
WARNING = "cannot remove the committed journal"


def _chattr(flag: str, folder: Path) -> str:
    done = subprocess.run(["chattr", flag, str(folder)], capture_output=True, text=True)
    return "" if done.returncode == 0 else (done.stderr.strip() or f"exit {done.returncode}")


class Attribute:
    """Sets a chattr attribute on a folder, and always takes it off again."""

    def __init__(self, folder: Path, attribute: str) -> None:
        self.folder = folder
        self.attribute = attribute
        self.on = False

    def set(self) -> None:
        problem = _chattr(f"+{self.attribute}", self.folder)
        assert not problem, problem
        self.on = True

    def clear(self) -> None:
        if self.on:
            _chattr(f"-{self.attribute}", self.folder)
            self.on = False


class Descriptors:
    """Records the journal's descriptors in order: each one opened, and each close."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.events: list[tuple[str, int]] = []
        real_open = Disk.open_journal

        def open_journal(disk: Disk, name: str) -> int:
            fd = real_open(disk, name)
            self.events.append(("open", fd))
            return fd

        def close(fd: int) -> None:
            self.events.append(("close", fd))
            os.close(fd)

        proxy = types.SimpleNamespace(**{k: getattr(os, k) for k in dir(os) if k[0] != "_"})
        proxy.close = close
        monkeypatch.setattr(Disk, "open_journal", open_journal)
        monkeypatch.setattr(journal_module, "os", proxy)

    @property
    def opened(self) -> list[int]:
        return [fd for what, fd in self.events if what == "open"]

    def check(self) -> None:
        """Each descriptor the journal opened was closed once, and only while it was open."""
        assert self.opened, "the sweep opened no journal"
        open_now: set[int] = set()
        for what, fd in self.events:
            if what == "open":
                open_now.add(fd)
            else:
                assert fd in open_now, f"fd {fd} closed twice, or never opened: {self.events}"
                open_now.remove(fd)
        assert not open_now, f"journal descriptors left open: {sorted(open_now)}"


class FreezeAt:
    """The checksummed runner; at its ``at``-th call the journal folder gets the attribute."""

    def __init__(self, attribute: Attribute, at: int) -> None:
        self.attribute = attribute
        self.at = at
        self.calls = 0

    def __call__(self, params: dict[str, Any]) -> None:
        self.calls += 1
        if self.calls == self.at:
            self.attribute.set()
        checked_runner(params)


@pytest.fixture
def results(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        pytest.skip("chattr +a/+i (which stop even root) needs root")
    results = tmp_path / "results"
    (results / ".entropic" / "journal").mkdir(parents=True)
    problem = _chattr("+a", results / ".entropic" / "journal")
    if problem:
        pytest.skip(f"the filesystem of {tmp_path} has no chattr attributes: {problem}")
    _chattr("-a", results / ".entropic" / "journal")
    return results


@pytest.fixture
def batches_of_two(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sweeps, "BATCH_RUNS", 2)
    monkeypatch.setattr(sweeps, "BATCH_SECONDS", 3600.0)


def _open(runner: Any, results: Path, db_url: str) -> Store[Rel]:
    return Store(runner, Rel, results_dir=results, file_suffix=".txt", db_url=db_url)


@pytest.fixture
def frozen(results: Path) -> Iterator[dict[str, Attribute]]:
    folder = results / ".entropic" / "journal"
    made = {"a": Attribute(folder, "a"), "i": Attribute(folder, "i")}
    yield made
    for attribute in made.values():
        attribute.clear()


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if WARNING in r.getMessage()]


@pytest.mark.usefixtures("batches_of_two")
def test_journals_that_cannot_be_removed_warn_once_and_lose_nothing(
    shared_db_url: str,
    results: Path,
    frozen: dict[str, Attribute],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="entropic")
    with _open(checked_runner, results, shared_db_url) as store:
        descriptors = Descriptors(monkeypatch)
        frozen["a"].set()  # journals can be created and written, never removed
        records = store.sweep(POINTS)
        descriptors.check()
        assert len(descriptors.opened) == 4  # one journal per batch
        assert [r.id for r in records] == [hash_params(p) for p in POINTS]
        assert len(_warnings(caplog)) == 1
        assert len(list((results / ".entropic" / "journal").iterdir())) == 4
        frozen["a"].clear()
    with _open(checked_runner, results, shared_db_url) as store:  # the leftovers go
        assert journal(store) == []
        held = rows(store)
        assert sorted(held) == sorted(r.id for r in records)
        assert all(read_checked(row["result_file"]) is not None for row in held.values())


@pytest.mark.usefixtures("batches_of_two")
def test_a_journal_folder_frozen_mid_sweep_fails_the_runs_it_cannot_journal(
    shared_db_url: str,
    results: Path,
    frozen: dict[str, Attribute],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="entropic")
    runner = FreezeAt(frozen["i"], at=2)  # the first journal exists, then nothing may change
    with _open(runner, results, shared_db_url) as store:
        descriptors = Descriptors(monkeypatch)
        with pytest.raises(SweepError) as failed:
            store.sweep(POINTS)
        descriptors.check()
        assert len(descriptors.opened) == 1  # no later journal could be created
        assert len(failed.value.failures) == len(POINTS) - 2
        for _params, exc in failed.value.failures:
            assert isinstance(exc, PermissionError), repr(exc)  # EPERM, never EBADF
        assert len(_warnings(caplog)) == 1
        assert sorted(r.id for r in failed.value.records) == sorted(
            hash_params(p) for p in POINTS[:2]
        )
        frozen["i"].clear()
        store.sweep(POINTS)  # the rest, now that journals can be written again
    with _open(checked_runner, results, shared_db_url) as store:
        assert journal(store) == []
        assert sorted(rows(store)) == sorted(hash_params(p) for p in POINTS)

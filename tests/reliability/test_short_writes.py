"""Short journal writes: a journal line is written whole or its run fails, and nothing is glued.

A child process sweeps points whose journal lines are larger than a page. At
one runner call the next journal line can only be written in part, for real:
``RLIMIT_FSIZE`` a little past the journal's size (a short write, then EFBIG),
or results_dir on a small tmpfs filled to the last byte (a short write into the
last page, then ENOSPC). That run must fail, the journal must end at its last
full line (checked on a copy taken at the next call), and the next line must
be whole. Killed afterwards, the child loses nothing finished: a new Store
indexes every complete line.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from entropic import Store, hash_params
from entropic._storage.codec import decode_line

from ._fault_child import VersionRunner, payload
from ._faults import run_child, small_filesystem
from ._support import Rel, journal, read_checked, rows

PAD = "j" * 6000  # each journal line is larger than a 4 KiB page
POINTS = [{"n": n, "cfg": {"pad": PAD}} for n in range(6)]
IDS = [hash_params(p) for p in POINTS]
SHORT_AT = 3  # the third run's line falls short


@pytest.fixture(params=["fsize", "full"])
def short(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """(how, results_dir, folder to fill): RLIMIT_FSIZE, or results_dir on a small tmpfs."""
    if request.param == "fsize":
        yield "fsize", tmp_path / "results", ""
        return
    with small_filesystem(tmp_path / "small", 1024) as small:
        yield "full", small / "results", str(small)


def _spec(db_url: str, short: Any, snapshot: Path, die_at: int) -> dict[str, Any]:
    how, results, fill = short
    return {
        "db_url": db_url,
        "results": str(results),
        "points": POINTS,
        "short": {"at": SHORT_AT, "how": how, "fill": fill, "snapshot": str(snapshot)},
        "die_at": die_at,
        "batch_runs": 256,  # one batch: nothing commits before the end
    }


def _lines(data: bytes) -> list[dict[str, Any]]:
    """The rows of a journal that must end at a full line, every line whole."""
    assert data.endswith(b"\n"), "the journal does not end at a full line"
    return [decode_line(line) for line in data.split(b"\n")[:-1]]


class Recount(VersionRunner):
    def __init__(self) -> None:
        super().__init__(1)
        self.ran: list[str] = []

    def __call__(self, params: dict[str, Any]) -> None:
        self.ran.append(params["id"])
        super().__call__(params)


def _reopen_and_check(db_url: str, results: Path, indexed: list[str]) -> None:
    """A new Store holds exactly ``indexed``, each with its complete file; a re-sweep runs
    the others once."""
    recount = Recount()
    with Store(recount, Rel, results_dir=results, file_suffix=".txt", db_url=db_url) as store:
        held = rows(store)
        assert sorted(held) == sorted(indexed)
        for run_id, row in held.items():
            assert read_checked(row["result_file"]) == payload({"id": run_id, **row}, 1)
        assert journal(store) == []
        store.sweep(POINTS)
        assert sorted(recount.ran) == sorted(set(IDS) - set(indexed))
        assert sorted(rows(store)) == sorted(IDS)


def test_a_short_journal_write_fails_its_run_and_cuts_the_journal_back(
    shared_db_url: str, short: Any, tmp_path: Path
) -> None:
    results = short[1]
    snapshot = tmp_path / "journal-after-short-write"
    done = run_child(_spec(shared_db_url, short, snapshot, die_at=0))
    assert done.returncode == 5, done.stderr  # a SweepError: one run failed
    assert "1 of 6 distinct points failed" in done.stderr
    assert "File too large" in done.stderr or "No space left" in done.stderr
    # Right after the short write, the journal held the two runs before it, whole.
    assert [row["id"] for row in _lines(snapshot.read_bytes())] == IDS[: SHORT_AT - 1]
    assert not (results / f"{IDS[SHORT_AT - 1]}.txt").exists()  # the failed run's file
    _reopen_and_check(shared_db_url, results, IDS[: SHORT_AT - 1] + IDS[SHORT_AT:])


def test_killed_after_a_short_journal_write_nothing_finished_is_lost(
    shared_db_url: str, short: Any, tmp_path: Path
) -> None:
    results = short[1]
    snapshot = tmp_path / "journal-after-short-write"
    done = run_child(_spec(shared_db_url, short, snapshot, die_at=SHORT_AT + 2))
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert [row["id"] for row in _lines(snapshot.read_bytes())] == IDS[: SHORT_AT - 1]
    (left,) = (results / ".entropic" / "journal").glob("*.jsonl")
    finished = [*IDS[: SHORT_AT - 1], IDS[SHORT_AT]]  # the run after the short write, too
    assert [row["id"] for row in _lines(left.read_bytes())] == finished
    _reopen_and_check(shared_db_url, results, finished)

"""Processes sharing one store (SQLite, PostgreSQL): each point runs once, nobody waits forever.

Four processes sweep overlapping 500-point grids on one store.

Each process sweeps its own 500 points, in its own shuffled order, all starting
together; neighbouring grids overlap by 375 points, so most points are wanted
by two to four processes at once. Runner calls are counted through a file
every process appends to. Every point must run exactly once across the four,
and every process must get back a complete record for each of its points, in
its input order.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

import entropic
from entropic import Base, Mapped, Store, hash_params
from entropic._storage.tables import CLAIMS
from entropic.models import utcnow

from ._support import Rel, checked_runner, journal, read_checked, rows

PROCESSES = 4
GRID = 500
STRIDE = 125  # process k sweeps n in [k * STRIDE, k * STRIDE + GRID)
TESTS = Path(__file__).resolve().parents[1]


def grid(k: int) -> list[dict[str, Any]]:
    """Process k's points, in an order of its own."""
    points = [{"n": n, "x": n / 4} for n in range(k * STRIDE, k * STRIDE + GRID)]
    random.Random(k).shuffle(points)
    return points


class Counted:
    """The checksummed runner, appending each call's id to a shared file first."""

    def __init__(self, calls: str) -> None:
        self.calls = calls

    def __call__(self, params: dict[str, Any]) -> None:
        fd = os.open(self.calls, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, f"{params['id']}\n".encode())
        finally:
            os.close(fd)
        time.sleep(0.002)  # long enough for the others to want the same point meanwhile
        checked_runner(params)


def child(db_url: str, results: str, calls: str, k: str, go: str, out: str) -> None:
    """One process of the batch job: wait for the start signal, sweep, report the ids."""
    with Store(Counted(calls), Rel, results_dir=results, file_suffix=".txt", db_url=db_url) as s:
        points = grid(int(k))
        s.engine.connect().close()  # connected before the start, so they all start together
        while not os.path.exists(go):
            time.sleep(0.005)
        records = s.sweep(points)
        complete = all(
            read_checked(r.result_file) == f"{r.id} n={r.n}" and r.x == r.n / 4 for r in records
        )
        Path(out).write_text(json.dumps({"ids": [r.id for r in records], "complete": complete}))


def test_four_processes_on_overlapping_grids(shared_db_url: str, tmp_path: Path) -> None:
    results, calls, go = tmp_path / "results", tmp_path / "calls", tmp_path / "go"
    package = str(Path(entropic.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), package])}
    code = "import sys; from reliability.test_concurrency import child; child(*sys.argv[1:])"

    def out(k: int) -> str:
        return str(tmp_path / f"out{k}")

    with Store(checked_runner, Rel, results_dir=results, db_url=shared_db_url):
        pass  # the table exists before the four race
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, shared_db_url, *map(str, (results, calls, k, go)), out(k)],
            env=env,
            stderr=subprocess.PIPE,
        )
        for k in range(PROCESSES)
    ]
    time.sleep(0.5)
    go.touch()
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()
    counted = Counter(calls.read_text().split())
    wanted = {hash_params(p) for k in range(PROCESSES) for p in grid(k)}
    assert len(wanted) == (PROCESSES - 1) * STRIDE + GRID
    assert set(counted) == wanted, "some points never ran"
    twice = [run_id for run_id, times in counted.items() if times > 1]
    assert not twice, f"{len(twice)} points ran more than once"
    for k in range(PROCESSES):
        got = json.loads((tmp_path / f"out{k}").read_text())
        assert got["ids"] == [hash_params(p) for p in grid(k)], f"process {k} lost records"
        assert got["complete"], f"process {k} got a record whose file is not its own"
    with Store(
        checked_runner, Rel, results_dir=results, file_suffix=".txt", db_url=shared_db_url
    ) as store:
        held = rows(store)
        assert set(held) == wanted
        assert all(read_checked(row["result_file"]) is not None for row in held.values())
        assert journal(store) == []
        assert store.failures() == []
        with store.engine.connect() as conn:
            assert conn.scalar(sa.select(sa.func.count()).select_from(CLAIMS)) == 0


# -- claims of processes that hang, die, or live on another host ---------------------------
#
# A child sweeps a range of a small grid with a runner that appends each call's id to a
# file (one write per line, so processes never mix) and can hang on one point.


class Shared(Base):
    __tablename__ = "procs_shared"

    i: Mapped[int]
    x: Mapped[float]


class Appender:
    """Appends the id of every call to a file (one write per line, so processes never mix)."""

    def __init__(
        self, calls: str, pause: float = 0.0, hang_on: int = -1, started: str = ""
    ) -> None:
        self.calls = calls
        self.pause = pause
        self.hang_on = hang_on
        self.started = started

    def __call__(self, params: dict[str, Any]) -> None:
        with open(self.calls, "a") as handle:
            handle.write(params["id"] + "\n")
        if params["i"] == self.hang_on:
            Path(self.started).write_text("started")
            time.sleep(600)
        if self.pause:
            time.sleep(self.pause)
        Path(params["result_file"]).write_text(f"{params['i']}")


def points(start: int, stop: int) -> list[dict[str, Any]]:
    return [{"i": i, "x": i / 8} for i in range(start, stop)]


def claims_child(
    db_url: str, results: str, calls: str, start: str, stop: str, out: str, *rest: str
) -> None:
    """A process of a batch job: sweep a range of the grid and write the ids it got back."""
    pause = float(rest[0]) if rest else 0.0
    hang_on = int(rest[1]) if len(rest) > 1 else -1
    started = rest[2] if len(rest) > 2 else ""
    runner = Appender(calls, pause, hang_on, started)
    with Store(runner, Shared, results_dir=results, file_suffix=".txt", db_url=db_url) as store:
        records = store.sweep(points(int(start), int(stop)))
        Path(out).write_text(json.dumps([r.id for r in records]))


def _spawn_claims_child(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    code = (
        f"import sys; sys.path.insert(0, {str(TESTS)!r}); "
        "import reliability.test_concurrency as m; m.claims_child(*sys.argv[1:])"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        env={**os.environ, **(env or {})},
        stderr=subprocess.PIPE,
    )


def _calls(path: Path) -> Counter[str]:
    if not path.exists():
        return Counter()
    return Counter(path.read_text().split())


def _spawn_hung(
    db_url: str, results: Path, calls: Path, started: Path, out: Path
) -> subprocess.Popen[bytes]:
    """A child sweeping points 0..19 that hangs on point 5; returned once it has started it."""
    hung = _spawn_claims_child(
        db_url, str(results), str(calls), "0", "20", str(out), "0", "5", str(started)
    )
    deadline = time.monotonic() + 60
    while not started.exists():
        assert hung.poll() is None, hung.communicate()[1].decode()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return hung


def test_a_claim_of_a_killed_process_is_taken_over(shared_db_url: str, tmp_path: Path) -> None:
    results, calls, started = tmp_path / "results", tmp_path / "calls.txt", tmp_path / "started"
    hung = _spawn_hung(shared_db_url, results, calls, started, tmp_path / "out0")
    # Built while the owner lives, so its recovery leaves the claims alone.
    store = Store(
        Appender(str(calls)), Shared, results_dir=results, file_suffix=".txt", db_url=shared_db_url
    )
    with store:
        hung.send_signal(signal.SIGKILL)
        hung.communicate()  # reaped: its pid is gone
        with store.engine.connect() as conn:
            assert conn.scalar(sa.select(sa.func.count()).select_from(CLAIMS)) > 0
        start = time.monotonic()
        records = store.sweep(points(0, 20))
        assert time.monotonic() - start < 30
        with store.engine.connect() as conn:
            assert conn.scalar(sa.select(sa.func.count()).select_from(CLAIMS)) == 0
    assert [r.i for r in records] == list(range(20))
    counted = _calls(calls)
    assert counted[hash_params({"i": 5, "x": 5 / 8})] == 2  # the killed run, then ours
    assert all(n == 1 for key, n in counted.items() if key != hash_params({"i": 5, "x": 5 / 8}))


def test_a_new_store_drops_the_claims_of_processes_that_are_gone(
    shared_db_url: str, tmp_path: Path
) -> None:
    results, calls, started = tmp_path / "results", tmp_path / "calls.txt", tmp_path / "started"
    hung = _spawn_hung(shared_db_url, results, calls, started, tmp_path / "o")
    hung.send_signal(signal.SIGKILL)
    hung.communicate()
    store = Store(
        Appender(str(calls)), Shared, results_dir=results, file_suffix=".txt", db_url=shared_db_url
    )
    with store, store.engine.connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(CLAIMS)) == 0
        # Runs 0..4 finished before the kill: the journal brought them in.
        assert conn.scalar(sa.select(sa.func.count()).select_from(Shared)) == 5


def test_a_peer_on_another_host_is_waited_for_until_its_heartbeat_stops(
    shared_db_url: str, tmp_path: Path
) -> None:
    results, calls = tmp_path / "results", tmp_path / "calls.txt"
    with Store(
        Appender(str(calls)), Shared, results_dir=results, file_suffix=".txt", db_url=shared_db_url
    ) as store:
        run_id = hash_params({"i": 1, "x": 1 / 8})
        now = utcnow()
        with store.engine.begin() as conn:
            conn.execute(
                sa.insert(CLAIMS),
                {
                    "table_name": "procs_shared",
                    "id": run_id,
                    "owner": "elsewhere.example~4242~0~beef",
                    "host": "elsewhere.example",
                    "pid": 4242,
                    "claimed_at": now,
                    "heartbeat_at": now + timedelta(seconds=1),
                },
            )
    # A 2-second TTL: the sweep waits for the peer, then takes its point over.
    out = tmp_path / "out"
    proc = _spawn_claims_child(
        shared_db_url, str(results), str(calls), "0", "3", str(out), env={"ENTROPIC_CLAIM_TTL": "2"}
    )
    start = time.monotonic()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    assert time.monotonic() - start >= 2.0
    assert json.loads(out.read_text()) == [hash_params(p) for p in points(0, 3)]
    assert _calls(calls)[run_id] == 1

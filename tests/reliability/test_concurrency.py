"""Four processes sweep overlapping 500-point grids on one store, on SQLite and PostgreSQL.

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
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import sqlalchemy as sa

import entropic
from entropic import Store, hash_params
from entropic._storage.tables import CLAIMS

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

"""One task of a SLURM job in the cluster tests: sweep a grid in an order of its own.

    python _task.py DB_URL RESULTS CALLS OUT POINTS SLEEP

Every task sweeps the same POINTS points, shuffled by its array task id, on one
store. The runner appends "start" and "end" lines (id, job, task, restart count,
pid) to CALLS with O_APPEND, so the test can count runner calls across every
task and every restart. At the end the task writes what it got back to
OUT/{job}_{task}_{restart}.json. With TASK_SIGTERM=exit in the environment, SIGTERM
becomes SystemExit (as docs/cluster.md's sweep_array.py does), so a sweep stopped by
SLURM commits what finished and drops its claims before it exits.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

import entropic
from entropic import Base, Mapped, Store


class Point(Base):
    __tablename__ = "cluster_points"
    n: Mapped[int]
    x: Mapped[float]


def grid(points: int, task: int) -> list[dict[str, Any]]:
    """The whole grid, in task ``task``'s own order."""
    grid = [{"n": n, "x": n / 4} for n in range(points)]
    random.Random(task).shuffle(grid)
    return grid


def where() -> str:
    env = os.environ
    return " ".join(
        [
            env.get("SLURM_JOB_ID", "-"),
            env.get("SLURM_ARRAY_TASK_ID", "-"),
            env.get("SLURM_RESTART_COUNT", "0"),
            str(os.getpid()),
        ]
    )


def log_call(calls: str, line: str) -> None:
    fd = os.open(calls, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)


class Runner:
    """Writes "{id} n={n}" to the result file, logging its start and end to CALLS."""

    def __init__(self, calls: str, sleep: float) -> None:
        self.calls = calls
        self.sleep = sleep

    def __call__(self, params: dict[str, Any]) -> None:
        log_call(self.calls, f"start {params['id']} {where()}")
        time.sleep(self.sleep)
        with open(params["result_file"], "w") as handle:
            handle.write(f"{params['id']} n={params['n']}")
        params["custom_data"]["job"] = os.environ.get("SLURM_JOB_ID", "")
        log_call(self.calls, f"end {params['id']} {where()}")


def main(db_url: str, results: str, calls: str, out: str, points: str, sleep: str) -> None:
    if os.environ.get("TASK_SIGTERM") == "exit":
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    task = int(os.environ.get("SLURM_ARRAY_TASK_ID", "0"))
    runner = Runner(calls, float(sleep))
    with Store(runner, Point, results_dir=results, file_suffix=".txt", db_url=db_url) as store:
        wanted = grid(int(points), task)
        records = store.sweep(wanted)
        complete = all(
            Path(r.result_file).read_text() == f"{r.id} n={r.n}" and r.x == r.n / 4 for r in records
        )
        report = {
            "ids": [r.id for r in records],
            "ns": [r.n for r in records],
            "wanted": [p["n"] for p in wanted],
            "complete": complete,
            "backend": entropic.hashing.BACKEND,
            "executable": sys.executable,
            "job": os.environ.get("SLURM_JOB_ID", ""),
        }
    env = os.environ
    name = f"{env.get('SLURM_JOB_ID', 'x')}_{task}_{env.get('SLURM_RESTART_COUNT', '0')}.json"
    Path(out, name).write_text(json.dumps(report))


if __name__ == "__main__":
    main(*sys.argv[1:])

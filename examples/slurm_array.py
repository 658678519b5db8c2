"""One task of a SLURM job array running the logistic sweep of logistic_sweep.py.

Every task of the array sweeps the whole grid, in an order of its own (shuffled
by its task id), on one store: the tasks claim points before running them, so
each point runs once across the array, and each task gets back every record.
Submit it with slurm_array.sbatch; outside SLURM it runs as task 0.

    sbatch slurm_array.sbatch                                    # 1,000 points into ./slurm_out
    sbatch slurm_array.sbatch --small --db postgresql+psycopg://me@dbhost/sims

An SQLite file (the default) is safe only while every task runs on one node; for
tasks on several nodes, pass a PostgreSQL URL (docs/cluster.md).
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from entropic import Store
from logistic_sweep import Harvest, grid, simulate, sweep_and_report


def exit_on_sigterm(signum: int, _frame: FrameType | None) -> None:
    """SLURM's time limits, scancel and preemption send SIGTERM: leave through the sweep."""
    sys.exit(128 + signum)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a 12-point grid instead of 1,000")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("slurm_out"),
        help="folder for results/ (and the SQLite file)",
    )
    parser.add_argument(
        "--db", help="database URL (default: an SQLite file in --out, for tasks on one node)"
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    # entropic's summary line: how many points this task ran and how many its peers did.
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    task = int(os.environ.get("SLURM_ARRAY_TASK_ID", "0"))
    args.out.mkdir(parents=True, exist_ok=True)
    points = grid(args.small)
    random.Random(task).shuffle(points)
    store = Store(
        simulate,
        Harvest,
        results_dir=args.out / "results",
        file_suffix=".npy",
        db_url=args.db or f"sqlite:///{args.out / 'db.sqlite3'}",
    )
    with store:
        records, _line = sweep_and_report(store, points)
        best = max(records, key=lambda rec: rec.custom_data["harvest"])
    print(
        f"task {task}: {len(records)} records; largest sustained harvest "
        f"{best.custom_data['harvest']:.1f} at r={best.r:g}, h={best.h:g}"
    )


if __name__ == "__main__":
    main()

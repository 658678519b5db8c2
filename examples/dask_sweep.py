"""The logistic sweep of logistic_sweep.py, run on a Dask LocalCluster.

The runner and the model live in logistic_sweep.py so the worker processes can
import them; the calling process persists the rows as the workers finish.
On a real cluster, build the Client the way Dask users do (for example with
dask-jobqueue's SLURMCluster); results_dir must be on a filesystem every worker
shares.

    python examples/dask_sweep.py              # 1,000 points on 2 workers, into ./dask_out
    python examples/dask_sweep.py --small      # 12 points
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from distributed import Client, LocalCluster

from entropic import Store
from logistic_sweep import Harvest, grid, plot, simulate, sweep_and_report


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a 12-point grid instead of 1,000")
    parser.add_argument(
        "--out", type=Path, default=Path("dask_out"), help="folder for the store and plot"
    )
    parser.add_argument("--workers", type=int, default=2, help="worker processes (2)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    store = Store(
        simulate,
        Harvest,
        results_dir=args.out / "results",
        file_suffix=".npy",
        db_url=f"sqlite:///{args.out / 'db.sqlite3'}",
    )
    # distributed ships without type hints, hence the ignores.
    cluster = LocalCluster(  # type: ignore[no-untyped-call]
        n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None
    )
    with store, cluster, Client(cluster) as client:  # type: ignore[no-untyped-call]
        records, line = sweep_and_report(store, grid(args.small), client)
        png = args.out / "logistic.png"
        plot(records, png)
    print(f"{line} on {args.workers} Dask workers; plot: {png}")


if __name__ == "__main__":
    main()

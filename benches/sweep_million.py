"""A 1,000,000-point sweep with a trivial runner: prints its time and the peak RSS.

Run it as a script (it is not collected by pytest):

    python benches/sweep_million.py [points] [--db URL] [--warm]

The folder holds a million 1-byte files afterwards; it is a temporary folder
removed at the end unless ``--keep`` is given.
"""

from __future__ import annotations

import argparse
import logging
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from entropic import Base, Mapped, Store


class Million(Base):
    __tablename__ = "million"

    n: Mapped[int]
    dt: Mapped[float]
    method: Mapped[str]


def touch(params: dict[str, Any]) -> None:
    with open(params["result_file"], "wb") as handle:
        handle.write(b"x")


def points(count: int) -> Any:
    methods = ("euler", "rk4", "leapfrog", "verlet")
    return ({"n": i // 4, "dt": 1e-3 * (i % 97), "method": methods[i % 4]} for i in range(count))


def peak_rss_mib() -> float:
    # ru_maxrss is KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("points", type=int, nargs="?", default=1_000_000)
    parser.add_argument("--db", default="", help="database URL (default: SQLite in the folder)")
    parser.add_argument("--warm", action="store_true", help="sweep a second time (all cached)")
    parser.add_argument("--keep", action="store_true", help="keep the folder")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    folder = Path(tempfile.mkdtemp(prefix="entropic-million-"))
    db_url = args.db or f"sqlite:///{folder / 'million.sqlite3'}"
    try:
        with Store(
            touch, Million, results_dir=folder / "r", file_suffix=".bin", db_url=db_url
        ) as store:
            start = time.perf_counter()
            records = store.sweep(points(args.points))
            cold = time.perf_counter() - start
            assert len(records) == args.points
            rss = peak_rss_mib()
            print(f"cold sweep of {args.points} points: {cold:.1f} s, peak RSS {rss:.0f} MiB")
            if args.warm:
                del records
                start = time.perf_counter()
                records = store.sweep(points(args.points))
                warm = time.perf_counter() - start
                print(f"warm sweep: {warm:.1f} s, peak RSS {peak_rss_mib():.0f} MiB")
    finally:
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()

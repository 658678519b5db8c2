"""A 1,000,000-point sweep with a trivial runner: prints its time and its peak memory.

Run it as a script (it is not collected by pytest):

    python benches/sweep_million.py [points] [--db URL] [--warm] [--isweep | --list] [--keep]

Each phase runs in a child process of its own, so that each peak is its own
(``ru_maxrss`` is a high-water mark and never comes down):

- cold: ``store.sweep(points)`` into an empty folder, the points from a generator
  (``--list``: from a list, built before the baseline is taken, as a caller holds
  it; ``--isweep``: a loop over ``store.isweep(points)`` that counts the records
  and keeps none);
- warm (``--warm``): the same points again, by a new process over the kept folder
  (everything cached);
- runner alone: the same ``touch()`` called in a plain loop for the same number of
  points, into a fresh folder, so that the sweep's bookkeeping (its time minus the
  runner's) can be printed.

Peak RSS is reported above the child's baseline: its RSS after the imports and
after opening the Store, before the sweep has built anything.

The folder holds a million 1-byte files afterwards (two million with the runner
alone); it is a temporary folder removed at the end unless ``--keep`` is given.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import shutil
import subprocess
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


def rss_mib() -> float:
    """The current RSS (from /proc), or the high-water mark where /proc is missing."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return peak_rss_mib()


def phase(
    name: str, count: int, folder: Path, db_url: str, isweep: bool, as_list: bool
) -> dict[str, Any]:
    """One phase, in this (child) process: its times and its memory."""
    if name == "runner":
        alone = folder / "alone"
        alone.mkdir()
        base = rss_mib()
        wall, cpu = time.perf_counter(), time.process_time()
        for i in range(count):
            touch({"result_file": f"{alone}/{i}.bin"})
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        return {"wall": wall, "cpu": cpu, "base": base, "peak": peak_rss_mib(), "count": count}
    given = list(points(count)) if as_list else points(count)
    with Store(
        touch, Million, results_dir=folder / "r", file_suffix=".bin", db_url=db_url
    ) as store:
        base = rss_mib()
        wall, cpu = time.perf_counter(), time.process_time()
        # isweep: count the records as they come, keep none.
        got = sum(1 for _record in store.isweep(given)) if isweep else len(store.sweep(given))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        return {"wall": wall, "cpu": cpu, "base": base, "peak": peak_rss_mib(), "count": got}


def child(name: str, args: argparse.Namespace, folder: Path, db_url: str) -> dict[str, Any]:
    command = [sys.executable, __file__, str(args.points), "--phase", name]
    command += ["--folder", str(folder), "--db", db_url]
    if args.isweep:
        command.append("--isweep")
    if args.list:
        command.append("--list")
    done = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def report(label: str, got: dict[str, Any], alone: dict[str, Any] | None) -> None:
    line = f"{label}: {got['wall']:.1f} s wall, {got['cpu']:.1f} s CPU"
    if alone is not None:
        line += (
            f"; minus the runner alone: {got['wall'] - alone['wall']:.1f} s wall, "
            f"{got['cpu'] - alone['cpu']:.1f} s CPU"
        )
    line += (
        f"; peak RSS {max(0.0, got['peak'] - got['base']):.0f} MiB above the baseline "
        f"({got['base']:.0f} MiB; peak {got['peak']:.0f} MiB)"
    )
    print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("points", type=int, nargs="?", default=1_000_000)
    parser.add_argument("--db", default="", help="database URL (default: SQLite in the folder)")
    parser.add_argument("--warm", action="store_true", help="sweep a second time (all cached)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--isweep", action="store_true", help="consume store.isweep(points) instead of sweep"
    )
    which.add_argument("--list", action="store_true", help="sweep a list of the points")
    parser.add_argument("--keep", action="store_true", help="keep the folder")
    # What the children are given.
    parser.add_argument("--phase", choices=("cold", "warm", "runner"), help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    if args.phase:
        got = phase(args.phase, args.points, args.folder, args.db, args.isweep, args.list)
        print(json.dumps(got))
        return
    folder = Path(tempfile.mkdtemp(prefix="entropic-million-"))
    db_url = args.db or f"sqlite:///{folder / 'million.sqlite3'}"
    how = "isweep" if args.isweep else "sweep (a list)" if args.list else "sweep"
    try:
        cold = child("cold", args, folder, db_url)
        assert cold["count"] == args.points, cold
        warm = None
        if args.warm:
            warm = child("warm", args, folder, db_url)
            assert warm["count"] == args.points, warm
        alone = child("runner", args, folder, db_url)
        print(f"{args.points} points, store.{how}, {db_url.split(':', 1)[0]}:")
        report("runner alone (touch() in a plain loop)", alone, None)
        report(f"cold {how}", cold, alone)
        if warm is not None:
            report(f"warm {how} (all cached, new process)", warm, None)
    finally:
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()

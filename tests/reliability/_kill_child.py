"""The sweeping process of the kill tests: it sweeps a small grid and is killed at a chosen moment.

Run as ``python -m reliability._kill_child SPEC`` with SPEC a JSON object:
``db_url``, ``results``, ``control`` (a folder for the call tickets and the
log), ``points``, ``dask`` (sweep on a LocalCluster), and ``kill``: where to
die, as ``"<moment>@<k>"``:

- ``start@k``, ``mid@k``, ``end@k``: in the k-th runner call, before it writes,
  with half its file written, with its file complete but before it returns;
- ``claim@k``: at the k-th INSERT into the claims table (before any runner);
- ``insert@k``: just before the k-th batch's upsert into the results table;
- ``commit@k``: after the k-th batch's upsert, before its COMMIT;
- ``rotate@k``: after the k-th batch committed, before its journal is dropped;
- ``recover@k``: at the k-th upsert of a new Store's recovery (no sweep).

A runner kill on Dask happens on a worker: the runner then opens a gate file
(every later call waits at it) and the test kills the whole process group.
Everything else dies by ``SIGKILL`` sent to itself, at exactly that moment.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from ._support import Rel, write_checked

#: Runs per batch in the child: small, so a 10-point sweep commits several batches.
BATCH_RUNS = 4


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def payload(params: dict[str, Any]) -> str:
    return f"{params['id']} n={params['n']} " + "x" * 4000


class KillRunner:
    """Takes a ticket per call (across processes), logs start and end, dies on its ticket."""

    def __init__(self, control: str, moment: str, at: int, on_worker: bool) -> None:
        self.control = control
        self.moment = moment
        self.at = at
        self.on_worker = on_worker

    def _ticket(self) -> int:
        k = 1
        while True:
            try:
                os.close(os.open(os.path.join(self.control, f"call-{k}"), os.O_CREAT | os.O_EXCL))
                return k
            except FileExistsError:
                k += 1

    def _log(self, line: str) -> None:
        fd = os.open(os.path.join(self.control, "log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)

    def _stop(self) -> None:
        if not self.on_worker:
            die()
        Path(self.control, "gate").touch()  # the test kills the process group
        time.sleep(600)

    def __call__(self, params: dict[str, Any]) -> None:
        gate = Path(self.control, "gate")
        while gate.exists():  # a kill is due: no new run may start or finish
            time.sleep(600)
        k = self._ticket()
        self._log(f"start {params['id']}")
        mine = k == self.at
        if mine and self.moment == "start":
            self._stop()
        text = payload(params)
        with open(params["result_file"], "w", encoding="utf-8") as handle:
            handle.write(text[: len(text) // 2])
            handle.flush()
            if mine and self.moment == "mid":
                self._stop()
        write_checked(params["result_file"], text)
        if mine and self.moment == "end":
            self._stop()
        self._log(f"end {params['id']}")


def _watch(target: Any, moment: str, at: int) -> None:
    """Die at the ``at``-th claim insert, batch upsert or batch commit of ``target``'s engines."""
    seen = {"n": 0, "in_batch": False}

    def before_execute(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        text = statement.lstrip().upper()
        if moment == "claim" and text.startswith("INSERT INTO ENTROPIC_CLAIMS"):
            seen["n"] += 1
            if seen["n"] == at:
                die()
        if text.startswith("INSERT INTO RELIABILITY_RESULT"):
            if moment in ("insert", "recover"):
                seen["n"] += 1
                if seen["n"] == at:
                    die()
            seen["in_batch"] = True

    def on_commit(conn: Any) -> None:
        if moment == "commit" and seen["in_batch"]:
            seen["n"] += 1
            if seen["n"] == at:
                die()
        seen["in_batch"] = False

    sa.event.listen(target, "before_cursor_execute", before_execute)
    sa.event.listen(target, "commit", on_commit)


def main(spec_text: str) -> None:
    from entropic import Store, SweepError, sweep
    from entropic._storage.journal import Journal

    spec = json.loads(spec_text)
    moment, _, at_text = spec["kill"].partition("@")
    at = int(at_text)
    sweep.BATCH_RUNS = BATCH_RUNS
    sweep.BATCH_SECONDS = 3600.0  # batches by count only, so the moments are exact
    if moment == "rotate":
        commits = {"n": 0}
        rotate = Journal.rotate

        def rotate_or_die(self: Journal) -> None:
            commits["n"] += 1
            if commits["n"] == at:
                die()
            rotate(self)

        Journal.rotate = rotate_or_die  # type: ignore[method-assign]
    runner = KillRunner(spec["control"], moment, at, on_worker=spec["dask"])
    # Every engine of this process, from before the Store is built (it recovers then).
    _watch(sa.Engine, moment, at)
    store = Store(
        runner, Rel, results_dir=spec["results"], file_suffix=".txt", db_url=spec["db_url"]
    )
    if moment == "recover":
        print("the kill point was never reached", file=sys.stderr)
        sys.exit(3)
    points = [{"n": n} for n in range(spec["points"])]
    try:
        if spec["dask"]:
            from distributed import Client, LocalCluster

            with (
                LocalCluster(
                    n_workers=2,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=":0",
                    silence_logs=logging.ERROR,
                ) as cluster,
                Client(cluster) as client,
            ):
                store.sweep(points, client=client)
        else:
            store.sweep(points)
    except SweepError as exc:
        print(exc, file=sys.stderr)
    print("the kill point was never reached", file=sys.stderr)
    sys.exit(3)


if __name__ == "__main__":
    main(sys.argv[1])

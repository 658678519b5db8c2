"""Random kills: a sweeping child SIGKILLed from outside at random moments, ten times a database.

Each round a child process sweeps 40 points (half of them new) in batches of 8,
and is killed, process group and all, after a random delay: either just as it
builds its Store (recovering the previous round's leftovers) or while it sweeps
(inside a runner, between runs, at a commit, while a journal is dropped). Then
a new Store must open and show:

- no committed row lost, and every run whose journal line was complete at the
  kill indexed (recovery ingests every whole line); at most the one run in
  flight when the process died is missing among those whose runner returned;
- every row's file complete (its checksum footer matches) and the file of that
  row's run, not another's;
- no claim and nothing left in entropic's folders.

At the end a full sweep runs exactly what is missing and ``entropic check`` is
clean. The seed is random and printed; ``ENTROPIC_FUZZ_SEED`` sets it.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from entropic import Store, hash_params
from entropic._storage.codec import decode_line
from entropic._storage.tables import CLAIMS
from entropic.cli import main as cli_main

from ._fault_child import VersionRunner, payload
from ._faults import start_child
from ._support import Rel, journal, read_checked, rows

KILLS = 10
GRID = 40  # points a round sweeps: half of them new
STRIDE = 20
RUNNER_SECONDS = 0.015


def _round_points(k: int) -> list[dict[str, Any]]:
    return [{"n": n} for n in range(k * STRIDE, k * STRIDE + GRID)]


def _wait_for(path: Path, proc: Any, seconds: float = 90) -> bool:
    """Wait until ``path`` exists; False if the child ended first."""
    deadline = time.monotonic() + seconds
    while not path.exists():
        if proc.poll() is not None:
            return False
        assert time.monotonic() < deadline, f"the child never made {path.name}"
        time.sleep(0.005)
    return True


def _kill_group(proc: Any) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _ended(log: Path) -> set[str]:
    lines = log.read_text().splitlines() if log.exists() else []
    return {line.split()[1] for line in lines if line.startswith("end ")}


def _journalled(results: Path) -> set[str]:
    """Ids with a whole line in a journal left on disk (a cut last line does not count)."""
    found: set[str] = set()
    for path in (results / ".entropic" / "journal").glob("*.jsonl"):
        data = path.read_bytes()
        found.update(decode_line(line)["id"] for line in data.split(b"\n")[:-1])
    return found


def _verify(
    store: Store[Rel], committed: set[str], journalled: set[str], ended: set[str]
) -> set[str]:
    held = rows(store)
    ids = set(held)
    assert committed <= ids, f"committed rows lost: {sorted(committed - ids)}"
    assert journalled <= ids, f"journalled runs lost: {sorted(journalled - ids)}"
    assert len(ended - ids) <= 1, f"finished runs lost: {sorted(ended - ids)}"
    for run_id, row in held.items():
        text = read_checked(row["result_file"])
        assert text is not None, f"the file of {run_id} is missing or cut short"
        assert text == payload({"id": run_id, "n": row["n"]}, row["custom_data"]["v"])
    with store.engine.connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(CLAIMS)) == 0
    assert journal(store) == []
    return ids


def test_random_kills_lose_nothing(shared_db_url: str, tmp_path: Path) -> None:
    seed = int(os.environ.get("ENTROPIC_FUZZ_SEED") or random.randrange(2**32))
    print(f"ENTROPIC_FUZZ_SEED={seed}")
    rng = random.Random(seed)
    results = tmp_path / "results"
    committed: set[str] = set()
    moments: list[str] = []
    began = time.monotonic()
    for k in range(KILLS):
        log = tmp_path / f"log-{k}"
        proc = start_child(
            {
                "db_url": shared_db_url,
                "results": str(results),
                "points": _round_points(k),
                "version": k + 1,
                "log": str(log),
                "sleep": RUNNER_SECONDS,
                "batch_runs": 8,
            }
        )
        try:
            if rng.random() < 0.2:  # while it builds its Store: recovery of the last round
                since, delay = "opening", rng.uniform(0, 0.3)
                reached = _wait_for(Path(f"{log}.opening"), proc)
            else:  # while it sweeps
                since, delay = "sweeping", rng.uniform(0, GRID * RUNNER_SECONDS * 1.5)
                reached = _wait_for(log, proc)
            moment = f"{since}+{delay:.3f}s"
            time.sleep(delay)
            _kill_group(proc)
            proc.wait(60)
        finally:
            _kill_group(proc)
            _out, err = proc.communicate(timeout=60)
        assert reached, f"seed {seed} round {k}: the child ended early: {err}"
        killed = proc.returncode == -signal.SIGKILL
        assert killed or proc.returncode == 0, f"seed {seed} round {k}: {err}"
        moments.append(moment if killed else f"{moment} (finished first)")
        journalled, ended = _journalled(results), _ended(log)
        with Store(
            VersionRunner(0), Rel, results_dir=results, file_suffix=".txt", db_url=shared_db_url
        ) as store:
            try:
                committed = _verify(store, committed, journalled, ended)
            except AssertionError as exc:
                raise AssertionError(f"seed {seed}, round {k} ({moment}): {exc}") from None
    everything = [{"n": n} for n in range((KILLS - 1) * STRIDE + GRID)]
    ran: list[str] = []

    def counted(params: dict[str, Any]) -> None:
        ran.append(params["id"])
        VersionRunner(99)(params)

    with Store(
        counted, Rel, results_dir=results, file_suffix=".txt", db_url=shared_db_url
    ) as store:
        records = store.sweep(everything)
        assert sorted(ran) == sorted({hash_params(p) for p in everything} - committed)
        assert all(read_checked(r.result_file) is not None for r in records)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = cli_main(["check", "--db", shared_db_url, "--results", str(results)])
    assert status == 0, f"seed {seed}: {out.getvalue()}"
    print(f"kills: {', '.join(moments)}; {time.monotonic() - began:.1f} s")

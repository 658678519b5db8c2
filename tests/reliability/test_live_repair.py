"""``entropic check --repair`` while another process re-runs a point leaves that point alone.

Process A re-runs a stored point with ``Store.run``: the old file is moved to
``.entropic/aside/`` and the runner starts, then waits on a gate file, either
before it writes (the row's file is missing) or with its new file complete
(the old one is still aside). Meanwhile ``entropic check`` (here) and ``entropic check
--repair`` (in a process of its own) run. Neither may restore the old file over
the new one or touch the row: the point is claimed by a live process. Then A
finishes, and the row and the file must both be the new run's.
"""

from __future__ import annotations

import contextlib
import io
import time
from pathlib import Path

import pytest

from entropic import Store, hash_params
from entropic.cli import main as cli_main

from ._fault_child import VersionRunner, payload
from ._faults import entropic_check, start_child
from ._support import Rel, journal, read_checked, rows

POINT = {"n": 3}
ROUNDS = ["before", "after", "before", "after"]  # where A's runner waits, round by round


def _wait_for(path: Path, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.02)


@pytest.mark.slow
def test_check_repair_leaves_a_live_rerun_alone(shared_db_url: str, tmp_path: Path) -> None:
    results = tmp_path / "results"
    run_id = hash_params(POINT)
    with Store(
        VersionRunner(0), Rel, results_dir=results, file_suffix=".txt", db_url=shared_db_url
    ) as store:
        store.run(POINT)  # version 0: the row A re-runs
    where = ["--db", shared_db_url, "--results", str(results)]
    for version, gate_at in enumerate(ROUNDS, start=1):
        gate = tmp_path / f"gate-{version}"
        gate.touch()
        child = start_child(
            {
                "db_url": shared_db_url,
                "results": str(results),
                "points": [POINT],
                "how": "run",
                "version": version,
                "gate": str(gate),
                "gate_at": gate_at,
            }
        )
        try:
            _wait_for(Path(f"{gate}.waiting"))
            assert (results / ".entropic" / "aside" / run_id).exists()  # A is mid-run
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                status = cli_main(["check", *where])
            assert "1 run(s) in progress" in out.getvalue(), out.getvalue()
            assert status == 0, out.getvalue()
            repaired = entropic_check(*where, "--repair")
            assert repaired.returncode == 0, repaired.stdout + repaired.stderr
            assert "repaired" not in repaired.stdout, repaired.stdout
            assert (results / ".entropic" / "aside" / run_id).exists()  # left where A put it
        finally:
            gate.unlink()
            _out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        with Store(
            VersionRunner(99), Rel, results_dir=results, file_suffix=".txt", db_url=shared_db_url
        ) as store:
            row = rows(store)[run_id]
            assert row["custom_data"]["v"] == version, f"round {version}: the row is not A's"
            text = read_checked(row["result_file"])
            assert text == payload({"id": run_id, **POINT}, version), f"round {version}: {text}"
            assert journal(store) == []

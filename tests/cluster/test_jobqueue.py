"""A sweep on dask-jobqueue's SLURMCluster: every run happens inside one of its SLURM jobs.

The script (``_jobqueue_sweep.py``) defines its model and runner in
``__main__``, as a user's first script does, and sweeps on a SLURMCluster of two
jobs. Each run records its SLURM_JOB_ID and pid: none may have run in the
calling process, and every one in a job of the cluster.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ._slurm import Slurm, job_env, logs

pytest.importorskip("dask_jobqueue", reason="pip install entropic[cluster] (or .[test])")

SCRIPT = Path(__file__).with_name("_jobqueue_sweep.py")
POINTS = 20


def test_slurmcluster_runs_happen_in_slurm_jobs(slurm: Slurm, tmp_path: Path) -> None:
    results, calls, out, log_dir = (
        tmp_path / "results",
        tmp_path / "calls",
        tmp_path / "out.json",
        tmp_path / "logs",
    )
    name = slurm.job_name("entropic-dask")
    db_url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    args = [db_url, str(results), str(calls), str(out), name, str(log_dir)]
    result = subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=job_env(),
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"{result.stderr[-5000:]}\n{logs(log_dir, '*.err')}"
    report = json.loads(out.read_text())
    assert len(report["ids"]) == POINTS
    assert len(report["jobs"]) == 2

    runs = [line.split() for line in calls.read_text().splitlines()]
    assert sorted(run_id for run_id, _, _ in runs) == sorted(report["ids"])  # each once
    in_caller = [run_id for run_id, _, pid in runs if int(pid) == report["pid"]]
    said = [
        line[:400]
        for line in result.stderr.splitlines()
        if line.startswith("entropic:") or "pickle" in line
    ]
    assert not in_caller, (
        f"{len(in_caller)} of {POINTS} runs happened in the calling process, not on the "
        "SLURMCluster's workers; entropic said:\n" + "\n".join(said)
    )
    assert {job for _, job, _ in runs} <= set(report["jobs"]), runs

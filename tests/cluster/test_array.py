"""A SLURM job array whose four tasks sweep the same grid, each in its own order.

On an SQLite file on a local disk (all tasks on one node) and on PostgreSQL:
every point runs exactly once across the array, and every task gets back a
complete record of every point, in its own input order.
"""

from __future__ import annotations

import sys
from pathlib import Path

import entropic

from ._checks import calls, reports, starts_per_id, stored
from ._slurm import Slurm, logs, python_cmd

TASK = Path(__file__).with_name("_task.py")
TASKS = 4
POINTS = 600  # more than one claim batch (256), so the tasks share the work
SLEEP = 0.002


def test_array_tasks_run_each_point_once(slurm: Slurm, shared_db_url: str, tmp_path: Path) -> None:
    results, out, call_log = tmp_path / "results", tmp_path / "out", tmp_path / "calls"
    out.mkdir()
    args = [shared_db_url, str(results), str(call_log), str(out), str(POINTS), str(SLEEP)]
    job = slurm.sbatch(
        [
            f"--array=0-{TASKS - 1}",
            "--job-name=entropic-array",
            f"--output={out}/%A_%a.out",
            "--time=5",
            f"--wrap=exec {python_cmd(TASK, *args)}",
        ],
        cwd=tmp_path,
    )
    states = slurm.wait_done(job, tasks=TASKS, timeout=180)
    assert set(states.values()) == {"COMPLETED"}, f"{states}\n{logs(out)}"

    found = calls(call_log)
    starts = starts_per_id(found)
    assert len(starts) == POINTS
    twice = [run_id for run_id, n in starts.items() if n > 1]
    assert not twice, f"{len(twice)} points ran more than once"
    assert sum(call.event == "end" for call in found) == POINTS

    got = reports(out)
    assert len(got) == TASKS, logs(out)
    task_jobs = {report["job"] for report in got}
    assert len(task_jobs) == TASKS
    assert {call.job for call in found} <= task_jobs  # every run inside one of the array's tasks
    for report in got:
        assert report["complete"]
        assert report["ns"] == report["wanted"]  # every point, in the task's own order
        assert len(set(report["ids"])) == POINTS
        assert report["backend"] == entropic.hashing.BACKEND
        assert report["executable"] == sys.executable

    rows = stored(shared_db_url, results)
    assert len(rows) == POINTS
    assert {row.custom_data["job"] for row in rows} <= task_jobs

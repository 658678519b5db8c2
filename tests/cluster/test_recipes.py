"""The recipes of docs/cluster.md, run as written, and examples/slurm_array.sbatch.

The page's files are the fenced blocks whose info string names them
(```python recipe=sim.py```); each test writes them into a folder of its own and
runs the commands the page shows there: ``python sweep_local.py``, ``sbatch
sweep_array.sbatch`` (on an SQLite file and on PostgreSQL, through ``SWEEP_DB``)
and ``python sweep_slurm.py``. Site settings come from the environment, as the
page suggests (dask-jobqueue's ``DASK_JOBQUEUE__SLURM__*``).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ._slurm import Slurm, job_env, logs

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "cluster.md"
EXAMPLES = ROOT / "examples"
RECIPE = re.compile(r"^```(\w+) recipe=(\S+)[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
FILES = {
    "sim.py",
    "sweep_local.py",
    "sweep_array.py",
    "sweep_array.sbatch",
    "sweep_slurm.py",
    "jobqueue.yaml",
}
COMMANDS = ["python sweep_local.py", "sbatch sweep_array.sbatch", "python sweep_slurm.py"]
POINTS = 300  # the page's GRID: 100 rates x 3 step counts
TASKS = 4


def recipes() -> dict[str, str]:
    return {name: body for _lang, name, body in RECIPE.findall(PAGE.read_text(encoding="utf-8"))}


def write_recipes(folder: Path) -> None:
    for name, body in recipes().items():
        (folder / name).write_text(body, encoding="utf-8")


def rows(folder: Path, db_url: str) -> list[dict[str, Any]]:
    """The store's rows, through the entropic CLI (no model class needed)."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "entropic",
            "ls",
            "--json",
            "--limit",
            "0",
            "--db",
            db_url,
            "--results",
            str(folder / "results"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def python(folder: Path, script: str, env: dict[str, str], timeout: float) -> str:
    """``python SCRIPT`` in ``folder``, this venv's python first on PATH, as the page has it."""
    result = subprocess.run(
        ["python", script],
        capture_output=True,
        text=True,
        cwd=folder,
        env=env,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    return result.stdout


def test_the_page_holds_the_recipes_and_commands_tested_here() -> None:
    assert set(recipes()) == FILES
    text = PAGE.read_text(encoding="utf-8")
    for command in COMMANDS:
        assert f"\n{command}\n" in text, command


def test_sweep_local(tmp_path: Path) -> None:
    write_recipes(tmp_path)
    db_url = f"sqlite:///{tmp_path / 'sweep.sqlite3'}"
    out = python(tmp_path, "sweep_local.py", job_env(), timeout=300)
    assert f"{POINTS} records" in out
    found = rows(tmp_path, db_url)
    assert len(found) == POINTS
    assert all(row["custom_data"]["slurm_job"] is None for row in found)


def test_sweep_array(slurm: Slurm, shared_db_url: str, tmp_path: Path) -> None:
    write_recipes(tmp_path)
    job = slurm.sbatch(["sweep_array.sbatch"], cwd=tmp_path, env=job_env(SWEEP_DB=shared_db_url))
    states = slurm.wait_done(job, tasks=TASKS, timeout=180)
    assert set(states.values()) == {"COMPLETED"}, f"{states}\n{logs(tmp_path)}"
    outputs = {p.name: p.read_text() for p in tmp_path.glob(f"decay-{job}_*.out")}
    assert len(outputs) == TASKS, logs(tmp_path)
    for task in range(TASKS):
        assert f"task {task}: {POINTS} records" in outputs[f"decay-{job}_{task}.out"]
    found = rows(tmp_path, shared_db_url)
    assert len(found) == POINTS
    task_jobs = {task.split("_")[0] for task in states}  # squeue's ids: JOB_TASK
    assert task_jobs == {job}
    ran_in = {row["custom_data"]["slurm_job"] for row in found}
    assert None not in ran_in  # every point ran inside one of the array's tasks


def test_sweep_slurm(slurm: Slurm, tmp_path: Path) -> None:
    pytest.importorskip("dask_jobqueue", reason="pip install entropic[cluster] (or .[test])")
    write_recipes(tmp_path)
    name = slurm.job_name("decay-dask")
    env = job_env(
        # Site settings, as ~/.config/dask/jobqueue.yaml would give them: this one-node
        # SLURM's workers and scheduler meet on the loopback interface.
        DASK_JOBQUEUE__SLURM__INTERFACE="lo",
        DASK_JOBQUEUE__SLURM__NAME=name,
        DASK_JOBQUEUE__SLURM__LOG_DIRECTORY=str(tmp_path / "dask-logs"),
    )
    out = python(tmp_path, "sweep_slurm.py", env, timeout=300)
    assert f"{POINTS} records" in out
    found = rows(tmp_path, f"sqlite:///{tmp_path / 'sweep.sqlite3'}")
    assert len(found) == POINTS
    ran_in = {row["custom_data"]["slurm_job"] for row in found}
    assert None not in ran_in, "some points ran outside the SLURM jobs of the cluster"
    for job in ran_in:
        assert slurm.show(job)["JobName"] == name


def test_jobqueue_yaml_is_dask_jobqueue_configuration() -> None:
    """The page's ~/.config/dask/jobqueue.yaml: its settings reach SLURMCluster's job script."""
    pytest.importorskip("dask_jobqueue", reason="pip install entropic[cluster] (or .[test])")
    import dask
    import yaml
    from dask_jobqueue import SLURMCluster

    slurm_config = yaml.safe_load(recipes()["jobqueue.yaml"])["jobqueue"]["slurm"]
    settings = {f"jobqueue.slurm.{key}": value for key, value in slurm_config.items()}
    assert settings.pop("jobqueue.slurm.interface") == "ib0"  # not on this machine: use lo
    with (
        dask.config.set({**settings, "jobqueue.slurm.interface": "lo"}),
        SLURMCluster(cores=1, processes=1, memory="2GB", walltime="00:30:00") as cluster,
    ):
        script = cluster.job_script()  # the job reads the configuration when it is made
    assert "#SBATCH -p compute" in script
    assert "#SBATCH -A myproject" in script


SUMMARY = re.compile(r"entropic: sweep of (\d+) points \((\d+) distinct\): (\d+) cached, (\d+) ran")


def test_example_slurm_array(slurm: Slurm, shared_db_url: str, tmp_path: Path) -> None:
    """examples/slurm_array.sbatch as its comment shows: 1,000 points on the default SQLite
    file, or --small on PostgreSQL; submitted from its folder."""
    pytest.importorskip("numpy", reason="the example needs numpy (pip install .[examples])")
    for name in ("slurm_array.sbatch", "slurm_array.py", "logistic_sweep.py"):
        (tmp_path / name).write_bytes((EXAMPLES / name).read_bytes())
    postgres = shared_db_url.startswith("postgresql")
    args = ["--small", "--db", shared_db_url] if postgres else []
    db_url = shared_db_url if postgres else f"sqlite:///{tmp_path / 'slurm_out' / 'db.sqlite3'}"
    job = slurm.sbatch(["slurm_array.sbatch", *args], cwd=tmp_path)
    states = slurm.wait_done(job, tasks=TASKS, timeout=240)
    assert set(states.values()) == {"COMPLETED"}, f"{states}\n{logs(tmp_path)}"
    points = 12 if postgres else 1000
    ran = 0
    for task in range(TASKS):
        out = (tmp_path / f"logistic-{job}_{task}.out").read_text()
        assert f"task {task}: {points} records" in out, out
        summary = SUMMARY.search(out)
        assert summary, out
        total, distinct, cached, task_ran = (int(group) for group in summary.groups())
        assert total == distinct == points
        assert cached <= points
        ran += task_ran
    assert ran == points  # each point ran once across the four tasks
    assert len(rows(tmp_path / "slurm_out", db_url)) == points

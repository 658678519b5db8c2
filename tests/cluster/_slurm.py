"""Talking to the SLURM the tests run on: submit, poll with deadlines, cancel.

Everything goes through SLURM's own commands (sbatch, squeue, scontrol, scancel);
nothing is mocked. Every wait has a deadline, so a stuck job fails its test
instead of hanging CI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

#: Job states after which a job runs no more (until someone requeues it).
DONE = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "BOOT_FAIL",
        "DEADLINE",
        "PREEMPTED",
    }
)
#: How long a SLURM command may take before the test gives up on it.
COMMAND_TIMEOUT = 30.0


def slurm_problem() -> str:
    """Why the SLURM tests cannot run here, or "" when they can."""
    if os.environ.get("ENTROPIC_TEST_SLURM") != "1":
        return (
            "SLURM tests not enabled: set ENTROPIC_TEST_SLURM=1 where sbatch reaches a "
            "SLURM cluster the tests may use (bash .ci/run starts a one-node SLURM and does)"
        )
    missing = [
        cmd for cmd in ("sbatch", "squeue", "scontrol", "scancel", "sinfo") if not shutil.which(cmd)
    ]
    if missing:
        return f"SLURM commands not found: {', '.join(missing)}"
    try:
        result = subprocess.run(
            ["sinfo", "-h", "-o", "%T"],
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 30 s"
    states = result.stdout.split()
    if result.returncode != 0 or not states:
        return f"sinfo failed ({result.returncode}): {result.stderr.strip() or 'no nodes'}"
    if not any(state.rstrip("*~#").startswith(("idle", "mixed", "alloc")) for state in states):
        return f"no SLURM node is up (sinfo: {' '.join(states)})"
    return ""


def command(args: Sequence[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    """Run one SLURM command; its stdout, or an AssertionError with its stderr."""
    result = subprocess.run(
        list(args),
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, f"{' '.join(args)} failed: {result.stderr.strip()}"
    return result.stdout


def job_env(**extra: str) -> dict[str, str]:
    """This environment for a job (ENTROPIC_PURE_PYTHON included), this venv's python first."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(extra)
    return env


def python_cmd(script: Path, *args: str) -> str:
    """A shell command running ``script`` with this test's python (the venv's)."""
    import shlex

    return " ".join(shlex.quote(part) for part in (sys.executable, str(script), *args))


class Slurm:
    """Submits jobs for one test and cancels whatever is left of them at its end."""

    def __init__(self) -> None:
        self.jobs: list[str] = []
        #: Names of jobs submitted by others for this test (dask-jobqueue, a recipe's sbatch).
        self.names: list[str] = []

    def job_name(self, stem: str) -> str:
        """A job name unique to this test, whose jobs are cancelled at its end."""
        name = f"{stem}-{os.getpid()}-{len(self.names)}"
        self.names.append(name)
        return name

    def sbatch(
        self,
        args: Sequence[str],
        *,
        cwd: Path,
        env: dict[str, str] | None = None,
    ) -> str:
        """Submit a job (``args`` as sbatch takes them); its job id."""
        out = command(
            ["sbatch", "--parsable", "--export=ALL", *args], cwd=cwd, env=env or job_env()
        )
        job = out.strip().split(";")[0]
        assert job.isdigit(), out
        self.jobs.append(job)
        return job

    def states(self, job: str) -> dict[str, str]:
        """State of each task of ``job`` ("5" for a job, "5_0", "5_1"... for an array)."""
        out = command(["squeue", "-h", "-t", "all", "-j", job, "-o", "%i|%T"])
        states = {}
        for line in out.splitlines():
            task, _, state = line.strip().partition("|")
            if task:
                states[task] = state
        return states

    def wait(
        self,
        job: str,
        until: Callable[[dict[str, str]], bool],
        timeout: float,
        what: str,
    ) -> dict[str, str]:
        """Poll squeue until ``until(states)``; fail the test after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            states = self.states(job)
            if states and until(states):
                return states
            time.sleep(0.5)
        raise AssertionError(f"job {job}: not {what} after {timeout:.0f} s (states {states})")

    def wait_done(self, job: str, tasks: int = 1, timeout: float = 120.0) -> dict[str, str]:
        """Wait until all ``tasks`` tasks of ``job`` have ended; their final states."""

        def done(states: dict[str, str]) -> bool:
            return len(states) >= tasks and all(state in DONE for state in states.values())

        return self.wait(job, done, timeout, f"done ({tasks} task(s))")

    def wait_running(self, job: str, timeout: float = 60.0) -> None:
        self.wait(job, lambda s: "RUNNING" in s.values(), timeout, "running")

    def show(self, job: str) -> dict[str, str]:
        """``scontrol show job`` as a dict (first task of an array)."""
        out = command(["scontrol", "show", "job", "-o", job])
        fields = {}
        for word in out.splitlines()[0].split():
            key, _, value = word.partition("=")
            fields[key] = value
        return fields

    def cancel_all(self) -> None:
        if self.jobs:
            subprocess.run(
                ["scancel", *self.jobs], capture_output=True, timeout=COMMAND_TIMEOUT, check=False
            )
        for name in self.names:
            subprocess.run(
                ["scancel", f"--name={name}"],
                capture_output=True,
                timeout=COMMAND_TIMEOUT,
                check=False,
            )


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` every 0.1 s; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what}: not after {timeout:.0f} s")


def logs(folder: Path, pattern: str = "*.out") -> str:
    """The job output files in ``folder``, for an assertion message."""
    parts = []
    for path in sorted(folder.glob(pattern)):
        text = path.read_text(errors="replace")
        parts.append(f"--- {path.name}\n{text[-3000:]}")
    return "\n".join(parts) or f"(no {pattern} in {folder})"

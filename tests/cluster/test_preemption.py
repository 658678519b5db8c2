"""A sweep's job killed or requeued mid-sweep, then run again: nothing finished runs twice.

``scancel --batch --signal=KILL`` sends SIGKILL to the job's script and its
python (a plain ``scancel --signal=KILL`` is a cancel: SIGTERM first, SIGKILL
after KillWait). ``scontrol requeue`` is what preemption with PreemptMode=REQUEUE
does: the job gets SIGTERM (here turned into SystemExit, as docs/cluster.md
recommends) and is queued again under the same job id, with SLURM_RESTART_COUNT
one higher. Either way the next run of the sweep runs exactly
the points that had not finished (the one in flight among them) and returns
every record.
"""

from __future__ import annotations

from pathlib import Path

from ._checks import Call, calls, ends, reports, starts_per_id, stored
from ._slurm import DONE, Slurm, command, job_env, logs, python_cmd, wait_for

TASK = Path(__file__).with_name("_task.py")
POINTS = 120
SLEEP = 0.05  # 6 s of runs: the kill lands mid-sweep
KILL_AFTER = 40  # finished runs before the kill, past the first batch commits (every 2 s)


def submit(
    slurm: Slurm, db_url: str, tmp_path: Path, *extra: str, env: dict[str, str] | None = None
) -> str:
    results, out, call_log = tmp_path / "results", tmp_path / "out", tmp_path / "calls"
    out.mkdir(exist_ok=True)
    args = [db_url, str(results), str(call_log), str(out), str(POINTS), str(SLEEP)]
    return slurm.sbatch(
        [
            "--job-name=entropic-sweep",
            f"--output={out}/%j.out",
            "--open-mode=append",
            "--time=5",
            *extra,
            f"--wrap=exec {python_cmd(TASK, *args)}",
        ],
        cwd=tmp_path,
        env=env,
    )


def check_second_run(
    first: list[Call], second: list[Call], db_url: str, tmp_path: Path, job: str
) -> None:
    """The second run ran exactly what the first did not finish; the store holds every point."""
    finished = {call.id for call in first if call.event == "end"}
    in_flight = {call.id for call in first if call.event == "start"} - finished
    assert len(finished) >= KILL_AFTER
    assert len(in_flight) <= 1, in_flight
    starts = starts_per_id(second)
    assert set(starts.values()) <= {1}
    assert not finished & set(starts), "a point finished before the kill ran again"
    assert len(finished) + len(starts) == POINTS  # nothing lost: all the others ran
    assert in_flight <= set(starts)

    got = [report for report in reports(tmp_path / "out") if report["job"] == job]
    assert len(got) == 1, logs(tmp_path / "out")
    assert got[0]["complete"]
    assert got[0]["ns"] == got[0]["wanted"]
    rows = stored(db_url, tmp_path / "results")
    assert len(rows) == POINTS
    assert all(Path(row.result_file).read_text() == f"{row.id} n={row.n}" for row in rows)


def test_sigkilled_task_then_resubmitted(slurm: Slurm, shared_db_url: str, tmp_path: Path) -> None:
    call_log = tmp_path / "calls"
    first_job = submit(slurm, shared_db_url, tmp_path)
    wait_for(lambda: ends(call_log) >= KILL_AFTER, 90, f"{KILL_AFTER} runs finished")
    command(["scancel", "--batch", "--signal=KILL", first_job])
    states = slurm.wait_done(first_job, timeout=60)
    assert set(states.values()) <= DONE - {"COMPLETED"}, states
    assert not reports(tmp_path / "out"), "the killed sweep finished before the kill"

    second_job = submit(slurm, shared_db_url, tmp_path)
    states = slurm.wait_done(second_job, timeout=120)
    assert set(states.values()) == {"COMPLETED"}, f"{states}\n{logs(tmp_path / 'out')}"
    found = calls(call_log)
    first = [call for call in found if call.job == first_job]
    second = [call for call in found if call.job == second_job]
    assert len(first) + len(second) == len(found)
    check_second_run(first, second, shared_db_url, tmp_path, second_job)


def test_requeued_task_finishes_the_sweep(slurm: Slurm, shared_db_url: str, tmp_path: Path) -> None:
    call_log = tmp_path / "calls"
    # With docs/cluster.md's SIGTERM handler: the requeue's SIGTERM ends the sweep cleanly.
    job = submit(slurm, shared_db_url, tmp_path, "--requeue", env=job_env(TASK_SIGTERM="exit"))
    wait_for(lambda: ends(call_log) >= KILL_AFTER, 90, f"{KILL_AFTER} runs finished")
    command(["scontrol", "requeue", job])
    slurm.wait(job, lambda s: set(s.values()) == {"PENDING"}, 60, "pending again")
    # SLURM holds a requeued job for two minutes (its BeginTime); let it go in 3 s instead.
    # Not at once: slurmd refuses a launch in the same second as the kill (credential revoked).
    command(["scontrol", "update", f"JobId={job}", "StartTime=now+3"])
    states = slurm.wait_done(job, timeout=120)
    assert set(states.values()) == {"COMPLETED"}, f"{states}\n{logs(tmp_path / 'out')}"
    assert slurm.show(job)["Restarts"] == "1"

    found = calls(call_log)
    assert {call.job for call in found} == {job}
    first = [call for call in found if call.restart == 0]
    second = [call for call in found if call.restart == 1]
    assert len(first) + len(second) == len(found)
    check_second_run(first, second, shared_db_url, tmp_path, job)

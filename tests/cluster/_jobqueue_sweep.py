"""A sweep on a dask-jobqueue SLURMCluster of two jobs, as a user's script would run it.

    python _jobqueue_sweep.py DB_URL RESULTS CALLS OUT JOB_NAME LOGS

The model and the runner are defined here, in ``__main__``, as in a first
script on a laptop. The runner appends "{id} {SLURM_JOB_ID} {pid}" to CALLS, so
the test can tell where each run happened; OUT gets this process's pid, the
records' ids and the cluster's job ids.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from dask.distributed import Client
from dask_jobqueue import SLURMCluster

from entropic import Base, Mapped, Store

POINTS = 20


class Square(Base):
    __tablename__ = "jobqueue_square"
    n: Mapped[int]


def make_runner(calls: str) -> Any:
    def runner(params: dict[str, Any]) -> None:
        time.sleep(0.2)
        with open(params["result_file"], "w") as handle:
            handle.write(str(params["n"] ** 2))
        line = f"{params['id']} {os.environ.get('SLURM_JOB_ID', '-')} {os.getpid()}\n"
        fd = os.open(calls, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    return runner


def main(db_url: str, results: str, calls: str, out: str, job_name: str, logs: str) -> None:
    cluster = SLURMCluster(
        cores=1,
        processes=1,
        memory="1GB",
        walltime="00:10:00",
        job_name=job_name,
        interface="lo",  # one node here; on a real cluster, the network the nodes share
        python=sys.executable,
        job_extra_directives=["--export=ALL"],
        log_directory=logs,
        local_directory=logs,
    )
    cluster.scale(jobs=2)
    with cluster, Client(cluster) as client:
        client.wait_for_workers(2, timeout=120)
        jobs = sorted(str(job.job_id) for job in cluster.workers.values())
        with Store(make_runner(calls), Square, results, ".txt", db_url) as store:
            records = store.sweep([{"n": n} for n in range(POINTS)], client=client)
    report = {"pid": os.getpid(), "ids": [r.id for r in records], "jobs": jobs}
    Path(out).write_text(json.dumps(report))


if __name__ == "__main__":
    main(*sys.argv[1:])

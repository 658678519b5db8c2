"""Sweeps on a real Dask LocalCluster (worker processes) and on concurrent.futures executors."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from distributed import Client, LocalCluster

from entropic import (
    Base,
    DispatchError,
    Mapped,
    RemoteRunError,
    Store,
    SweepError,
    hash_params,
)


class OnDask(Base):
    __tablename__ = "sweep_dask"

    k: Mapped[int]


def _cluster() -> LocalCluster:
    return LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",
        silence_logs=logging.ERROR,
    )


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with _cluster() as local:
        yield local


@pytest.fixture
def client(cluster: LocalCluster) -> Iterator[Client]:
    with Client(cluster) as dask_client:
        yield dask_client


def _pids(path: Path) -> set[int]:
    return {int(line.split()[1]) for line in path.read_text().split("\n") if line}


class Writer:
    """Writes k, logs (id, pid) to a shared file, fails on ``bad``, exits on ``exit_on``."""

    def __init__(self, log: Path, bad: frozenset[int] = frozenset(), exit_on: int = -1) -> None:
        self.log = str(log)
        self.bad = bad
        self.exit_on = exit_on
        self.parent = os.getpid()

    def __call__(self, params: dict[str, Any]) -> None:
        with open(self.log, "a") as handle:
            handle.write(f"{params['id']} {os.getpid()}\n")
        if params["k"] in self.bad:
            raise ValueError(f"k={params['k']} is bad")
        if params["k"] == self.exit_on and os.getpid() != self.parent:
            os._exit(3)  # a worker dies; the calling process survives it
        params["custom_data"]["pid"] = os.getpid()
        Path(params["result_file"]).write_text(str(params["k"]))


def _calls(path: Path) -> list[str]:
    return [line.split()[0] for line in path.read_text().split("\n") if line]


def _pts(n: int) -> list[dict[str, Any]]:
    return [{"k": k} for k in range(n)]


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store.sqlite3'}"


def test_points_run_on_the_workers_and_come_back_in_order(
    client: Client, tmp_path: Path, db: str
) -> None:
    log = tmp_path / "calls"
    with Store(Writer(log), OnDask, results_dir=tmp_path / "r", db_url=db) as store:
        records = store.sweep(_pts(30), client=client)
        assert [r.k for r in records] == list(range(30))
        assert [r.id for r in records] == [hash_params(p) for p in _pts(30)]
        assert os.getpid() not in {r.custom_data["pid"] for r in records}
        assert sorted(_calls(log)) == sorted(r.id for r in records)
        for record in records:
            assert Path(record.result_file).read_text() == str(record.k)
        # Persisted, and the workers' sidecars cleared.
        assert store.sweep(_pts(30), client=client)[5].id == records[5].id
        assert len(_calls(log)) == 30
        assert list((store.results_dir / ".entropic" / "sidecars").iterdir()) == []


def test_runner_exceptions_on_workers_are_collected(
    client: Client, tmp_path: Path, db: str
) -> None:
    log = tmp_path / "calls"
    with Store(
        Writer(log, frozenset({3, 7})), OnDask, results_dir=tmp_path / "r", db_url=db
    ) as store:
        with pytest.raises(SweepError) as info:
            store.sweep(_pts(10), client=client)
        assert sorted(p["k"] for p, _ in info.value.failures) == [3, 7]
        assert all(isinstance(exc, ValueError) for _, exc in info.value.failures)
        assert [r.k for r in info.value.records] == [0, 1, 2, 4, 5, 6, 8, 9]
        failures = store.failures()
        assert {f.params["k"] for f in failures} == {3, 7}
        assert all(f.pid != os.getpid() for f in failures)
        assert all("is bad" in f.traceback for f in failures)
        assert len(_calls(log)) == 10  # a runner exception is not a cluster failure


class Unpicklable(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


def _raise_unpicklable(params: dict[str, Any]) -> None:
    raise Unpicklable(f"k={params['k']} holds a lock")


def test_an_exception_that_cannot_travel_comes_back_as_text(
    client: Client, tmp_path: Path, db: str
) -> None:
    store = Store(_raise_unpicklable, OnDask, results_dir=tmp_path / "r", db_url=db)
    with store, pytest.raises(SweepError) as info:
        store.sweep(_pts(2), client=client)
    excs = [exc for _, exc in info.value.failures]
    assert all(isinstance(exc, RemoteRunError) for exc in excs)
    assert all("holds a lock" in str(exc) for exc in excs)


def test_a_closed_client_falls_back_to_serial(
    cluster: LocalCluster, tmp_path: Path, db: str, caplog: pytest.LogCaptureFixture
) -> None:
    log = tmp_path / "calls"
    dead = Client(cluster)
    dead.close()
    with Store(Writer(log), OnDask, results_dir=tmp_path / "r", db_url=db) as store:
        records = store.sweep(_pts(5), client=dead)
    assert [r.k for r in records] == list(range(5))
    assert _pids(log) == {os.getpid()}
    assert any("client failed" in r.getMessage() for r in caplog.records)


def test_a_runner_that_cannot_be_serialised_falls_back_to_serial(
    client: Client, tmp_path: Path, db: str
) -> None:
    log = tmp_path / "calls"
    lock = threading.Lock()

    def runner(params: dict[str, Any]) -> None:
        with lock:  # a closure over a lock: neither pickle nor cloudpickle can send it
            Writer(log)(params)

    with Store(runner, OnDask, results_dir=tmp_path / "r", db_url=db) as store:
        records = store.sweep(_pts(6), client=client)
    assert [r.k for r in records] == list(range(6))
    assert sorted(_calls(log)) == sorted(r.id for r in records)
    assert _pids(log) == {os.getpid()}


def test_dying_workers_fall_back_to_serial_and_keep_finished_points(
    tmp_path: Path, db: str
) -> None:
    log = tmp_path / "calls"
    store = Store(Writer(log, exit_on=4), OnDask, results_dir=tmp_path / "r", db_url=db)
    with _cluster() as cluster, Client(cluster) as client, store:
        records = store.sweep(_pts(12), client=client)
    assert [r.k for r in records] == list(range(12))
    calls = _calls(log)
    point4 = hash_params({"k": 4})
    # Every other point ran exactly once: finished on a worker or run here afterwards.
    assert sorted(c for c in calls if c != point4) == sorted(r.id for r in records if r.k != 4)
    assert records[4].custom_data["pid"] == os.getpid()


@pytest.mark.parametrize("kind", ["threads", "processes"])
def test_a_concurrent_futures_executor_works_too(kind: str, tmp_path: Path, db: str) -> None:
    log = tmp_path / "calls"
    pool = ThreadPoolExecutor(2) if kind == "threads" else ProcessPoolExecutor(2)
    with (
        pool,
        Store(Writer(log, frozenset({2})), OnDask, results_dir=tmp_path / "r", db_url=db) as store,
    ):
        with pytest.raises(SweepError) as info:
            store.sweep(_pts(8), client=pool)
        assert [r.k for r in info.value.records] == [0, 1, 3, 4, 5, 6, 7]
        assert len(_calls(log)) == 8
        if kind == "processes":
            assert os.getpid() not in _pids(log)


def test_a_client_of_the_wrong_kind_fails_before_any_work(tmp_path: Path, db: str) -> None:
    log = tmp_path / "calls"
    store = Store(Writer(log), OnDask, results_dir=tmp_path / "r", db_url=db)
    expected = r"distributed\.Client or a concurrent\.futures\.Executor"
    with store, pytest.raises(TypeError, match=expected):
        store.sweep(_pts(3), client="tcp://127.0.0.1:8786")  # type: ignore[arg-type]
    assert not log.exists()


# -- a script that defines its model and runner itself -------------------------------------

SCRIPT = """
import json, os, sys
from pathlib import Path

from distributed import Client, LocalCluster

from entropic import Base, Mapped, Store


class Scripted(Base):
    __tablename__ = "scripted"

    a: Mapped[int]


def runner(params):
    Path(params["result_file"]).write_text(str(params["a"]))
    params["custom_data"]["pid"] = os.getpid()


if __name__ == "__main__":
    results, db_url = sys.argv[1], sys.argv[2]
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as cluster, Client(cluster) as client:
        with Store(runner, Scripted, results_dir=results, db_url=db_url) as store:
            records = store.sweep([{"a": a} for a in range(12)], client=client, fallback=False)
            workers = set(client.run(os.getpid).values())
    print(json.dumps({
        "me": os.getpid(),
        "workers": sorted(workers),
        "ran_in": sorted({r.custom_data["pid"] for r in records}),
        "a": [r.a for r in records],
    }))
"""


def test_a_script_with_its_model_and_runner_in_main_runs_on_worker_processes(
    tmp_path: Path, db: str
) -> None:
    script = tmp_path / "my_sweep.py"
    script.write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "r"), db],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "client failed" not in done.stderr
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["a"] == list(range(12))
    assert got["me"] not in got["ran_in"]
    assert set(got["ran_in"]) <= set(got["workers"])


# -- a failing client: one short warning, counted; or an error ---------------------------


def test_a_fallback_is_one_short_warning_counted_in_the_summary_and_the_bar(
    cluster: LocalCluster,
    tmp_path: Path,
    db: str,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    dead = Client(cluster)
    dead.close()
    caplog.set_level(logging.INFO, logger="entropic")
    with Store(Writer(tmp_path / "calls"), OnDask, results_dir=tmp_path / "r", db_url=db) as s:
        records = s.sweep(_pts(5), client=dead, progress=True)
    assert [r.k for r in records] == list(range(5))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    (warning,) = warnings
    assert "\n" not in warning
    assert len(warning) < 300, warning
    assert "5 unfinished point(s)" in warning
    assert "fallback=False" in warning  # how to make it an error
    summary = [r.getMessage() for r in caplog.records if r.getMessage().startswith("sweep of")]
    assert summary
    assert "5 run here after the client failed" in summary[-1]
    assert "here_after_client_failed=5" in capsys.readouterr().err


def test_fallback_false_raises_instead_of_running_here(
    cluster: LocalCluster, tmp_path: Path, db: str
) -> None:
    log = tmp_path / "calls"
    dead = Client(cluster)
    dead.close()
    with Store(Writer(log), OnDask, results_dir=tmp_path / "r", db_url=db) as store:
        with pytest.raises(DispatchError, match=r"5 point.*did not run.*fallback=True") as caught:
            store.sweep(_pts(5), client=dead, fallback=False)
        assert caught.value.unfinished == 5
        assert not log.exists()  # nothing ran in this process
        # The claims are released: a retry with a working executor runs everything.
        with ThreadPoolExecutor(2) as pool:
            assert [r.k for r in store.sweep(_pts(5), client=pool)] == list(range(5))

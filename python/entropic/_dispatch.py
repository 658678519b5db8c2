"""Running a sweep's points on a Dask client or a ``concurrent.futures`` executor.

Each point travels with the Store's configuration (a Store pickles as its
configuration; engines and sessions never travel). The worker runs the runner
into results_dir, writes the run's sidecar there and sends back the row, or the
failure (exception when it pickles, its type, message and formatted traceback).
The calling process persists what comes back in batches. If the client or the
cluster fails, what has not come back is handed back to run serially here,
except runs whose sidecar shows they finished on a worker: those are kept.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import time
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from entropic._claims import HOST

if TYPE_CHECKING:
    from entropic.store import Point, Store
    from entropic.sweep import _Run

__all__ = ["check_client", "dispatch"]

log = logging.getLogger("entropic")


def _is_dask(client: object) -> bool:
    module = type(client).__module__
    return (module == "distributed" or module.startswith("distributed.")) and all(
        hasattr(client, name) for name in ("map", "submit")
    )


def check_client(client: object) -> None:
    """Refuse, before any work, a ``client`` that is neither a Dask client nor an executor."""
    from concurrent.futures import Executor

    if _is_dask(client) or isinstance(client, Executor):
        return
    raise TypeError(
        f"client must be a dask distributed.Client or a concurrent.futures.Executor, not "
        f"{type(client).__name__}; pass client=None to run the points in this process"
    )


@dataclass
class Outcome:
    """What a worker sends back for one point."""

    id: str
    row: dict[str, Any] | None
    error: BaseException | None = None
    exc_type: str = ""
    message: str = ""
    traceback: str = ""
    elapsed: float = 0.0
    host: str = ""
    pid: int = 0


class Task:
    """The function the workers call: run one point and journal it to its sidecar."""

    def __init__(self, store: Store[Any]) -> None:
        self.store = store

    def __call__(self, point: Point) -> Outcome:
        store = self.store
        store._worker_schema()
        finished = _finished_row(store, point)
        if finished is not None:
            # Dask runs a task again when the worker holding its result dies; the
            # sidecar shows the run finished, so it is not run twice.
            return Outcome(point.id, finished)
        start = time.perf_counter()
        try:
            row = store._run_point(point, had_row=False)
        except Exception as exc:
            elapsed = time.perf_counter() - start
            try:
                pickle.dumps(exc)
                error: BaseException | None = exc
            except Exception:
                error = None  # rebuilt from its text by the caller
            return Outcome(
                point.id,
                None,
                error,
                type(exc).__qualname__,
                str(exc),
                traceback.format_exc(),
                elapsed,
                HOST,
                os.getpid(),
            )
        return Outcome(point.id, row)


class RemoteRunError(RuntimeError):
    """Stands in for a worker's exception that could not be sent back."""


def dispatch(client: Any, run: _Run, points: list[Point]) -> list[Point]:
    """Run ``points`` on ``client``, handing each outcome to ``run``; return the unfinished."""
    if not points:
        return []
    by_id = {point.id: point for point in points}
    done: set[str] = set()
    task = Task(run.store)
    futures: list[Any] = []
    try:
        if _is_dask(client):
            from distributed import as_completed

            futures = client.map(task, points, pure=False)
            completed: Any = as_completed(futures)  # type: ignore[no-untyped-call]
        else:
            from concurrent.futures import as_completed as cf_as_completed

            futures = [client.submit(task, point) for point in points]
            completed = cf_as_completed(futures)
        for future in completed:
            outcome = future.result()
            # Let go of the result, or Dask recomputes it if its worker dies later.
            if hasattr(future, "release"):
                future.release()
            point = by_id[outcome.id]
            done.add(outcome.id)
            if outcome.row is not None:
                run.finished(outcome.row, sidecar=True)
            else:
                error = outcome.error or RemoteRunError(
                    f"{outcome.exc_type}: {outcome.message} (the exception could not be "
                    "sent back from the worker; its traceback is in Store.failures())"
                )
                run.failed(
                    point, error, outcome.traceback, outcome.elapsed, outcome.host, outcome.pid
                )
    except Exception as exc:
        _cancel(futures)
        left = [point for point in points if point.id not in done]
        log.warning(
            "entropic: the client failed (%s: %s); %d point(s) finished on it are kept, "
            "the %d unfinished point(s) run serially in this process",
            type(exc).__name__,
            exc,
            len(done),
            len(left),
        )
        return _keep_finished(run, left)
    except BaseException:
        _cancel(futures)
        raise
    return []


def _cancel(futures: list[Any]) -> None:
    for future in futures:
        # A client that is gone cannot cancel; there is nothing more to do then.
        with contextlib.suppress(Exception):
            future.cancel()


def _finished_row(store: Store[Any], point: Point) -> dict[str, Any] | None:
    """The row a sidecar holds for ``point`` if a run of it finished, else None."""
    try:
        row = store._disk.read_sidecar(point.id)
    except (OSError, ValueError, KeyError):
        return None
    if row.get("id") != point.id or not os.path.isfile(row.get("result_file", "")):
        return None
    return store._schema.stored_row(row)


def _keep_finished(run: _Run, points: list[Point]) -> list[Point]:
    """Take the runs a worker finished (its sidecar is there) without running them again."""
    left = []
    for point in points:
        row = _finished_row(run.store, point)
        if row is None:
            left.append(point)
        else:
            run.finished(row, sidecar=True)
    return left

"""Running a sweep's points on a Dask client or a ``concurrent.futures`` executor.

Each task carries a ``PointRunner`` (the runner, the disk layout, a plain
description of the columns) and one point: never the model class, an engine or
a session, so scripts that define their model and runner in ``__main__`` run on
any cluster. The worker runs the point into results_dir, writes its sidecar there
and sends back the row, or the failure (the exception when it pickles; its type,
message and formatted traceback always). The calling process persists what comes
back in batches. If the client fails, what has not come back is handed back to
run serially here (or, without fallback, the sweep stops), except runs whose
sidecar shows they finished on a worker: those are kept.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import time
import traceback
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Protocol

from entropic._storage.owner import HOST
from entropic._storage.runner import PointRunner
from entropic._storage.schema import Point
from entropic.errors import DispatchError, RemoteRunError

__all__ = ["Outcome", "Sink", "Task", "check_client", "dispatch", "is_dask"]

log = logging.getLogger("entropic")

#: Points submitted, and later gathered, together in one request to a Dask client.
GATHER_CHUNK = 256
#: Points submitted to a Dask client and not gathered yet, at most.
IN_FLIGHT = 64 * GATHER_CHUNK


def is_dask(client: object) -> bool:
    """Whether ``client`` is a Dask ``distributed.Client`` (without importing distributed)."""
    module = type(client).__module__
    return (module == "distributed" or module.startswith("distributed.")) and all(
        hasattr(client, name) for name in ("map", "submit")
    )


def check_client(client: object) -> None:
    """Refuse, before any work, a ``client`` that is neither a Dask client nor an executor."""
    if is_dask(client) or isinstance(client, Executor):
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
    """The function the workers call: run one point and keep its row in its sidecar."""

    def __init__(self, runner: PointRunner) -> None:
        self.runner = runner

    def __call__(self, point: Point) -> Outcome:
        runner = self.runner
        finished = runner.finished_row(point.id)
        if finished is not None:
            # Dask runs a task again when the worker holding its result dies; the
            # sidecar shows the run finished, so it is not run twice.
            return Outcome(point.id, finished, host=HOST, pid=os.getpid())
        start = time.perf_counter()
        try:
            row = runner.run(point, had_row=False)
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
        return Outcome(point.id, row, host=HOST, pid=os.getpid())


class Sink(Protocol):
    """Where outcomes go: the sweep that dispatched the points."""

    def finished(self, point: Point, row: dict[str, Any], *, sidecar: bool = False) -> None: ...

    def failed(
        self,
        point: Point,
        exc: BaseException,
        formatted: str,
        elapsed: float,
        host: str = ...,
        pid: int | None = ...,
    ) -> None: ...


def dispatch(
    client: Any, runner: PointRunner, sink: Sink, points: list[Point], *, fallback: bool = True
) -> list[Point]:
    """Run ``points`` on ``client``, handing each outcome to ``sink``; return the unfinished.

    If the client fails, the unfinished points are returned to run here, or, with
    ``fallback=False``, ``DispatchError`` is raised (after the finished ones were handed on).
    """
    if not points:
        return []
    by_id = {point.id: point for point in points}
    done: set[str] = set()
    futures: list[Any] = []
    try:
        for outcome in _outcomes(client, Task(runner), points, futures):
            point = by_id[outcome.id]
            done.add(outcome.id)
            if outcome.row is not None:
                sink.finished(point, outcome.row, sidecar=True)
            else:
                error = outcome.error or RemoteRunError(
                    f"{outcome.exc_type}: {outcome.message} (the exception could not be "
                    "sent back from the worker; its traceback is in Store.failures())"
                )
                sink.failed(
                    point, error, outcome.traceback, outcome.elapsed, outcome.host, outcome.pid
                )
    except Exception as exc:
        _cancel(futures)
        left = [point for point in points if point.id not in done]
        left = _keep_finished(runner, sink, left)
        why = _short(exc)
        if not fallback:
            raise DispatchError(
                f"the client failed ({why}); {len(left)} point(s) did not run (runs that "
                "finished are kept); fix the client, or pass fallback=True to run them in "
                "this process",
                len(left),
            ) from exc
        log.warning(
            "the client failed (%s); running %d unfinished point(s) in this process "
            "instead (sweep(..., fallback=False) makes this an error)",
            why,
            len(left),
        )
        return left
    except BaseException:
        _cancel(futures)
        raise
    return []


def _outcomes(
    client: Any, task: Task, points: list[Point], futures: list[Any]
) -> Iterator[Outcome]:
    """The outcomes of ``points`` as they complete; ``futures`` collects what was submitted."""
    if is_dask(client):
        # Results come back a chunk at a time, in submission order, with one gather
        # request per chunk (what a plain client.map + gather costs), while the next
        # chunks run; at most IN_FLIGHT points are submitted and not yet gathered.
        # A run whose chunk is still waiting on a slower point is safe meanwhile:
        # its sidecar is on disk.
        pending: deque[list[Any]] = deque()
        submitted = 0
        while submitted < len(points) or pending:
            while submitted < len(points) and len(pending) * GATHER_CHUNK < IN_FLIGHT:
                chunk = client.map(task, points[submitted : submitted + GATHER_CHUNK], pure=False)
                futures.extend(chunk)
                pending.append(chunk)
                submitted += len(chunk)
            chunk = pending.popleft()
            outcomes = client.gather(chunk)
            for future in chunk:
                # Let go of the result, or Dask recomputes it if its worker dies later.
                future.release()
            yield from outcomes
        return
    from concurrent.futures import as_completed as cf_as_completed

    futures.extend(client.submit(task, point) for point in points)
    for future in cf_as_completed(futures):
        yield future.result()


def _short(exc: BaseException) -> str:
    """``Type: first line of the message``, at most 200 characters."""
    text = str(exc).strip().splitlines()
    line = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
    return line if len(line) <= 200 else line[:199] + "…"


def _cancel(futures: list[Any]) -> None:
    for future in futures:
        # A client that is gone cannot cancel; there is nothing more to do then.
        with contextlib.suppress(Exception):
            future.cancel()


def _keep_finished(runner: PointRunner, sink: Sink, points: list[Point]) -> list[Point]:
    """Take the runs a worker finished (its sidecar is there) without running them again."""
    left = []
    for point in points:
        row = runner.finished_row(point.id)
        if row is None:
            left.append(point)
        else:
            sink.finished(point, row, sidecar=True)
    return left

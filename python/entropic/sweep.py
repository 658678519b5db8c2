"""Sweeps: run or retrieve many parameter sets through one store.

A sweep goes in two phases. First the input is read once, in chunks: every
point is validated and hashed (``hash_many``), duplicates are dropped, and the
cached ids are looked up (``StoreCore.lookup``), so nothing runs if any point is
bad. Then the missing points run, serially here or on a client
(``entropic._storage.dispatch``), and are persisted in batches: one transaction
per batch, at least every ``BATCH_RUNS`` runs or ``BATCH_SECONDS`` seconds.
Until its batch commits, a finished run is covered by the journal or its
sidecar, so a kill loses nothing. Processes sharing the store coordinate
through claims (``entropic._storage.claims``). docs/sweeps.md tells the whole story.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import os
import sys
import time
import traceback
from collections.abc import Iterable, Iterator, Mapping, Sequence, Sized
from contextlib import contextmanager
from itertools import islice
from typing import TYPE_CHECKING, Any, NamedTuple

from entropic import hashing
from entropic._storage.claims import Claims
from entropic._storage.codec import encode_line
from entropic._storage.core import StoreCore, refused_message
from entropic._storage.dispatch import check_client, dispatch
from entropic._storage.index import ChangeMark
from entropic._storage.journal import Journal
from entropic._storage.owner import HOST
from entropic._storage.schema import Point
from entropic.errors import SweepError
from entropic.models import utcnow

if TYPE_CHECKING:
    from tqdm import tqdm

__all__ = [
    "BATCH_RUNS",
    "BATCH_SECONDS",
    "CLAIM_RUNS",
    "CLAIM_SECONDS",
    "FIRST_CLAIM_RUNS",
    "INPUT_CHUNK",
    "assign_ids",
    "isweep",
    "sweep",
]

log = logging.getLogger("entropic")

#: Points validated and hashed together (one ``hash_many`` call each).
INPUT_CHUNK = 10_000
#: The most points claimed together, just before this process runs them. A sweep's
#: first claim takes FIRST_CLAIM_RUNS; each next one up to four times the last, as
#: many as run in about CLAIM_SECONDS at the pace of the points run so far. So fast
#: points are claimed in few transactions, and slow ones a few at a time, which
#: leaves the rest to the other processes sweeping the same points.
CLAIM_RUNS = 1024
FIRST_CLAIM_RUNS = 16
CLAIM_SECONDS = 1.0
#: A batch is committed after this many finished runs (ten of the largest claims)...
#:
#: Large, because a batch's rows land all over the id index and each commit writes
#: every index page it changed: fewer, larger commits write each page fewer times.
#: A streamed sweep also commits at the end of each input chunk.
BATCH_RUNS = 10 * CLAIM_RUNS
#: ...or this many seconds after the previous commit, whichever comes first.
BATCH_SECONDS = 2.0
#: How often the progress bar prints a line when stderr is not a terminal.
BAR_LOG_SECONDS = 30.0
#: How often a sweep waiting on points other processes run says so in the log.
WAIT_LOG_SECONDS = 30.0


def sweep(
    core: StoreCore,
    params: Iterable[dict[str, Any]],
    client: Any = None,
    *,
    progress: bool = False,
    fallback: bool = True,
) -> list[Any]:
    """Run or retrieve every point of ``params``; one record per distinct id, in input order."""
    start = time.perf_counter()
    _refuse_one_dict(params)
    if client is not None:
        check_client(client)
    seen: set[str] = set()
    order: list[str] = []
    todo: dict[str, Point] = {}
    total = 0
    mark = core.index.change_mark()  # before any lookup: see _Run._drop_done
    # The points of an input with a length (a list, say) are held by the caller: they
    # are looked up all at once, which can take one read of the whole table. Others
    # are looked up a chunk at a time, so nothing of the input is kept; so are the
    # chunks holding points validated in full (their Points take more memory).
    held = isinstance(params, Sized)
    records: dict[str, Any] = {}
    missing = 0
    with _gc_paused():
        planned: list[_Chunk] = []
        for chunk in _chunks(iter(params), INPUT_CHUNK):
            total += len(chunk)
            planned.append(_hash_chunk(core, chunk, seen))
            order.extend(planned[-1].fresh)
            if not held or planned[-1].prepared:
                missing += _look_up(core, planned, todo, records)
                planned = []
        missing += _look_up(core, planned, todo, records)
        del planned
    _say_lost(missing)
    cached = len(records)
    run = _Run(core, records, progress=progress, total=len(order))
    run.mark = mark
    try:
        if todo:
            run.execute(todo, client, fallback=fallback)
    except BaseException:
        run.finish(quietly=True)
        raise
    run.finish()
    _log_summary(run, total, len(order), start)
    if run.failures:
        kept = [records[run_id] for run_id in order if run_id in records]
        raise SweepError(_failure_message(run, len(order), cached), run.failures, kept)
    return [records[run_id] for run_id in order]


def isweep(
    core: StoreCore,
    params: Iterable[dict[str, Any]],
    client: Any = None,
    *,
    progress: bool = False,
    fallback: bool = True,
) -> Iterator[Any]:
    """``sweep`` as a stream: the records in input order, ``INPUT_CHUNK`` points at a time.

    Each chunk is validated, looked up, run and persisted before its records are
    yielded, so memory is bounded by a chunk (and the set of ids seen, for
    de-duplication), not by the sweep. A point that fails yields nothing; once the
    input is done, ``SweepError`` reports every failure (its ``records`` is empty:
    the others were yielded).
    """
    _refuse_one_dict(params)  # here, not at the first next(): the call itself is wrong
    if client is not None:
        check_client(client)
    return _stream(core, params, client, progress=progress, fallback=fallback)


def _stream(
    core: StoreCore,
    params: Iterable[dict[str, Any]],
    client: Any,
    *,
    progress: bool,
    fallback: bool,
) -> Iterator[Any]:
    start = time.perf_counter()
    size = len(params) if isinstance(params, Sized) else None
    seen: set[str] = set()
    total = distinct = 0
    run = _Run(core, {}, progress=progress, total=size)
    try:
        for chunk in _chunks(iter(params), INPUT_CHUNK):
            total += len(chunk)
            run.mark = core.index.change_mark()  # before the chunk's lookups
            todo: dict[str, Point] = {}
            found: dict[str, Any] = {}
            with _gc_paused():
                planned = _hash_chunk(core, chunk, seen)
                lost = _look_up(core, [planned], todo, found)
            fresh = planned.fresh
            _say_lost(lost)
            distinct += len(fresh)
            run.records = found
            run.add_cached(len(found), len(chunk) - len(fresh))
            if todo:
                run.execute(todo, client, fallback=fallback)
            run.flush()
            records = run.records
            run.records = {}
            for run_id in fresh:
                record = records.get(run_id)
                if record is not None:
                    yield record
    except BaseException:  # GeneratorExit too: a caller that stops early
        run.finish(quietly=True)
        raise
    run.finish()
    _log_summary(run, total, distinct, start)
    if run.failures:
        message = _failure_message(run, distinct, run.cached, streamed=True)
        raise SweepError(message, run.failures, [])


def _refuse_one_dict(params: object) -> None:
    if isinstance(params, Mapping):
        raise TypeError(
            "sweep takes an iterable of params dicts, not one dict; wrap it in a list "
            "or use run_or_retrieve"
        )


class _Chunk(NamedTuple):
    """One input chunk, hashed: its ids not seen before and what makes their points."""

    points: list[dict[str, Any]]  # the chunk as given
    fresh: list[str]  # the ids not seen before, in input order
    at: Sequence[int]  # where in the chunk each of them first came
    prepared: dict[int, Point]  # the points validated in full, by position


def _hash_chunk(core: StoreCore, chunk: list[dict[str, Any]], seen: set[str]) -> _Chunk:
    """Validate and hash one chunk of the input (all of it, before anything of it runs).

    Points of plain values are checked and hashed by ``Schema.plain_ids`` in one
    call; the others are validated in full by ``prepare`` (the first bad point
    raises here). Ids in ``seen`` are dropped and the others added to it.
    """
    schema = core.schema
    prepare = schema.prepare
    plain = schema.plain_ids(chunk)
    prepared = {i: prepare(chunk[i], {}) for i, run_id in enumerate(plain) if run_id is None}
    assign_ids(list(prepared.values()))
    ids = [run_id or prepared[i].id for i, run_id in enumerate(plain)]
    fresh: list[str] = []
    at: list[int] = []
    for i, run_id in enumerate(ids):
        if run_id not in seen:
            seen.add(run_id)
            fresh.append(run_id)
            at.append(i)
    # Without duplicates, where each came is its place: held as a range, not a list.
    return _Chunk(chunk, fresh, range(len(chunk)) if len(at) == len(chunk) else at, prepared)


def _look_up(
    core: StoreCore, chunks: list[_Chunk], todo: dict[str, Point], records: dict[str, Any]
) -> int:
    """Look the new ids of ``chunks`` up together: the cached records go to ``records``,
    the points to run to ``todo``. Returns the count of indexed points whose files are lost.

    Only the points that will run need a ``Point``; a plain one's is made without
    checking again (``Schema.plain_point``).
    """
    if not chunks:
        return 0
    # Straight into records: the new ids are none of those it holds.
    found, lost = core.lookup([run_id for chunk in chunks for run_id in chunk.fresh], records)
    plain_point = core.schema.plain_point
    for chunk in chunks:
        points, prepared = chunk.points, chunk.prepared
        for i, run_id in zip(chunk.at, chunk.fresh, strict=True):
            if run_id not in found:
                point = prepared.get(i)
                if point is None:
                    point = plain_point(points[i], run_id)
                else:
                    point.id = run_id
                todo[run_id] = point
    return lost


def _say_lost(missing: int) -> None:
    if missing:
        log.warning("%d indexed points had lost their files; running them again", missing)


def _log_summary(run: _Run, total: int, distinct: int, start: float) -> None:
    log.info(
        "sweep of %d points (%d distinct): %d cached, %d ran, %d failed, "
        "%d run by other processes%s, in %.3f s",
        total,
        distinct,
        run.cached,
        run.ran,
        len(run.failures),
        run.by_peers,
        f", {run.fell_back} run here after the client failed" if run.fell_back else "",
        time.perf_counter() - start,
    )


def _chunks(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    while chunk := list(islice(items, size)):
        yield chunk


def assign_ids(points: list[Point]) -> None:
    """Give each point without an explicit id the hash of its params, in one ``hash_many`` call."""
    todo = [point for point in points if not point.id]
    for point, run_id in zip(todo, hashing.hash_many([point.key for point in todo]), strict=True):
        point.id = run_id


class _Run:
    """The running phase of one sweep: claims, the run loop, batches, failures, progress."""

    def __init__(
        self,
        core: StoreCore,
        records: dict[str, Any],
        *,
        progress: bool,
        total: int | None,
    ) -> None:
        self.core = core
        self.todo: dict[str, Point] = {}
        self.records = records
        self.cached = len(records)
        self.claims = Claims(core.index, one_thread=True)
        #: How the database stood before the lookups that made ``todo`` (None: unknown).
        self.mark: ChangeMark | None = None
        self.journal = Journal(core.disk, self.claims.owner)
        self.failures: list[tuple[dict[str, Any], BaseException]] = []
        self.first_traceback = ""
        self.ran = 0
        self.by_peers = 0
        self.fell_back = 0  # points run here because the client failed
        self.waiting = 0
        self.rows: list[dict[str, Any]] = []
        self.row_points: dict[str, Point] = {}  # the points of ``rows``
        self.failure_rows: list[dict[str, Any]] = []
        self.release: list[str] = []
        self.sidecars: list[str] = []  # per-run sidecars written by workers
        self.last_flush = time.monotonic()
        #: How many points the next claim takes (see CLAIM_RUNS).
        self.claim_size = FIRST_CLAIM_RUNS
        self.bar: tqdm[Any] | None = None
        self.live_bar = False
        if progress:
            from tqdm import tqdm

            # On a terminal the bar redraws in place. Into a file or a pipe (a batch
            # job's log) every redraw would be another line: there it shows the start,
            # a line every BAR_LOG_SECONDS, and the final counts once.
            self.live_bar = sys.stderr.isatty()
            self.bar = tqdm(
                total=total,
                initial=self.cached,
                desc="entropic sweep",
                unit="pt",
                smoothing=0.1,
                mininterval=0.1 if self.live_bar else BAR_LOG_SECONDS,
            )
            self._postfix()

    # -- the loop --------------------------------------------------------------------------

    def add_cached(self, cached: int, duplicates: int) -> None:
        """Count the cached points (and input duplicates) of the next chunk of a stream."""
        self.cached += cached
        if self.bar is not None and cached + duplicates:
            self._postfix(refresh=False)
            self.bar.update(cached + duplicates)

    def execute(self, todo: dict[str, Point], client: Any, *, fallback: bool) -> None:
        """Run every point of ``todo`` once across all processes sharing the store."""
        self.todo = todo
        self.claims.start_heartbeat()
        ids = list(self.todo)
        waiting: list[str] = []
        if client is None:
            for won in self._claim_in_turn(ids, waiting):
                for run_id in won:
                    self.run_here(self.todo.pop(run_id))
        else:
            points = [
                self.todo.pop(run_id) for won in self._claim_in_turn(ids, waiting) for run_id in won
            ]
            unfinished = dispatch(client, self.core.point_runner, self, points, fallback=fallback)
            self.fell_back += len(unfinished)
            self._postfix()
            for point in unfinished:
                self.run_here(point)
        self._wait_for_peers(waiting)

    def _claim_in_turn(self, ids: list[str], waiting: list[str]) -> Iterator[list[str]]:
        """Claim ``ids`` a round at a time, each when the caller asks for it: yields the
        won ids that still need a run; ids live peers hold are added to ``waiting``."""
        i = 0
        while i < len(ids):
            began = time.monotonic()
            round_ids = ids[i : i + self._claim_round()]
            i += len(round_ids)
            won, busy = self.claims.claim(round_ids, since=self.mark)
            waiting.extend(busy)
            yield self._drop_done(won, unchanged=self.claims.unchanged)
            # The caller ran the round's points: the pace of the next claim.
            self._paced(len(round_ids), time.monotonic() - began)

    def _claim_round(self) -> int:
        """The size of the next claim: ``claim_size``, cut so that the batch ends with a
        claim (its commit then drops this sweep's claims in one statement)."""
        pending = len(self.rows) + len(self.failure_rows)
        return max(1, min(self.claim_size, BATCH_RUNS - pending))

    def _paced(self, count: int, seconds: float) -> None:
        """Size the next claim after one of ``count`` points took ``seconds``."""
        pace = count / seconds if seconds > 0 else math.inf
        fits = CLAIM_SECONDS * pace
        self.claim_size = int(max(1, min(4 * self.claim_size, CLAIM_RUNS, fits)))

    def _drop_done(self, won: list[str], *, unchanged: bool = False) -> list[str]:
        """Won ids that still need a run; those a peer persisted meanwhile become records.

        ``unchanged``: the claim found nothing but this sweep's own writes committed
        since the lookups that put ``won`` in ``todo`` (``Index.unchanged_since``), so
        no peer can have stored any of them, and they need no look again.
        """
        if not self.claims.enabled or not won:
            return won
        if self.claims.taken_from:
            # Runs the gone owners finished but never committed are in their journals.
            gone = self.claims.taken_from
            self.claims.taken_from = set()
            self.core.recovery.ingest_journals_of(gone)
        elif unchanged:
            return won
        done, _ = self.core.lookup(won)
        if not done:
            return won
        self.records.update(done)
        self.by_peers += len(done)
        self.release.extend(done)
        self._advance(len(done))
        return [run_id for run_id in won if run_id not in done]

    def _wait_for_peers(self, waiting: list[str]) -> None:
        """Points live peers are running: wait for their rows, or run them if a peer dies."""
        delay = 0.05
        began = said = time.monotonic()
        while waiting:
            self.flush()  # our finished runs first: a peer may be waiting for them
            found, _ = self.core.lookup(waiting)
            if found:
                self.records.update(found)
                self.by_peers += len(found)
                self._advance(len(found))
                waiting = [run_id for run_id in waiting if run_id not in found]
            if not waiting:
                break
            won, waiting = self.claims.claim(waiting)
            won = self._drop_done(won)
            for run_id in won:
                self.run_here(self.todo.pop(run_id))
            if self.waiting != len(waiting):
                self.waiting = len(waiting)
                self._postfix()
            now = time.monotonic()
            if waiting and now - said >= WAIT_LOG_SECONDS:
                said = now
                owners = sorted(set(self.claims.holders.values()))
                log.warning(
                    "waiting %.0f s for %d point(s) other processes are running (%s)",
                    now - began,
                    len(waiting),
                    ", ".join(owners[:3]) + (", ..." if len(owners) > 3 else ""),
                )
            if waiting and not won:
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
            else:
                delay = 0.05
        self.waiting = 0

    def run_here(self, point: Point) -> None:
        """Run one point in this process, journal it, and count a failure as a failure."""
        start = time.perf_counter()
        try:
            row = self.core.point_runner.run(point, had_row=False, journal=self.journal)
        except Exception as exc:
            self.failed(point, exc, traceback.format_exc(), time.perf_counter() - start)
        else:
            self.finished(point, row)

    # -- outcomes --------------------------------------------------------------------------

    def finished(self, point: Point, row: dict[str, Any], *, sidecar: bool = False) -> None:
        """A run that finished and is journalled (or has a sidecar); persisted with its batch."""
        self.rows.append(row)
        self.row_points[row["id"]] = point
        if sidecar:
            self.sidecars.append(row["id"])
        self.ran += 1
        self._advance(1)
        self._maybe_flush()

    def failed(
        self,
        point: Point,
        exc: BaseException,
        formatted: str,
        elapsed: float,
        host: str = HOST,
        pid: int | None = None,
    ) -> None:
        """A point whose runner raised: kept for SweepError and recorded in entropic_failures."""
        self.failure_rows.append(self._failure(point, exc, formatted, elapsed, host, pid))
        log.warning("run %s failed: %s: %s", point.id, type(exc).__name__, exc)
        self._advance(1)
        self._maybe_flush()

    def _failure(
        self,
        point: Point,
        exc: BaseException,
        formatted: str,
        elapsed: float,
        host: str = HOST,
        pid: int | None = None,
    ) -> dict[str, Any]:
        """The failure record of ``point`` (and its place in SweepError)."""
        self.failures.append((dict(point.params), exc))
        if not self.first_traceback:
            self.first_traceback = formatted
        kind = type(exc)
        name = kind.__qualname__
        if kind.__module__ != "builtins":
            name = f"{kind.__module__}.{name}"
        return {
            "id": point.id,
            "params": _jsonable(point.key),
            "exc_type": _text(name)[:255],
            "message": _text(str(exc)),
            "traceback": _text(formatted),
            "host": host,
            "pid": os.getpid() if pid is None else pid,
            "failed_at": utcnow(),
            "elapsed_seconds": elapsed,
        }

    def _advance(self, n: int) -> None:
        if self.bar is not None:
            self._postfix(refresh=False)  # counts current whenever tqdm redraws
            self.bar.update(n)

    def _postfix(self, refresh: bool = True) -> None:
        if self.bar is not None:
            shown = {
                "cached": self.cached + self.by_peers,
                "ran": self.ran,
                "failed": len(self.failures),
            }
            if self.fell_back:
                shown["here_after_client_failed"] = self.fell_back
            if self.waiting:
                shown["waiting_on_peers"] = self.waiting
            self.bar.set_postfix(shown, refresh=refresh and self.live_bar)

    # -- batches ---------------------------------------------------------------------------

    def _maybe_flush(self) -> None:
        if (
            len(self.rows) + len(self.failure_rows) >= BATCH_RUNS
            or time.monotonic() - self.last_flush >= BATCH_SECONDS
        ):
            self.flush()

    def flush(self) -> None:
        """Commit the batch in one transaction, then drop its journal and sidecars."""
        rows, failure_rows = self.rows, self.failure_rows
        release = [row["id"] for row in rows]
        release.extend(row["id"] for row in failure_rows)
        release.extend(self.release)
        if rows or failure_rows or release:
            core = self.core
            refused = core.index.persist(
                rows, failure_rows, also=self.claims.releaser(release), owner=self.claims.owner
            )
            if refused:
                rows = self._refused(refused)
            self.journal.rotate()
            disk = core.disk
            for run_id in self.sidecars:
                disk.remove_sidecar(run_id)
            if rows:
                with _gc_paused():
                    built = core.index.records(rows)
                self.records.update(zip([row["id"] for row in rows], built, strict=True))
            self.rows, self.failure_rows, self.release, self.sidecars = [], [], [], []
            self.row_points = {}
            self._postfix()
        self.last_flush = time.monotonic()

    def _refused(self, refused: list[tuple[dict[str, Any], BaseException]]) -> list[dict[str, Any]]:
        """Rows the database refused: quarantined and counted as failures; the rows it took."""
        disk = self.core.disk
        ids = set()
        failures = []
        for row, exc in refused:
            run_id = row["id"]
            ids.add(run_id)
            message = refused_message(run_id, exc, "the quarantine")
            if run_id in self.sidecars:
                disk.quarantine_sidecar(run_id, message)
                self.sidecars.remove(run_id)
            else:
                disk.quarantine_data(f"journal-{run_id}", encode_line(row) or b"", message, run_id)
            log.warning("%s", message)
            self.ran -= 1
            point = self.row_points[run_id]
            failures.append(self._failure(point, ValueError(message), message, 0.0))
        self.core.index.persist([], failures)
        return [row for row in self.rows if row["id"] not in ids]

    def finish(self, *, quietly: bool = False) -> None:
        """Persist what finished, drop our remaining claims, stop the heartbeat and the bar."""
        try:
            self.flush()
            self.claims.release_all()
        except Exception:
            if not quietly:
                raise
            log.exception("could not persist the last batch; the journal keeps it")
        finally:
            self.journal.close()
            self.claims.close()
            if self.bar is not None:
                self.bar.close()


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while entropic builds many objects at once.

    Building tens of thousands of records triggers full collections that scan
    every object the process holds, which costs more than the building itself.
    These objects hold no cycles, and user code (the runner) never runs inside.
    Afterwards everything young goes straight to the oldest generation (a freeze
    and an unfreeze, both constant-time), so the records are not scanned as new
    objects on the next collection; not when the program has frozen objects
    itself, which an unfreeze would thaw.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            if gc.get_freeze_count() == 0:
                gc.freeze()
                gc.unfreeze()
            gc.enable()


def _jsonable(key: dict[str, Any]) -> Any:
    """The params of a failed point as JSON the failures table can hold."""
    try:
        return json.loads(json.dumps(key, allow_nan=False, default=str))
    except (TypeError, ValueError, RecursionError):
        return {"repr": repr(key)[:10_000]}


def _text(text: str) -> str:
    """``text`` as every database stores it: lone surrogates escaped, NUL characters dropped."""
    if not text.isascii():
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text.replace("\0", "\\0")


def _failure_message(run: _Run, distinct: int, cached: int, *, streamed: bool = False) -> str:
    failed = len(run.failures)
    params, exc = run.failures[0]
    others = "were yielded" if streamed else "are in .records"
    return (
        f"{failed} of {distinct} distinct points failed ({run.ran} ran, {cached} cached, "
        f"{run.by_peers} run by other processes); their params and exceptions are in "
        f".failures, the records of the others {others}, and Store.failures() keeps them. "
        f"Sweeping again runs only what failed or never ran. First failure, {params!r}: "
        f"{type(exc).__name__}: {exc}\n{run.first_traceback}"
    )

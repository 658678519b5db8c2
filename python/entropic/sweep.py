"""Sweeps: run or retrieve many parameter sets through one Store.

This is the serial sweep: every point is validated before any runs, ids come
from ``hash_many``, cached ids are looked up in bounded chunks, and each
distinct missing id runs once. ``client`` is accepted for the contract's
signature; points run in the calling process for now.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from entropic import hashing

if TYPE_CHECKING:
    from distributed import Client

    from entropic.store import ModelT, Point, Store

__all__ = ["LOOKUP_CHUNK", "sweep"]

log = logging.getLogger("entropic")

#: Ids bound per lookup statement: under every dialect's limit on bound parameters.
LOOKUP_CHUNK = 500


def sweep(
    store: Store[ModelT], params: Iterable[dict[str, Any]], client: Client | None = None
) -> list[ModelT]:
    """Run or retrieve every point of ``params``; one record per distinct id, in input order."""
    start = time.perf_counter()
    # Consume the iterable once, validating every point before anything runs.
    points = [store._prepare(p, {}, hashed=False) for p in params]
    assign_ids(points)
    distinct: dict[str, Point] = {}
    for point in points:
        distinct.setdefault(point.id, point)
    records = lookup(store, list(distinct))
    cached = len(records)
    if client is not None:
        log.info("entropic: sweep runs serially in this version; the Dask client is not used")
    for run_id, point in distinct.items():
        if run_id not in records:
            records[run_id] = store._execute(point, had_row=False)
    log.info(
        "entropic: sweep of %d points (%d distinct): %d cached, %d ran, in %.3f s",
        len(points),
        len(distinct),
        cached,
        len(distinct) - cached,
        time.perf_counter() - start,
    )
    return [records[run_id] for run_id in distinct]


def assign_ids(points: list[Point]) -> None:
    """Give each point without an explicit id the hash of its params, in one ``hash_many`` call."""
    todo = [point for point in points if not point.id]
    for point, run_id in zip(todo, hashing.hash_many(point.key for point in todo), strict=False):
        point.id = run_id


def lookup(store: Store[ModelT], run_ids: list[str]) -> dict[str, ModelT]:
    """Records of the stored ones among ``run_ids``, in chunks of at most LOOKUP_CHUNK ids."""
    found: dict[str, ModelT] = {}
    for i in range(0, len(run_ids), LOOKUP_CHUNK):
        found.update(store._get_many(run_ids[i : i + LOOKUP_CHUNK]))
    return found

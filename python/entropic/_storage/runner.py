"""Running one point: the runner writes its result file, and the finished row is journalled.

``PointRunner`` is all a process needs to run points and keep what finished:
the runner, the disk layout and a plain description of the table's columns
(``RowSpec``). It holds no model class, engine or session, so it pickles to any
worker, even when the model and the runner are defined in a script's ``__main__``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from entropic._storage.columns import json_clean
from entropic._storage.disk import Disk, is_file, lexists
from entropic._storage.journal import Journal
from entropic._storage.schema import Point, RowSpec
from entropic.errors import MissingResultError

__all__ = ["PointRunner", "Runner"]

log = logging.getLogger("entropic")

Runner = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class PointRunner:
    """Runs points into results_dir and journals their rows; a failed run changes nothing."""

    runner: Runner
    disk: Disk
    spec: RowSpec

    def run(self, point: Point, *, had_row: bool, journal: Journal | None = None) -> dict[str, Any]:
        """Run the runner for one point; return its row, journalled but not yet in the database.

        The row is appended to ``journal`` if given, else written to the point's
        sidecar. With ``had_row`` the file at the result path is the row's: it is
        kept aside and put back if the run fails. Without, a file there is the
        leftover of a run that died before its row was written, and is replaced.
        """
        disk = self.disk
        run_id = point.id
        path = disk.result_file(run_id)
        if had_row:
            kept_old = disk.move_aside(run_id)
        else:
            # Almost always absent: a look (links not followed, no stat result built) is
            # cheaper than an unlink that finds nothing.
            if lexists(path):
                with suppress(FileNotFoundError):
                    os.unlink(path)
            kept_old = False
        call = dict(point.params)
        call.pop("created_at", None)
        call["result_file"] = path
        call["id"] = run_id
        call["custom_data"] = point.custom_data
        debug = log.isEnabledFor(logging.DEBUG)
        if debug:
            log.debug("running %s", run_id)
        start = time.perf_counter()
        try:
            self.runner(call)
            elapsed = time.perf_counter() - start
            if not is_file(path):
                raise MissingResultError(
                    f"the runner returned without writing the result file of run {run_id}: "
                    f"{path}; the runner must write to params['result_file']"
                )
            custom = call.get("custom_data")
            if type(custom) is not dict and not isinstance(custom, Mapping):
                raise TypeError(
                    f"the runner of run {run_id} replaced params['custom_data'] with a "
                    f"{type(custom).__name__}; it must stay a dict"
                )
            custom = json_clean(custom, "custom_data") if custom else {}
            custom["elapsed_seconds"] = elapsed
            row = self.spec.row(point, path, custom)
            if journal is not None:
                journaled = journal.append(row)
            else:
                journaled = disk.write_sidecar(run_id, row)
            if not journaled:
                log.warning(
                    "run %s has column values JSON cannot hold; it is written to "
                    "the database without a sidecar",
                    run_id,
                )
        except BaseException:
            disk.discard_result(run_id)
            if kept_old:
                disk.restore_aside(run_id)
            log.info("run %s failed after %.3f s", run_id, time.perf_counter() - start)
            raise
        if debug:
            log.debug("ran %s in %.3f s", run_id, elapsed)
        return row

    def finished_row(self, run_id: str) -> dict[str, Any] | None:
        """The row the sidecar of ``run_id`` holds if a run of it finished, else None."""
        row = self.disk.finished_sidecar(run_id)
        return None if row is None else self.spec.stored_row(row)

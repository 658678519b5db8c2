"""The parts of one store, put together: what the public Store and sweeps both stand on.

``StoreCore`` holds the model's ``Schema``, the ``Index`` (database), the
``Disk`` (files), the ``PointRunner`` and the ``Recovery``; it opens a store (the
folder, the tables, recovery), turns params into points, looks up cached runs
and runs single points under a claim. It pickles as its configuration.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from contextlib import suppress
from typing import Any

import sqlalchemy as sa

from entropic._storage.claims import Claims
from entropic._storage.disk import Disk, present
from entropic._storage.index import Index, parse_db_url
from entropic._storage.owner import new_owner, release_owner, take_owner
from entropic._storage.recovery import Recovery
from entropic._storage.runner import PointRunner, Runner
from entropic._storage.schema import Point, Schema, check_model
from entropic.errors import ResultsDirError
from entropic.models import Base

__all__ = ["StoreCore", "refused_message"]

log = logging.getLogger("entropic")

#: How often a process waiting on another's point says so in the log.
WAIT_LOG_SECONDS = 30.0


def refused_message(run_id: str, exc: BaseException, where: str, kept: str = "") -> str:
    """The error for a finished run whose row the database refused."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    head = f"the database refused the row of run {run_id} ({type(orig).__name__}: "
    head += f"{text[0] if text else ''})"
    if kept:
        return f"{head}; {kept} and its row are kept as they were"
    if not where:
        return head
    return (
        f"{head}; the run's row is kept in {where} and `entropic check` reports it; fix the "
        "value or the table, then `entropic check --repair` indexes it"
    )


class StoreCore:
    """One store's schema, index, files, runner and recovery, opened once per process."""

    def __init__(
        self,
        runner: Runner,
        model: type[Base],
        results_dir: str | os.PathLike[str],
        file_suffix: str,
        db_url: object,
    ) -> None:
        if not callable(runner):
            raise TypeError(
                f"runner must be a callable taking the params dict, not {type(runner).__name__}"
            )
        self.runner = runner
        self.model = check_model(model)
        self.disk = Disk(results_dir, file_suffix)
        self.url = parse_db_url(db_url)
        self.schema = Schema(self.model, self.url.get_backend_name())
        table = self.model.__table__
        assert isinstance(table, sa.Table)
        self.index = Index(self.url, table, self.schema)
        self.point_runner = PointRunner(runner, self.disk, self.schema.spec)
        self.recovery = Recovery(self.index, self.disk, self.schema.spec, suffix=self.disk.suffix)
        self._single: Claims | None = None

    def __getstate__(self) -> dict[str, Any]:
        # The configuration only: engines, pools, connections and descriptors never travel.
        return {
            "runner": self.runner,
            "model": self.model,
            "results_dir": str(self.disk.root),
            "file_suffix": self.disk.suffix,
            "db_url": self.url.render_as_string(hide_password=False),
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        # The tables and the recovery were done where the store was opened.
        self.__init__(  # type: ignore[misc]
            state["runner"],
            state["model"],
            state["results_dir"],
            state["file_suffix"],
            state["db_url"],
        )

    def open(self) -> None:
        """Create results_dir and the tables as needed, and recover interrupted runs."""
        self.disk.create()
        self._bind()
        self.index.create_tables()
        self.recovery.recover()

    def close(self) -> None:
        if self._single is not None:
            self._single.close()
            self._single = None
        self.index.close()
        self.disk.close()

    def _bind(self) -> None:
        """Tie results_dir to this table, or refuse a results_dir another table's files are in."""
        disk = self.disk
        name = self.index.name
        marker = disk.read_marker()
        if marker is not None and marker["table"] != name:
            raise ResultsDirError(
                f"results_dir {disk.root} holds the result files of table "
                f"{marker['table']!r}, but {self.model.__name__} uses table {name!r}; the "
                "same params would give both models the same file names, so give each "
                "model its own results_dir"
            )
        wanted = {"entropic_store": 1, "table": name, "file_suffix": disk.suffix}
        if marker != wanted:
            disk.write_marker(wanted)

    # -- points ----------------------------------------------------------------------------

    def point(self, params: Mapping[str, Any], custom_data: Mapping[str, Any]) -> Point:
        """``params`` validated (before anything runs), with its id."""
        return self.schema.point(params, custom_data)

    def identify(self, params: Mapping[str, Any]) -> str:
        return self.schema.identify(params)

    def lookup(
        self, run_ids: list[str], found: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], int]:
        """Cache hits among ``run_ids`` by id (put in ``found`` if given, see ``Index.find``),
        and the count of rows without files.

        A row whose result file is gone is no hit: a row must never vouch for a lost
        file, so such a point is run again. A look-up that reads the whole table looks at
        the files through one listing of results_dir (``Disk.present_many``).
        """
        return self.index.find(run_ids, present, self.disk.present_many, found)

    def hit(self, run_id: str) -> Any:
        """The record of ``run_id`` if it is cached and its file is there, else None."""
        record = self.index.get(run_id)
        if record is None:
            return None
        if present(record.result_file):
            log.debug("hit %s", run_id)
            return record
        log.warning(
            "%s is indexed but its file %s is missing; running it again",
            run_id,
            record.result_file,
        )
        return None

    # -- single runs -----------------------------------------------------------------------

    def run_one(self, point: Point, *, again: bool) -> Any:
        """Run one point under a claim, persist it and return its record.

        With ``again`` it runs even if cached (``Store.run``); without, a peer that
        finished the point meanwhile provides the record (``run_or_retrieve``).
        """
        claims = self._claims()
        # The owner works only while a run is in progress: a claim a failed run could not
        # release is stale at once, so a sweep of this process never waits on it.
        take_owner(claims.owner)
        try:
            return self._run_claimed(claims, point, again=again)
        finally:
            release_owner(claims.owner)

    def _run_claimed(self, claims: Claims, point: Point, *, again: bool) -> Any:
        record = self._claim_one(claims, point.id, again=again)
        if record is not None:
            return record
        run_id = point.id
        released = False
        try:
            current = self.index.get(run_id)
            if not again and current is not None and os.path.exists(current.result_file):
                return current  # finished by a peer between our lookup and our claim
            claims.start_heartbeat()
            row = self.point_runner.run(point, had_row=current is not None)
            refused = self.index.persist([row], also=claims.releaser([run_id]))
            if refused:
                self._refused(run_id, refused[0][1], had_row=current is not None)
            released = True
            self.disk.discard_aside(run_id)
            self.disk.remove_sidecar(run_id)
            return self.index.records([row])[0]
        finally:
            claims.stop_heartbeat()
            if not released:
                try:
                    claims.release([run_id])
                except Exception as exc:  # the database is gone; the claim is ours to reuse
                    log.warning("could not release the claim on %s: %s", run_id, exc)

    def _refused(self, run_id: str, exc: BaseException, *, had_row: bool) -> None:
        """A finished run whose row the database refused: keep the store consistent, raise."""
        disk = self.disk
        if had_row and disk.restore_aside(run_id):
            # The earlier row and its file stay as they were; the new result is dropped.
            disk.remove_sidecar(run_id)
            raise ValueError(refused_message(run_id, exc, "", kept="the earlier result")) from exc
        disk.quarantine_sidecar(run_id, refused_message(run_id, exc, ""))
        message = refused_message(run_id, exc, "the quarantine")
        log.warning("%s", message)
        raise ValueError(message) from exc

    def _claims(self) -> Claims:
        """The claims single runs of this process use (one owner for the Store's life here)."""
        if self._single is None or self._single.pid != os.getpid():
            self._single = Claims(self.index, owner=new_owner(working=False))
        return self._single

    def _claim_one(self, claims: Claims, run_id: str, *, again: bool) -> Any:
        """Claim ``run_id``, waiting while a live peer holds it; a peer's record, or None."""
        delay = 0.05
        waited = time.monotonic()
        said = waited
        while True:
            won, _busy = claims.claim([run_id])
            if won:
                return None
            if not again:
                record = self.hit(run_id)
                if record is not None:
                    return record
            now = time.monotonic()
            if now - said >= WAIT_LOG_SECONDS:
                said = now
                log.warning(
                    "waiting %.0f s for %s, which %s is running",
                    now - waited,
                    run_id,
                    claims.holders.get(run_id, "another process"),
                )
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    # -- one-off writes --------------------------------------------------------------------

    def register(self, point: Point, path: str) -> Any:
        """Index ``path`` as the result of ``point`` (nothing runs); its record."""
        row = self.schema.spec.row(point, path, point.custom_data)
        refused = self.index.persist([row])
        if refused:
            _, exc = refused[0]
            raise ValueError(refused_message(point.id, exc, "")) from exc
        return self.index.records([row])[0]

    def delete(self, run_id: str, *, remove_file: bool) -> bool:
        disk = self.disk

        def check(current: str) -> None:
            if remove_file and not disk.contains(current):
                raise ValueError(
                    f"the file of run {run_id} ({current}) is outside results_dir "
                    f"({disk.root}), and entropic never deletes files there; call "
                    "delete(params) without remove_file and remove the file yourself"
                )

        current = self.index.delete(run_id, check)
        if current is None:
            return False
        # A leftover sidecar would bring the row back when the next Store opens.
        disk.remove_sidecar(run_id)
        if remove_file:
            with suppress(FileNotFoundError):
                os.unlink(current)
        log.info("deleted %s%s", run_id, " and its file" if remove_file else "")
        return True

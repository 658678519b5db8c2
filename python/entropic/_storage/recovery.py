"""Recovery: find what interrupted processes left behind, and finish or set aside each piece.

One path for every caller: a new Store runs ``Recovery.recover`` (a quick
``inspect`` of entropic's own folders and claims, then ``repair``), and
``entropic check [--repair [--prune]]`` runs ``inspect(full=True)``, which also
compares every row with its file, then ``repair``. What each kind of leftover
means and what repair does with it:

- a **sidecar** whose result file exists is a finished run the table may lack:
  its row is written unless the table holds a newer run of the point (a bad
  sidecar is removed: its run's file is gone);
- a **journal** of a sweep whose process is gone holds finished runs: its rows
  are written where the table lacks them or holds an older run (a row written
  since is newer and is kept);
- a file **kept aside** without a sidecar belongs to a re-run that died: it is
  put back, so the row points at its intact earlier file;
- a **claim** of a process that is gone is dropped;
- what cannot be used (an unreadable sidecar, a row the database refuses, a
  symlink in entropic's folders) goes to ``.entropic/quarantine/`` with its
  reason, is logged once, and is reported until it is dealt with.

Points claimed by a live process (a sweep or a ``run`` in progress) are left alone.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from entropic._storage.codec import decode_line, decode_sidecar, encode_line
from entropic._storage.disk import RESULT_GONE, Disk
from entropic._storage.index import ID_CHUNK, Index
from entropic._storage.owner import owner_alive
from entropic._storage.schema import RowSpec
from entropic._storage.tables import CLAIMS
from entropic.models import utcnow

__all__ = ["Findings", "Recovery"]

log = logging.getLogger("entropic")

#: Rows streamed per fetch when the whole table is read.
_STREAM = 10_000


@dataclass
class Findings:
    """What ``inspect`` found; every list but ``in_progress`` holds problems."""

    missing: list[tuple[str, str]] = field(default_factory=list)  # (id, path): row, no file
    empty: list[tuple[str, str]] = field(default_factory=list)  # (id, path): empty file
    orphans: list[str] = field(default_factory=list)  # paths of files no row points to
    sidecars: list[str] = field(default_factory=list)  # ids of finished runs to index
    bad_sidecars: list[tuple[str, str]] = field(default_factory=list)  # (id, why)
    aside: list[str] = field(default_factory=list)  # ids of old results to put back
    journals: list[tuple[str, int]] = field(default_factory=list)  # (name, finished runs)
    stale_claims: list[dict[str, Any]] = field(default_factory=list)
    quarantined: list[dict[str, str]] = field(default_factory=list)  # name, id, reason
    #: What repair would move to the quarantine (an inspection that may change nothing).
    odd: list[dict[str, str]] = field(default_factory=list)  # folder, name, reason
    in_progress: list[str] = field(default_factory=list)  # ids claimed by live processes

    def count(self) -> int:
        """How many problems there are."""
        return sum(
            len(items)
            for items in (
                self.missing,
                self.empty,
                self.orphans,
                self.sidecars,
                self.bad_sidecars,
                self.aside,
                self.journals,
                self.stale_claims,
                self.quarantined,
                self.odd,
            )
        )


class Recovery:
    """Inspection and repair of one store: its table (through ``index``) and its folder."""

    def __init__(self, index: Index, disk: Disk, spec: RowSpec, *, suffix: str | None) -> None:
        self.index = index
        self.disk = disk
        self.spec = spec
        #: The store's file suffix, when known (a Store knows it; the command line reads
        #: it from the folder's store.json, or from the rows).
        self.suffix = suffix

    # -- inspecting ------------------------------------------------------------------------

    def inspect(self, *, full: bool = False) -> Findings:
        """Compare entropic's folders and claims (and with ``full``, every row and file).

        Nothing is changed, except that what cannot even be looked at safely (a
        symlink in entropic's folders) is moved to the quarantine.
        """
        found = Findings()
        disk = self.disk
        live_owners, dead_owners = self._owners()
        sidecar_ids = disk.list_sidecars()
        aside_ids = disk.list_aside()
        disk.list_tmp()  # what does not belong in tmp (a symlink) is set aside, or listed
        if full:
            live = self._claimed_ids(None, live_owners)
        else:
            live = self._claimed_ids(sorted(set(sidecar_ids) | set(aside_ids)), live_owners)
        found.in_progress = sorted(live)
        for run_id in sidecar_ids:
            if run_id in live:
                continue
            row, why = disk.inspect_sidecar(run_id)
            if row is not None:
                found.sidecars.append(run_id)
            else:
                found.bad_sidecars.append((run_id, why))
        with_sidecar = set(found.sidecars)
        found.aside = [i for i in aside_ids if i not in live and i not in with_sidecar]
        heartbeats = self._heartbeats()
        for name, owner in disk.list_journals():
            beat = _latest(disk.journal_mtime(name), heartbeats.get(owner))
            if owner in live_owners or owner_alive(owner, beat):
                continue
            rows, _bad = disk.read_journal(name)
            finished = sum(disk.owns_result(row["result_file"], row["id"]) for row in rows)
            found.journals.append((name, finished))
        found.stale_claims = self._stale_claims(dead_owners)
        found.quarantined = [
            {"name": entry.name, "id": entry.id, "reason": entry.reason, "from": entry.source}
            for entry in disk.list_quarantine()
        ]
        if full:
            self._inspect_rows(found, live)
        found.odd = [
            {"folder": folder, "name": name, "reason": why} for folder, name, why in disk.odd
        ]
        disk.odd.clear()
        return found

    def _owners(self) -> tuple[set[str], set[str]]:
        """(live, gone) owners of this table's claims."""
        if not self.index.shared:
            return set(), set()
        c = CLAIMS.c
        owners = (
            sa.select(c.owner, sa.func.max(c.heartbeat_at))
            .where(c.table_name == self.index.name)
            .group_by(c.owner)
        )
        live: set[str] = set()
        gone: set[str] = set()
        now = utcnow()
        with self.index.engine.connect() as conn:
            for owner, beat in conn.execute(owners):
                (live if owner_alive(owner, beat, now) else gone).add(owner)
        return live, gone

    def _heartbeats(self) -> dict[str, datetime]:
        """The latest claim heartbeat of each owner of this table's claims."""
        if not self.index.shared:
            return {}
        c = CLAIMS.c
        stmt = (
            sa.select(c.owner, sa.func.max(c.heartbeat_at))
            .where(c.table_name == self.index.name)
            .group_by(c.owner)
        )
        with self.index.engine.connect() as conn:
            return {owner: beat for owner, beat in conn.execute(stmt)}

    def _claimed_ids(self, ids: list[str] | None, live_owners: set[str]) -> set[str]:
        """Those of ``ids`` (all, if None) claimed by a live owner."""
        if not live_owners:
            return set()
        c = CLAIMS.c
        base = sa.select(c.id).where(
            c.table_name == self.index.name, c.owner.in_(sorted(live_owners))
        )
        live: set[str] = set()
        with self.index.engine.connect() as conn:
            if ids is None:
                live.update(conn.execute(base).scalars())
                return live
            for i in range(0, len(ids), ID_CHUNK):
                live.update(conn.execute(base.where(c.id.in_(ids[i : i + ID_CHUNK]))).scalars())
        return live

    def _stale_claims(self, dead_owners: set[str]) -> list[dict[str, Any]]:
        if not dead_owners:
            return []
        c = CLAIMS.c
        stmt = (
            sa.select(c.id, c.owner, c.host, c.pid, c.heartbeat_at)
            .where(c.table_name == self.index.name, c.owner.in_(sorted(dead_owners)))
            .order_by(c.id)
        )
        with self.index.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(stmt)]

    def _inspect_rows(self, found: Findings, live: set[str]) -> None:
        """Rows whose file is missing or empty, and files in results_dir no row points to."""
        disk = self.disk
        table = self.index.table
        inside = _InsideRoot(str(disk.root))
        referenced: set[str] = set()
        stmt = sa.select(table.c.id, table.c.result_file).order_by(table.c.id)
        with self.index.engine.connect() as conn:
            for run_id, path in conn.execution_options(yield_per=_STREAM).execute(stmt):
                inside.add_to(referenced, path)
                if run_id in live:
                    continue  # a live process may have moved the file aside to re-run it
                try:
                    size = os.stat(path).st_size
                except OSError:
                    found.missing.append((run_id, path))
                    continue
                if size == 0:
                    found.empty.append((run_id, path))
        # Files named in a journal are runs that finished but are not committed yet.
        for name, _owner in disk.list_journals():
            rows, _bad = disk.read_journal(name)
            for row in rows:
                inside.add_to(referenced, row["result_file"])
        known = live | set(found.sidecars) | {e["id"] for e in found.quarantined if e["id"]}
        for entry in sorted(os.scandir(disk.root), key=lambda e: e.name):
            if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
                continue  # entropic's own .entropic folder; ids never start with a dot
            if entry.name in referenced or _named_for(entry.name, known):
                continue
            found.orphans.append(entry.path)

    # -- repairing -------------------------------------------------------------------------

    def repair(
        self, found: Findings, *, prune: bool = False, retry_quarantine: bool = False
    ) -> dict[str, list[str]]:
        """Fix what ``found`` lists that can be fixed without guessing; what was done, by kind."""
        disk = self.disk
        done: dict[str, list[str]] = {}
        disk.clear_tmp()
        if found.sidecars:
            self._ingest_sidecars(found.sidecars, done)
        for run_id, why in found.bad_sidecars:
            if why == RESULT_GONE:
                # Its run finished, but its file was removed since: nothing to index.
                disk.remove_sidecar(run_id)
                done.setdefault("bad_sidecars_removed", []).append(run_id)
            else:
                disk.quarantine_sidecar(run_id, f"a sidecar that cannot be indexed: {why}")
                log.warning("quarantined the sidecar of %s: %s", run_id, why)
                done.setdefault("sidecars_quarantined", []).append(run_id)
        if found.journals:
            self._ingest_journals([name for name, _ in found.journals], done)
        for run_id in found.aside:
            if self._restore(run_id):
                done.setdefault("aside_restored", []).append(run_id)
        if found.stale_claims:
            self._drop_claims(found.stale_claims)
            done["stale_claims_cleared"] = [claim["id"] for claim in found.stale_claims]
        if retry_quarantine and found.quarantined:
            self._retry_quarantine(found.quarantined, done)
        if prune and found.missing:
            gone = [run_id for run_id, path in found.missing if not os.path.exists(path)]
            if gone:
                self.index.delete_many(gone)
                done["rows_pruned"] = gone
        return done

    def recover(self) -> dict[str, list[str]]:
        """What a new Store does: a quick inspection, and the repair of what it found."""
        found = self.inspect()
        done = self.repair(found)
        recovered = len(done.get("sidecars_ingested", ())) + len(
            done.get("journal_runs_ingested", ())
        )
        restored = len(done.get("aside_restored", ()))
        if recovered or restored:
            log.warning(
                "recovered interrupted runs in %s: %d finished run(s) ingested from "
                "sidecars and journals, %d earlier result(s) restored",
                self.disk.root,
                recovered,
                restored,
            )
        return done

    def ingest_journals_of(self, owners: set[str]) -> list[str]:
        """Index the finished runs journalled by ``owners`` (gone processes); their ids."""
        names = [name for name, owner in self.disk.list_journals() if owner in owners]
        done: dict[str, list[str]] = {}
        self._ingest_journals(names, done)
        return done.get("journal_runs_ingested", [])

    def _ingest_sidecars(self, run_ids: list[str], done: dict[str, list[str]]) -> None:
        disk = self.disk
        rows = []
        for run_id in run_ids:
            row = disk.finished_sidecar(run_id)
            if row is not None:
                rows.append(self.spec.stored_row(row))
        # The newest run of a point wins: a sidecar left by a run that died may be
        # older than a run committed since (its file is that later run's).
        refused = self._write(rows, source="sidecars")
        for row in rows:
            run_id = row["id"]
            if run_id in refused:
                disk.quarantine_sidecar(run_id, refused[run_id])
                done.setdefault("sidecars_quarantined", []).append(run_id)
                continue
            # The row is committed: the old result kept aside and the sidecar are done with.
            disk.discard_aside(run_id)
            disk.remove_sidecar(run_id)
            done.setdefault("sidecars_ingested", []).append(run_id)

    def _ingest_journals(self, names: list[str], done: dict[str, list[str]]) -> None:
        disk = self.disk
        for name in names:
            try:
                rows, bad = disk.read_journal(name)
            except FileNotFoundError:
                continue
            usable = [
                self.spec.stored_row(row)
                for row in rows
                if disk.owns_result(row["result_file"], row["id"])
            ]
            refused = self._write(usable, source="journal")
            # (label, the line, why, the run's id if known) of each line that is not used.
            lost = [
                (f"line{number}", line + b"\n", f"unreadable journal line {number}: {why}", "")
                for number, line, why in bad
            ]
            lost += [
                (row["id"], encode_line(row) or b"", refused[row["id"]], row["id"])
                for row in usable
                if row["id"] in refused
            ]
            for label, line, why, run_id in lost:
                disk.quarantine_data(f"journal-{name}-{label}", line, why, run_id)
                log.warning("quarantined a line of journal %s: %s", name, why)
            if lost:
                done.setdefault("journal_lines_quarantined", []).extend(x[0] for x in lost)
            taken = [row["id"] for row in usable if row["id"] not in refused]
            if taken:
                done.setdefault("journal_runs_ingested", []).extend(taken)
            disk.remove_journal(name)
            if usable or lost:
                done.setdefault("journals_ingested", []).append(name)

    def _write(self, rows: list[dict[str, Any]], *, source: str) -> dict[str, str]:
        """Write ``rows`` over missing or older ones; the reason for each row refused, by id."""
        refused: dict[str, str] = {}
        for i in range(0, len(rows), ID_CHUNK):
            chunk = rows[i : i + ID_CHUNK]
            for row, exc in self.index.persist(chunk, newer_only=True):
                reason = f"the database refused the row: {_first_line(exc)}"
                refused[row["id"]] = reason
                if source == "sidecars":
                    log.warning("quarantined the sidecar of %s: %s", row["id"], reason)
        return refused

    def _restore(self, run_id: str) -> bool:
        """Put the old result of ``run_id`` back where its row points (or its default name)."""
        disk = self.disk
        current = self.index.result_files([run_id]).get(run_id)
        name: str | None = None
        if current is not None and os.path.dirname(current) == str(disk.root):
            name = os.path.basename(current)
        elif self.suffix is not None:
            name = f"{run_id}{self.suffix}"
        if name is None or not name.startswith(run_id):
            return False
        return disk.restore_aside(run_id, name)

    def _drop_claims(self, claims: list[dict[str, Any]]) -> None:
        c = CLAIMS.c
        delete = sa.delete(CLAIMS).where(
            c.table_name == self.index.name,
            c.id == sa.bindparam("claim_id"),
            c.owner == sa.bindparam("claim_owner"),
        )
        with self.index.begin_write() as conn:
            # Compare-and-set: a claim taken over meanwhile has another owner and stays.
            conn.execute(
                delete, [{"claim_id": cl["id"], "claim_owner": cl["owner"]} for cl in claims]
            )

    def _retry_quarantine(self, entries: list[dict[str, str]], done: dict[str, list[str]]) -> None:
        """Index the quarantined rows the database now accepts (after a schema fix, say)."""
        disk = self.disk
        for entry in entries:
            name = entry["name"]
            if entry["from"] not in ("sidecars", "journal"):
                continue
            try:
                data = disk.read_quarantined(name)
                if entry["from"] == "sidecars":
                    rows = [decode_sidecar(data)]
                else:
                    rows = [decode_line(line) for line in data.split(b"\n") if line.strip()]
            except (OSError, ValueError):
                continue
            usable = [
                self.spec.stored_row(row)
                for row in rows
                if disk.owns_result(row["result_file"], row["id"])
            ]
            if not usable or self._write(usable, source=""):
                continue
            disk.release_quarantined(name)
            done.setdefault("quarantine_ingested", []).append(name)


class _InsideRoot:
    """Tells which paths name a file directly inside results_dir, resolving each folder once."""

    def __init__(self, root: str) -> None:
        self.root = os.path.realpath(root)
        self._folders: dict[str, bool] = {}

    def add_to(self, names: set[str], path: object) -> None:
        """Add the file name of ``path`` to ``names`` if the file is directly in results_dir."""
        if not isinstance(path, str):
            return
        folder, name = os.path.split(os.path.abspath(path))
        inside = self._folders.get(folder)
        if inside is None:
            inside = self._folders[folder] = os.path.realpath(folder) == self.root
        if inside:
            names.add(name)


def _named_for(name: str, ids: set[str]) -> bool:
    """Whether file ``name`` is ``{id}{suffix}`` for one of ``ids`` (the suffix is unknown)."""
    if name in ids:
        return True
    return any(name[:i] in ids for i, char in enumerate(name) if char == ".")


def _latest(*stamps: datetime | None) -> datetime | None:
    known = [stamp for stamp in stamps if stamp is not None]
    return max(known) if known else None


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return f"{type(orig if orig is not None else exc).__name__}: {line}"[:500]

"""``entropic check [--repair [--prune]]``: the recovery a new Store runs, shown and run by hand.

The findings and the repairs are ``entropic._storage.recovery``'s: this module
only opens the store by reflection and prints what recovery reports.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO

from entropic._storage.disk import Disk
from entropic._storage.recovery import Findings, Recovery
from entropic._storage.schema import RowSpec
from entropic.cli.format import CLIError, cell, json_line, print_table
from entropic.cli.opening import Opened, with_store

__all__ = ["run"]


def run(args: argparse.Namespace) -> int:
    if args.prune and not args.repair:
        raise CLIError("--prune only works with --repair: entropic check --repair --prune")
    root = Path(args.results)
    if not root.is_dir():
        raise CLIError(f"--results {root} is not a folder; give the store's results_dir")
    return with_store(args, _check)


def _check(store: Opened, args: argparse.Namespace) -> int:
    disk = Disk(args.results, "", readonly=not args.repair)
    marker = disk.read_marker()
    suffix = None
    if marker is not None and marker["table"] == store.table.name:
        suffix = marker.get("file_suffix") if isinstance(marker.get("file_suffix"), str) else None
    recovery = Recovery(store.index, disk, RowSpec.for_table(store.table), suffix=suffix)
    try:
        found = recovery.inspect(full=True)
        repaired: dict[str, list[str]] = {}
        if args.repair and found.count():
            repaired = recovery.repair(found, prune=args.prune, retry_quarantine=True)
            found = recovery.inspect(full=True)
    finally:
        disk.close()
    if args.json:
        json_line(_as_json(store, disk, found, repaired), sys.stdout)
    else:
        _print(store, disk, found, repaired, sys.stdout)
    return 1 if found.count() else 0


def _as_json(
    store: Opened, disk: Disk, found: Findings, repaired: dict[str, list[str]]
) -> dict[str, Any]:
    return {
        "table": store.table.name,
        "results_dir": str(disk.root),
        "ok": found.count() == 0,
        "problems": {
            "missing_files": [{"id": i, "path": p} for i, p in found.missing],
            "empty_files": [{"id": i, "path": p} for i, p in found.empty],
            "orphan_files": found.orphans,
            "sidecars": found.sidecars,
            "bad_sidecars": [{"id": i, "reason": r} for i, r in found.bad_sidecars],
            "kept_aside": found.aside,
            "journals": [{"path": str(disk.journal_path(n)), "runs": r} for n, r in found.journals],
            "stale_claims": found.stale_claims,
            "quarantined": [
                {**entry, "path": str(disk.quarantine_path(entry["name"]))}
                for entry in found.quarantined
            ],
            "to_quarantine": found.odd,
        },
        "in_progress": found.in_progress,
        "repaired": repaired,
    }


def _print(
    store: Opened, disk: Disk, found: Findings, repaired: dict[str, list[str]], out: TextIO
) -> None:
    for kind, ids in repaired.items():
        out.write(f"repaired: {kind.replace('_', ' ')}: {len(ids)}\n")
    body: list[list[Any]] = []
    body += [["missing file", i, p] for i, p in found.missing]
    body += [["empty file", i, p] for i, p in found.empty]
    body += [["orphan file", "", p] for p in found.orphans]
    body += [
        ["sidecar", i, "finished run not in the table (--repair indexes it)"]
        for i in found.sidecars
    ]
    body += [
        ["bad sidecar", i, f"{why} (--repair removes or quarantines it)"]
        for i, why in found.bad_sidecars
    ]
    body += [
        ["kept aside", i, "old result of an unfinished re-run (--repair restores it)"]
        for i in found.aside
    ]
    body += [
        [
            "journal",
            "",
            f"{disk.journal_path(n)}: {r} finished run(s) of a dead sweep (--repair indexes them)",
        ]
        for n, r in found.journals
    ]
    body += [
        [
            "stale claim",
            c["id"],
            f"{c['owner']}, heartbeat {cell(c['heartbeat_at'])} (--repair clears it)",
        ]
        for c in found.stale_claims
    ]
    body += [
        [
            "quarantined",
            entry["id"],
            f"{disk.quarantine_path(entry['name'])}: {entry['reason']} (remove it once dealt "
            "with; --repair indexes rows the database now accepts)",
        ]
        for entry in found.quarantined
    ]
    body += [
        [
            "to quarantine",
            "",
            f"{_folder(disk, entry['folder']) / entry['name']}: {entry['reason']} (--repair "
            "moves it to the quarantine)",
        ]
        for entry in found.odd
    ]
    where = f"{store.table.name} in {store.url} with {disk.root}"
    if body:
        print_table(["problem", "id", "detail"], body, out)
        out.write(f"{found.count()} problem(s) in {where}\n")
    else:
        out.write(f"no problems in {where}\n")
    if found.in_progress:
        out.write(f"{len(found.in_progress)} run(s) in progress (claimed by live processes)\n")
    if found.missing and not repaired.get("rows_pruned"):
        out.write("rows whose file is gone stay until `entropic check --repair --prune`\n")


def _folder(disk: Disk, name: str) -> Path:
    if name == "root":
        return disk.root
    return disk.meta if name == "meta" else disk.meta / name

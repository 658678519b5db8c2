"""``entropic export`` and ``entropic import``: a store's rows and files in one archive, and back.

The archive format, its checks and the merge are the storage layer's
(``archive_format``, ``archive_export``, ``archive_import``): this module opens
the stores by reflection (``import`` creates the table from the archive's
manifest where there is none yet) and prints what was done.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from entropic._storage.archive_export import ExportReport, export_archive
from entropic._storage.archive_format import read_manifest, table_for
from entropic._storage.archive_import import ImportReport, apply_import, check_import
from entropic._storage.disk import Disk
from entropic._storage.index import Index, create_engine, is_memory_sqlite, mask_url, parse_db_url
from entropic.cli.format import CLIError, first_line, json_line
from entropic.cli.opening import Opened, db_url, where, with_store
from entropic.errors import ArchiveError
from entropic.models import RESERVED_COLUMNS

__all__ = ["add_parsers", "run_export", "run_import"]


def add_parsers(
    sub: Any,
    store: argparse.ArgumentParser,
    files: argparse.ArgumentParser,
    output: argparse.ArgumentParser,
) -> None:
    """Add ``export`` and ``import`` to the command's subparsers."""
    export_cmd = sub.add_parser(
        "export",
        parents=[store, files, output],
        help="write the store's rows and result files to one archive",
        description="Write the store's rows (as JSON lines, types kept), their result files and "
        "a manifest with the SHA-256 of each to a new tar archive (compressed if --to ends in "
        ".gz, .bz2 or .xz). Rows whose result file is gone are left out and reported.",
    )
    export_cmd.add_argument(
        "--to", metavar="FILE", required=True, help="the archive to write (must not exist)"
    )
    export_cmd.add_argument(
        "--where",
        metavar="COLUMN=VALUE",
        action="append",
        default=[],
        help="export only rows whose column equals VALUE (as in `entropic ls`); repeat to combine",
    )
    export_cmd.set_defaults(func=run_export)

    import_cmd = sub.add_parser(
        "import",
        parents=[store, files, output],
        help="merge an archive into a store (created if missing)",
        description="Check the whole archive (members, checksums, ids recomputed from the "
        "parameters, values against the table), then merge it: rows the store lacks are added, "
        "older rows replaced, newer ones kept. A damaged archive is refused and nothing is "
        "written. Creates the database table and --results from the archive if missing.",
    )
    import_cmd.add_argument("archive", metavar="ARCHIVE", help="the file `entropic export` wrote")
    import_cmd.add_argument(
        "--explicit-ids",
        action="store_true",
        help="also import rows whose id is not the hash of their parameters (ids given "
        "explicitly, e.g. to Store.register)",
    )
    import_cmd.set_defaults(func=run_import)


# -- export --------------------------------------------------------------------------------


def run_export(args: argparse.Namespace) -> int:
    return with_store(args, _export)


def _export(store: Opened, args: argparse.Namespace) -> int:
    conditions = where(store, args.where)
    try:
        report = export_archive(
            store.index, args.to, suffix=_suffix(store, args), conditions=conditions
        )
    except ArchiveError as exc:
        raise CLIError(str(exc)) from None
    except FileExistsError as exc:
        raise CLIError(f"--to {exc}") from None
    if args.json:
        json_line(_export_json(store, report), sys.stdout)
        return 0
    out = sys.stdout
    out.write(f"exported {report.rows} row(s) of {store.table.name} to {report.path}\n")
    if report.missing:
        out.write(
            f"left out {len(report.missing)} row(s) whose result file is gone "
            "(`entropic check` lists them)\n"
        )
    if report.explicit:
        out.write(
            f"{len(report.explicit)} row(s) have an explicit id; `entropic import "
            "--explicit-ids` imports them\n"
        )
    return 0


def _export_json(store: Opened, report: ExportReport) -> dict[str, Any]:
    return {
        "table": store.table.name,
        "archive": str(report.path),
        "rows": report.rows,
        "missing": report.missing,
        "explicit": report.explicit,
    }


def _suffix(store: Opened, args: argparse.Namespace) -> str:
    """The store's file_suffix: what its results folder says, else what its rows' files end in."""
    results = Path(args.results)
    if results.is_dir():
        marker = Disk(results, "", readonly=True).read_marker()
        if marker is not None and marker["table"] == store.table.name:
            suffix = marker.get("file_suffix")
            if isinstance(suffix, str):
                return suffix
    table = store.table
    stmt = sa.select(table.c.id, table.c.result_file).order_by(table.c.id).limit(100)
    with store.engine.connect() as conn:
        for run_id, path in conn.execute(stmt):
            name = os.path.basename(str(path))
            if name.startswith(run_id):
                return name[len(run_id) :]
    return ""


# -- import --------------------------------------------------------------------------------


def run_import(args: argparse.Namespace) -> int:
    try:
        return _import(args)
    except ArchiveError as exc:
        raise CLIError(str(exc)) from None


def _import(args: argparse.Namespace) -> int:
    archive = Path(args.archive)
    if not archive.is_file():
        raise CLIError(f"no archive at {archive}; give the file `entropic export` wrote")
    manifest = read_manifest(archive)
    url = db_url(args.db)
    if is_memory_sqlite(url):
        raise CLIError(
            "--db names an in-memory SQLite database, which is lost at exit; pass a file"
        )
    try:
        url = parse_db_url(url)
    except FileNotFoundError as exc:
        raise CLIError(f"--db: {exc}") from None
    shown = mask_url(url)
    results = Path(args.results)
    if results.exists() and not results.is_dir():
        raise CLIError(f"--results {results} is not a folder")
    marker = Disk(results, "", readonly=True).read_marker() if results.is_dir() else None
    name = args.table or manifest.table
    if marker is not None and marker["table"] != name:
        raise CLIError(
            f"--results {results} holds the result files of table {marker['table']!r}, not "
            f"{name!r}; to import into that table give --table {marker['table']}, else give "
            "each table its own results folder"
        )
    suffix = manifest.file_suffix
    if marker is not None and isinstance(marker.get("file_suffix"), str):
        suffix = marker["file_suffix"]
    table, new = _target(url, name, shown)
    if table is None:
        table = table_for(manifest, name)
    index = Index(url, table)
    disk = Disk(results, suffix)
    try:
        plan = check_import(
            index, archive, suffix=suffix, explicit_ids=args.explicit_ids, new_table=new
        )
        try:

            def prepare() -> None:
                disk.create()
                index.create_tables()
                if marker is None:
                    disk.write_marker({"entropic_store": 1, "table": name, "file_suffix": suffix})

            report = apply_import(plan, index, disk, before_write=prepare)
        finally:
            plan.close()
    finally:
        disk.close()
        index.close()
    if args.json:
        json_line(_import_json(name, shown, report), sys.stdout)
    else:
        sys.stdout.write(
            f"imported {report.path} into {name} in {shown}: {len(report.inserted)} new, "
            f"{len(report.replaced)} replaced (older here), {len(report.kept)} kept (as new "
            f"or newer here), {len(report.busy)} left to the live processes running them\n"
        )
    return 0


def _target(url: sa.URL, name: str, shown: str) -> tuple[sa.Table | None, bool]:
    """(the reflected table, False), or (None, True) if the table (or database file) is new."""
    if url.get_backend_name() == "sqlite" and not os.path.exists(str(url.database)):
        return None, True  # connecting would create the file: only after the checks
    try:
        engine = create_engine(url)
    except (ImportError, sa.exc.ArgumentError) as exc:
        raise CLIError(f"cannot use --db {shown}: {exc}") from None
    try:
        try:
            if not sa.inspect(engine).has_table(name):
                return None, True
        except sa.exc.SQLAlchemyError as exc:
            raise CLIError(f"cannot open database {shown}: {first_line(exc)}") from None
        table = sa.Table(name, sa.MetaData(), autoload_with=engine)
    finally:
        engine.dispose()
    lacking = [column for column in RESERVED_COLUMNS if column not in table.c]
    if lacking:
        raise CLIError(
            f"table {name!r} in {shown} is not an entropic store (it lacks "
            f"{', '.join(lacking)}); import into another table with --table"
        )
    return table, False


def _import_json(name: str, shown: str, report: ImportReport) -> dict[str, Any]:
    return {
        "archive": str(report.path),
        "table": name,
        "db": shown,
        "inserted": report.inserted,
        "replaced": report.replaced,
        "kept": report.kept,
        "busy": report.busy,
    }

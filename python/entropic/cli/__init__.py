"""The ``entropic`` command line: hash parameter sets, and inspect or repair any store.

``entropic hash '{"n": 100, "dt": 0.1}'`` prints the id that entropic gives those
parameters, so a user can check an id from a shell script or from another
language. ``entropic hash -`` reads JSON Lines on stdin and prints one id a line.

``ls``, ``failures``, ``info``, ``check``, ``export`` and ``import`` open a store
from its database URL (``--db``) and results folder (``--results``) alone: the
table is reflected, so no model class is needed. See docs/cli.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import sqlalchemy as sa

from entropic._storage.index import secrets_of
from entropic.cli import archive, check, show
from entropic.cli import hash as hash_command
from entropic.cli.format import CLIError, first_line

__all__ = ["main", "parser"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    for stream in (sys.stdout, sys.stderr):
        # A file name that is not valid UTF-8 is shown escaped, never a crash.
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")
    args = parser().parse_args(argv)
    secrets: list[str] = []
    try:
        secrets = _secrets(getattr(args, "db", None))
        status: int = args.func(args)
    except CLIError as exc:
        _fail(str(exc), secrets)
        return 2
    except sa.exc.SQLAlchemyError as exc:
        _fail(f"database error: {first_line(exc)}", secrets)
        return 2
    except OSError as exc:
        if isinstance(exc, BrokenPipeError):  # e.g. `entropic hash - | head`
            return 0
        _fail(f"{exc.strerror or exc} ({exc.filename})" if exc.filename else str(exc), secrets)
        return 2
    except (ValueError, TypeError) as exc:
        # What the storage layer refuses (a damaged store it cannot use) is one line too.
        _fail(f"{type(exc).__name__}: {exc}", secrets)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        # Anything else (JSON in a row nested too deeply to read, say) is one line too:
        # the command never ends in a traceback.
        _fail(f"{type(exc).__name__}: {exc}", secrets)
        return 2
    return status


def _fail(message: str, secrets: list[str]) -> None:
    for secret in secrets:
        message = message.replace(secret, "***")
    print(f"entropic: error: {message}", file=sys.stderr)


def _secrets(db: str | None) -> list[str]:
    if not db:
        return []
    try:
        return secrets_of(sa.make_url(db))
    except sa.exc.ArgumentError:
        return []


def parser() -> argparse.ArgumentParser:
    """The argument parser of the ``entropic`` command."""
    root = argparse.ArgumentParser(
        prog="entropic",
        description="entropic: a run cache for parameterised simulations.",
    )
    sub = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    hash_command.add_parser(sub)

    store = argparse.ArgumentParser(add_help=False)
    where = store.add_argument_group("store")
    where.add_argument(
        "--db",
        metavar="URL",
        default=os.environ.get("ENTROPIC_DB_URL", "sqlite:///db.sqlite3"),
        help="SQLAlchemy URL of the database (default: $ENTROPIC_DB_URL, else the Store's "
        "default sqlite:///db.sqlite3)",
    )
    where.add_argument(
        "--table", metavar="NAME", help="the store's table, when the database holds several"
    )
    files = argparse.ArgumentParser(add_help=False)
    files.add_argument(
        "--results",
        metavar="DIR",
        default="results",
        help="the store's results_dir (default: ./results, the Store's default)",
    )
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument("--json", action="store_true", help="JSON output (one object a line)")

    ls_cmd = sub.add_parser(
        "ls",
        parents=[store, files, output],
        help="list runs, newest first",
        description="List the store's rows, newest first: parameters, id, time, file and a "
        "custom_data summary. Files are shown relative to --results when inside it.",
    )
    ls_cmd.add_argument(
        "--where",
        metavar="COLUMN=VALUE",
        action="append",
        default=[],
        help="keep rows whose column equals VALUE, read as the column's type (floats match "
        "as ids round them; 'null' is NULL for non-text columns); repeat to combine",
    )
    ls_cmd.add_argument(
        "--limit", type=int, default=20, metavar="N", help="show at most N rows (0: all; 20)"
    )
    ls_cmd.add_argument(
        "--columns",
        metavar="A,B,...",
        help="show these columns, in this order: parameter columns, id, created_at, file, "
        "custom_data, or custom_data.KEY for one value (default: all that fit the terminal)",
    )
    ls_cmd.set_defaults(func=show.run_ls)

    fail_cmd = sub.add_parser(
        "failures",
        parents=[store, files, output],
        help="show the failures recorded by sweeps",
        description="Show the last failure of every point that has failed and not succeeded "
        "since, newest first: params, error, host, time.",
    )
    fail_cmd.add_argument("--traceback", action="store_true", help="show whole tracebacks")
    fail_cmd.add_argument(
        "--limit", type=int, default=0, metavar="N", help="show at most N failures (0: all)"
    )
    fail_cmd.set_defaults(func=show.run_failures)

    info_cmd = sub.add_parser(
        "info",
        parents=[store, files, output],
        help="summarise a store: rows, columns, disk, times",
        description="Rows, distinct values per parameter column, disk used by result files, "
        "oldest and newest run, total and mean elapsed_seconds, failures and claims.",
    )
    info_cmd.set_defaults(func=show.run_info)

    check_cmd = sub.add_parser(
        "check",
        parents=[store, files, output],
        help="find (and repair) inconsistencies between the table and results_dir",
        description="Report rows whose file is missing or empty, files no row points to, "
        "leftover sidecars, sweep journals and kept-aside files, and stale claims (a claim "
        "is stale when its process is gone; see ENTROPIC_CLAIM_TTL in docs/cli.md). Exit "
        "status 1 while problems remain.",
    )
    check_cmd.add_argument(
        "--repair",
        action="store_true",
        help="ingest good sidecars and leftover journals, restore kept-aside files, drop bad "
        "sidecars, clear stale claims",
    )
    check_cmd.add_argument(
        "--prune",
        action="store_true",
        help="with --repair: also delete rows whose file is gone",
    )
    check_cmd.set_defaults(func=check.run)
    archive.add_parsers(sub, store, files, output)
    return root


# -- opening a store by reflection ---------------------------------------------------------

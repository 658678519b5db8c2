"""The ``entropic`` command on stores it cannot repair, and on URLs that carry a password.

Every command runs as a real subprocess (``python -m entropic ...``). On a store
``check --repair`` cannot repair, it prints exactly one ``entropic: error: ...``
line and exits 2 when it cannot do its work at all (the database refuses to be
read, a table is locked, entropic's own table drifted), and reports and exits 1
when what it cannot use is data (moved to the quarantine): never a traceback,
never a password.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import traceback
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import conftest
from entropic import Store, hash_params
from entropic._storage.disk import META_DIR
from entropic._storage.owner import HOST

from ._support import Rel, checked_runner

SECRET = "s3cr3t-in-the-query"


def entropic(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the ``entropic`` command in a fresh interpreter; no traceback, ever."""
    done = subprocess.run(
        [sys.executable, "-m", "entropic", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    return done


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The single ``entropic: error:`` line of a command that exited 2."""
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert done.stderr.startswith("entropic: error: "), done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    return done.stderr


def make_store(url: str, results: Path, points: int = 3) -> list[str]:
    """A store with ``points`` runs in it; their ids."""
    with Store(checked_runner, Rel, results_dir=results, db_url=url) as store:
        return [record.id for record in store.sweep([{"n": n} for n in range(points)])]


def with_query_password(url: str) -> str:
    """``url`` with the password in its query (psycopg takes it there too; the server trusts)."""
    parsed = sa.make_url(url)
    return parsed.update_query_dict({"password": SECRET}).render_as_string(hide_password=False)


@pytest.fixture
def pg_url() -> Iterator[str]:
    yield from conftest.pg_database()


# -- 3: check --repair on a store it cannot repair -------------------------------------------


def test_a_table_the_user_may_not_read_is_one_error_line(pg_url: str, tmp_path: Path) -> None:
    results = tmp_path / "r"
    make_store(pg_url, results)
    role = f"entropic_nobody_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(conftest.PG_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE ROLE {role} LOGIN")
        url = with_query_password(sa.make_url(pg_url).set(username=role).render_as_string(False))
        for args in (["check"], ["check", "--repair"]):
            line = one_error_line(entropic(*args, "--db", url, "--results", str(results)))
            assert "permission denied" in line
            assert SECRET not in line
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP ROLE IF EXISTS {role}")
        admin.dispose()


def test_a_locked_table_is_one_error_line(pg_url: str, tmp_path: Path) -> None:
    results = tmp_path / "r"
    make_store(pg_url, results)
    # The lock is held by another connection; the command gives up after half a second.
    url = sa.make_url(pg_url).update_query_dict({"options": "-c lock_timeout=500"})
    holder = sa.create_engine(pg_url)
    try:
        with holder.begin() as conn:
            conn.exec_driver_sql("LOCK TABLE reliability_result IN ACCESS EXCLUSIVE MODE")
            done = entropic(
                "check", "--repair", "--db", url.render_as_string(False), "--results", str(results)
            )
        assert "lock" in one_error_line(done)
    finally:
        holder.dispose()


def test_entropic_own_table_drifted_is_one_error_line(shared_db_url: str, tmp_path: Path) -> None:
    results = tmp_path / "r"
    make_store(shared_db_url, results)
    engine = sa.create_engine(shared_db_url)
    try:
        with engine.begin() as conn:  # an entropic_claims table of another shape
            conn.exec_driver_sql("ALTER TABLE entropic_claims DROP COLUMN heartbeat_at")
    finally:
        engine.dispose()
    for args in (["check"], ["check", "--repair"]):
        line = one_error_line(entropic(*args, "--db", shared_db_url, "--results", str(results)))
        assert "heartbeat_at" in line


def test_a_corrupt_sqlite_table_is_one_error_line(tmp_path: Path) -> None:
    database = tmp_path / "db.sqlite3"
    url = f"sqlite:///{database}"
    results = tmp_path / "r"
    make_store(url, results, points=200)
    # Closing the last connection checkpointed the WAL: the tables are in the file.
    assert not Path(f"{database}-wal").exists()
    data = bytearray(database.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    assert len(data) > 4 * page
    data[page:] = b"\xa5" * (len(data) - page)  # every page but the schema's
    database.write_bytes(bytes(data))
    for args in (["check"], ["check", "--repair"]):
        line = one_error_line(entropic(*args, "--db", url, "--results", str(results)))
        assert "malformed" in line or "not a database" in line


def sidecar(results: Path, run_id: str, row: dict[str, Any]) -> None:
    """Leave the sidecar of a finished run (its result file included), as a killed run does."""
    result = results / f"{run_id}.h5"
    result.write_text("made")
    full = {"id": run_id, "result_file": str(result), "created_at": "2024-01-01T00:00:00"}
    full |= {"custom_data": {}, **row}
    text = {"entropic_sidecar": 1, "id": run_id, "row": full, "types": {"created_at": "datetime"}}
    (results / META_DIR / "sidecars" / f"{run_id}.json").write_text(json.dumps(text))


def add_required_column(url: str) -> None:
    """Give the table a column k, NOT NULL without a default (SQLite: by rebuilding it)."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            if url.startswith("postgresql"):
                conn.exec_driver_sql(
                    "ALTER TABLE reliability_result ADD COLUMN k INTEGER NOT NULL DEFAULT 0"
                )
                conn.exec_driver_sql("ALTER TABLE reliability_result ALTER COLUMN k DROP DEFAULT")
                return
            create = conn.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE name = 'reliability_result'"
            ).scalar_one()
            conn.exec_driver_sql("ALTER TABLE reliability_result RENAME TO old_result")
            conn.exec_driver_sql(
                create.replace("PRIMARY KEY (id)", "k INTEGER NOT NULL, PRIMARY KEY (id)")
            )
            conn.exec_driver_sql("INSERT INTO reliability_result SELECT *, 0 FROM old_result")
            conn.exec_driver_sql("DROP TABLE old_result")
    finally:
        engine.dispose()


def test_rows_a_drifted_table_refuses_are_quarantined_and_reported(
    shared_db_url: str, tmp_path: Path
) -> None:
    results = tmp_path / "r"
    make_store(shared_db_url, results)
    run_id = hash_params({"n": 7})
    sidecar(results, run_id, {"n": 7, "x": 0.0})
    add_required_column(shared_db_url)  # after the sidecar was written
    done = entropic("check", "--repair", "--db", shared_db_url, "--results", str(results))
    assert done.returncode == 1, done
    assert "entropic: error" not in done.stderr  # the quarantine is logged, not an error
    assert "quarantined" in done.stdout
    assert run_id in done.stdout
    again = entropic("check", "--repair", "--db", shared_db_url, "--results", str(results))
    assert again.returncode == 1
    assert run_id in again.stdout


DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize("where", ["store.json", "a quarantine reason", "a sidecar", "a journal"])
def test_what_a_folder_holds_never_stops_check_or_a_store(
    shared_db_url: str, tmp_path: Path, where: str
) -> None:
    # JSON nested 100,000 deep: Python's json module gives up with RecursionError.
    results = tmp_path / "r"
    ids = make_store(shared_db_url, results)
    meta = results / META_DIR
    if where == "store.json":
        (meta / "store.json").write_text(DEEP)
    elif where == "a quarantine reason":
        (meta / "quarantine" / "left-here").write_text("data")
        (meta / "quarantine" / "left-here.reason.json").write_text(DEEP)
    elif where == "a sidecar":
        (results / f"{ids[0]}.h5").write_text("kept")
        (meta / "sidecars" / f"{ids[0]}.json").write_text(DEEP)
    else:
        # The journal of a sweep whose process is gone (no such pid).
        (meta / "journal" / f"{HOST}~999999999~1~00.0.jsonl").write_text(DEEP + "\n")
    for args in (["check"], ["check", "--repair"], ["check"]):
        done = entropic(*args, "--db", shared_db_url, "--results", str(results))
        assert done.returncode in (0, 1), done
        assert "entropic: error" not in done.stderr
    with Store(checked_runner, Rel, results_dir=results, db_url=shared_db_url) as store:
        assert store.count() == 3


def test_a_row_too_deeply_nested_to_read_is_one_error_line(
    shared_db_url: str, tmp_path: Path
) -> None:
    # Written by another program: entropic never writes JSON this deep.
    results = tmp_path / "r"
    make_store(shared_db_url, results)
    engine = sa.create_engine(shared_db_url)
    try:
        with engine.begin() as conn:
            # Deeper than Python's json module reads; shallow enough for PostgreSQL's.
            deep = "[" * 5_000 + "]" * 5_000
            conn.execute(sa.text("UPDATE reliability_result SET custom_data = :d"), {"d": deep})
    finally:
        engine.dispose()
    for args in (["ls"], ["ls", "--json"], ["info"]):
        line = one_error_line(entropic(*args, "--db", shared_db_url, "--results", str(results)))
        assert "RecursionError" in line
    done = entropic("check", "--repair", "--db", shared_db_url, "--results", str(results))
    assert done.returncode == 0, done  # check reads no custom_data


# -- 5: a password in the URL's query ---------------------------------------------------------


def test_a_password_in_the_query_is_masked_everywhere(
    pg_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = with_query_password(pg_url)
    results = tmp_path / "r"
    seen: list[object] = []
    with Store(checked_runner, Rel, results_dir=results, db_url=url) as store:
        store.sweep([{"n": n} for n in range(3)])  # it really connects with the URL
        assert "password=***" in store.db_url
        assert "password=***" in repr(store)
        seen += [repr(store), str(store), store.db_url, store.engine.url, repr(store.engine)]
    outputs = {}
    for command in ("info", "check", "ls", "failures"):
        done = entropic(command, "--db", url, "--results", str(results))
        assert done.returncode == 0, done
        outputs[command] = done.stdout
        seen += [done.stdout, done.stderr]
    assert "rows      3" in outputs["info"]
    assert "password=***" in outputs["info"]
    assert "password=***" in outputs["check"]
    # Errors: nothing listens on that port.
    wrong = sa.make_url(url).set(port=1).render_as_string(hide_password=False)
    assert SECRET in wrong
    with pytest.raises(sa.exc.OperationalError) as info:
        Store(checked_runner, Rel, results_dir=tmp_path / "r2", db_url=wrong)
    seen += [info.value, "".join(traceback.format_exception(info.value))]
    for command in ("info", "check"):
        line = one_error_line(entropic(command, "--db", wrong, "--results", str(results)))
        assert "password=***" in line
        seen.append(line)
    seen += [caplog.text, *(record.getMessage() for record in caplog.records)]
    for text in seen:
        assert SECRET not in str(text)
    assert os.environ.get("PGPASSWORD", "") != SECRET

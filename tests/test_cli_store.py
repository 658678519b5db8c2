"""`entropic ls | failures | info | check` on real stores (an SQLite file and PostgreSQL)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import String

from entropic import Base, Mapped, Store, SweepError, hash_params, mapped_column
from entropic._storage.disk import Disk
from entropic._storage.journal import Journal
from entropic._storage.owner import HOST, new_owner
from entropic._storage.tables import CLAIMS, FAILURES
from entropic.cli import main


class Wave(Base):
    __tablename__ = "wave"

    K: Mapped[float]
    n: Mapped[int]
    method: Mapped[str] = mapped_column(String(16))
    stiff: Mapped[bool | None]


class Other(Base):
    __tablename__ = "other"

    x: Mapped[int]


def write(params: dict[str, Any]) -> None:
    Path(params["result_file"]).write_text("y" * (params["n"] + 1))
    params["custom_data"]["peak"] = params["K"] * 2


POINTS = [
    {"K": 0.1 + 0.2, "n": 1, "method": "rk4", "stiff": False},
    {"K": 0.3, "n": 2, "method": "euler", "stiff": True},
    {"K": 100.0, "n": 10, "method": "rk4", "stiff": None},
    {"K": 2.5, "n": 3, "method": "implicit", "stiff": True},
]


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def row_of(params: dict[str, Any]) -> dict[str, Any]:
    """The row a run of ``params`` journals (its result_file still to be set)."""
    return {
        **params,
        "id": hash_params(params),
        "result_file": "",
        "created_at": utcnow(),
        "custom_data": {},
    }


@pytest.fixture
def store(shared_db_url: str, tmp_path: Path) -> Iterator[Store[Wave]]:
    with Store(write, Wave, tmp_path / "results", ".txt", shared_db_url) as store:
        for point in POINTS:  # one at a time: distinct created_at, oldest first
            store.run_or_retrieve(point)
        yield store


def cli(store: Store[Any], *args: str) -> list[str]:
    return [*args, "--db", _url(store), "--results", str(store.results_dir)]


def _url(store: Store[Any]) -> str:
    return store.engine.url.render_as_string(hide_password=False)


def run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    status = main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def one_line_error(err: str) -> str:
    assert err.startswith("entropic: error: "), err
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


# -- ls ------------------------------------------------------------------------------------


def test_ls_prints_an_aligned_table_newest_first(
    store: Store[Wave], capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run(capsys, cli(store, "ls"))
    assert status == 0
    header, *lines = out.splitlines()
    assert header.split() == [
        "K",
        "n",
        "method",
        "stiff",
        "id",
        "created_at",
        "file",
        "custom_data",
    ]
    records = store.find()
    assert [line.split()[4] for line in lines] == [r.id for r in reversed(records)]
    # Every id starts at the header's "id" column; numbers are right-aligned under K and n.
    at = header.index(" id ") + 1
    assert all(line[at : at + 16] in {r.id for r in records} for line in lines)
    k_end = header.index("K") + 1
    # Floats to the 12 significant digits ids keep: 0.30000000000000004 shows as 0.3.
    assert {line[:k_end].strip() for line in lines} == {"2.5", "100.0", "0.3"}
    assert all(line[k_end] == " " for line in lines)
    assert lines[-1].split()[3] == "false"
    assert lines[1].split()[3] == "null"
    assert "peak=0.6" in lines[-1]
    # Files inside --results are shown by name.
    assert f"{records[0].id}.txt" in lines[-1]


def test_ls_where_is_typed_by_the_reflected_column(
    store: Store[Wave], capsys: pytest.CaptureFixture[str]
) -> None:
    def ids(*where: str) -> set[str]:
        args = [arg for item in where for arg in ("--where", item)]
        status, out, _ = run(capsys, cli(store, "ls", *args))
        assert status == 0
        return {line.split()[4] for line in out.splitlines()[1:]}

    by_k = {r.K: r.id for r in store.find()}
    # Floats match as ids round them: both stored 0.3s, whichever way they are written.
    assert ids("K=0.3") == ids("K=0.30000000000000004") == {by_k[0.3], by_k[0.1 + 0.2]}
    assert ids("K=0.3", "n=2") == {by_k[0.3]}
    assert ids("method=rk4", "stiff=false") == {by_k[0.1 + 0.2]}
    assert ids("stiff=null") == {by_k[100.0]}
    assert ids("stiff=TRUE", "method=implicit") == {by_k[2.5]}
    assert ids(f"id={by_k[2.5]}") == {by_k[2.5]}
    assert ids("n=99") == set()


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("n=two", "'n=two': column wave.n is INTEGER; give a whole number"),
        ("K=fast", "give a finite number"),
        ("K=inf", "give a finite number"),
        ("stiff=maybe", "give true or false"),
        ("nope=1", "'nope' is not a column of wave; its columns are K, n, method, stiff, id"),
        ("custom_data={}", "is not a column of wave"),
        ("n", "is not COLUMN=VALUE"),
    ],
)
def test_bad_where_is_one_line_and_exit_2(
    store: Store[Wave], capsys: pytest.CaptureFixture[str], where: str, message: str
) -> None:
    status, out, err = run(capsys, cli(store, "ls", "--where", where))
    assert status == 2
    assert out == ""
    assert message in one_line_error(err)


def test_ls_formats_floats_one_way_and_never_cuts_a_custom_data_key(
    store: Store[Wave], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "400")
    status, out, _ = run(capsys, cli(store, "ls"))
    assert status == 0
    line = next(line for line in out.splitlines()[1:] if line.lstrip().startswith("100.0"))
    # The same value, 200.0, as a parameter would show it; every key whole.
    assert "peak=200.0" in line
    assert "elapsed_seconds=" in line
    # A narrow terminal: custom_data is cut between pairs, then columns are left out.
    monkeypatch.setenv("COLUMNS", "100")
    status, out, err = run(capsys, cli(store, "ls"))
    header, *lines = out.splitlines()
    assert all(len(line) <= 100 for line in lines), out
    assert "custom_data" in header
    assert "elapsed_…" not in out
    for line in lines:
        pairs = line[header.index("custom_data") :].split(", ")
        assert all("=" in p or p.startswith("(+") for p in pairs), line
    monkeypatch.setenv("COLUMNS", "60")
    status, out, err = run(capsys, cli(store, "ls"))
    assert status == 0
    assert out.splitlines()[0].split()[:5] == ["K", "n", "method", "stiff", "id"]
    assert "left out to fit the terminal: created_at" in err
    assert "--columns" in err


def test_ls_columns_picks_and_orders_columns(
    store: Store[Wave], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = cli(store, "ls", "--columns", "id,custom_data.peak,K", "--where", "n=10")
    status, out, err = run(capsys, argv)
    assert (status, err) == (0, "")
    header, line = out.splitlines()
    assert header.split() == ["id", "custom_data.peak", "K"]
    assert line.split() == [hash_params(POINTS[2]), "200.0", "100.0"]
    status, _, err = run(capsys, cli(store, "ls", "--columns", "id,nope"))
    assert status == 2
    assert "unknown nope" in one_line_error(err)
    assert "custom_data.KEY" in err


def test_ls_json_lines_and_limit(store: Store[Wave], capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, cli(store, "ls", "--json", "--limit", "3"))
    assert status == 0
    rows = [json.loads(line) for line in out.splitlines()]
    newest = list(reversed(store.find()))[:3]
    assert [row["id"] for row in rows] == [r.id for r in newest]
    assert list(rows[0]) == [
        "K",
        "n",
        "method",
        "stiff",
        "id",
        "result_file",
        "created_at",
        "custom_data",
    ]
    assert rows[0]["result_file"] == newest[0].result_file
    assert datetime.fromisoformat(rows[0]["created_at"]) == newest[0].created_at
    assert rows[0]["custom_data"] == newest[0].custom_data
    assert rows[1]["stiff"] is None

    status, out, err = run(capsys, cli(store, "ls", "--limit", "2"))
    assert status == 0
    assert len(out.splitlines()) == 3
    assert err == "(2 of 4 rows; --limit 0 shows all)\n"


# -- info ----------------------------------------------------------------------------------


def test_info_summarises_rows_columns_files_and_times(
    store: Store[Wave], capsys: pytest.CaptureFixture[str]
) -> None:
    records = store.find()
    status, out, _ = run(capsys, cli(store, "info", "--json"))
    assert status == 0
    info = json.loads(out)
    assert info["rows"] == 4
    assert info["table"] == "wave"
    assert info["files"] == {"present": 4, "missing": 0, "bytes": 2 + 3 + 11 + 4}
    total = sum(r.custom_data["elapsed_seconds"] for r in records)
    assert info["elapsed_seconds"]["total"] == pytest.approx(total)
    assert info["elapsed_seconds"]["mean"] == pytest.approx(total / 4)
    assert datetime.fromisoformat(info["oldest"]) == records[0].created_at
    assert datetime.fromisoformat(info["newest"]) == records[-1].created_at
    columns = {c["name"]: c for c in info["columns"]}
    assert list(columns) == ["K", "n", "method", "stiff"]
    assert columns["K"]["distinct"] == 4  # 0.3 and 0.30000000000000004 are both stored
    assert columns["n"]["min"] == 1
    assert columns["n"]["max"] == 10
    assert columns["method"]["values"] == ["euler", "implicit", "rk4"]
    assert info["failures"] == 0
    assert info["claims"] == 0

    status, out, _ = run(capsys, cli(store, "info"))
    assert status == 0
    assert "rows      4\n" in out
    assert "files     4 present, 20 B\n" in out
    assert "method" in out
    assert "euler, implicit, rk4" in out


# -- failures ------------------------------------------------------------------------------


def explode(params: dict[str, Any]) -> None:
    if params["method"] == "boom":
        raise ZeroDivisionError(f"division by zero at K={params['K']}")
    write(params)


def test_failures_lists_params_error_host_and_time(
    store: Store[Wave], capsys: pytest.CaptureFixture[str], shared_db_url: str
) -> None:
    status, out, _ = run(capsys, cli(store, "failures"))
    assert (status, out) == (0, "no failures recorded for wave\n")
    points = [
        {"K": 9.5, "n": 4, "method": "boom", "stiff": False},
        {"K": 9.5, "n": 4, "method": "fine", "stiff": False},
        {"K": 7.5, "n": 4, "method": "boom", "stiff": None},
    ]
    with Store(explode, Wave, store.results_dir, ".txt", shared_db_url) as failing:
        with pytest.raises(SweepError):
            failing.sweep(points)
        recorded = failing.failures()
    assert len(recorded) == 2

    status, out, _ = run(capsys, cli(store, "failures"))
    assert status == 0
    header, *lines = out.splitlines()
    assert header.split() == ["id", "failed_at", "host", "error", "params"]
    assert [line.split()[0] for line in lines] == [f.id for f in recorded]
    first = next(line for line in lines if "9.5" in line)
    assert re.split(r"  +", first)[2:4] == [HOST, "ZeroDivisionError: division by zero at K=9.5"]
    assert '{"K":9.5,"n":4,"method":"boom","stiff":false}' in first
    assert "Traceback" not in out

    status, out, _ = run(capsys, cli(store, "failures", "--traceback", "--limit", "1"))
    assert status == 0
    newest = recorded[0]
    assert out.startswith(f"== {newest.id}  ")
    assert f"on {HOST} (pid {os.getpid()})" in out
    assert "Traceback (most recent call last):" in out
    assert 'in explode\n    raise ZeroDivisionError(f"division by zero at K=' in out
    assert recorded[1].id not in out

    status, out, _ = run(capsys, cli(store, "failures", "--json"))
    rows = [json.loads(line) for line in out.splitlines()]
    assert [row["id"] for row in rows] == [f.id for f in recorded]
    assert rows[0]["traceback"] == newest.traceback
    assert rows[0]["params"] == newest.params
    assert rows[0]["exc_type"] == "ZeroDivisionError"


def test_failures_without_the_table(store: Store[Wave], capsys: pytest.CaptureFixture[str]) -> None:
    FAILURES.drop(store.engine)
    status, out, _ = run(capsys, cli(store, "failures"))
    assert status == 0
    assert out.startswith("no failures recorded")


# -- check ---------------------------------------------------------------------------------


def dead_pid() -> int:
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(child.stdout)


def claim(store: Store[Wave], run_id: str, owner: str, age: float) -> None:
    when = utcnow() - timedelta(seconds=age)
    host, pid = owner.split("~")[:2]
    with store.engine.begin() as conn:
        conn.execute(
            sa.insert(CLAIMS).values(
                table_name="wave",
                id=run_id,
                owner=owner,
                host=host,
                pid=int(pid),
                claimed_at=when,
                heartbeat_at=when,
            )
        )


def test_check_finds_and_repairs_every_kind_of_problem(
    store: Store[Wave], capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run(capsys, cli(store, "check"))
    assert (status, out.split(" in ")[0]) == (0, "no problems")

    disk = Disk(store.results_dir, ".txt")
    a, b, c, d = store.find()
    Path(a.result_file).unlink()  # a row whose file is gone
    Path(b.result_file).write_bytes(b"")  # an empty result
    orphan = store.results_dir / "stray.txt"
    orphan.write_text("no row")
    # A finished run whose process died before the commit: file and sidecar, no row.
    journalled = row_of({**POINTS[0], "n": 7})
    journalled["result_file"] = str(disk.result_path(journalled["id"]))
    Path(journalled["result_file"]).write_text("done")
    assert disk.write_sidecar(journalled["id"], journalled)
    # A sidecar whose result file is gone, and a re-run of c that died mid-run.
    gone = {**journalled, "id": "ffff000000000000", "result_file": str(disk.result_path("ffff"))}
    assert disk.write_sidecar("ffff000000000000", gone)
    assert disk.move_aside(c.id)
    Path(c.result_file).write_text("partial")
    # Claims: a live one on d (its file is being rewritten), and two stale ones.
    Path(d.result_file).unlink()
    claim(store, d.id, new_owner(), age=1)
    dead_owner = f"{HOST}~{dead_pid()}~~dead"
    claim(store, "dead000000000000", dead_owner, age=1)
    claim(store, "far0000000000000", "elsewhere.example~1~~far", age=3600)
    # The journal of a sweep killed before its batch commit: one finished run in it.
    in_journal = row_of({**POINTS[0], "n": 8})
    in_journal["result_file"] = str(disk.result_path(in_journal["id"]))
    Path(in_journal["result_file"]).write_text("journalled")
    journal = Journal(disk, dead_owner)
    assert journal.append(in_journal)
    journal.close()

    status, out, _ = run(capsys, cli(store, "check", "--json"))
    assert status == 1
    report = json.loads(out)
    problems = report["problems"]
    assert problems["missing_files"] == [{"id": a.id, "path": a.result_file}]
    assert problems["empty_files"] == [{"id": b.id, "path": b.result_file}]
    assert problems["orphan_files"] == [str(orphan)]
    assert problems["sidecars"] == [journalled["id"]]
    assert [s["id"] for s in problems["bad_sidecars"]] == ["ffff000000000000"]
    assert problems["kept_aside"] == [c.id]
    assert sorted(s["id"] for s in problems["stale_claims"]) == [
        "dead000000000000",
        "far0000000000000",
    ]
    assert report["in_progress"] == [d.id]
    assert [(Path(j["path"]).parent.name, j["runs"]) for j in problems["journals"]] == [
        ("journal", 1)
    ]

    status, out, _ = run(capsys, cli(store, "check"))
    assert status == 1
    assert "9 problem(s)" in out
    for kind in ("missing file", "empty file", "orphan file", "sidecar", "bad sidecar"):
        assert f"\n{kind} " in out
    assert "kept aside" in out
    assert "stale claim" in out
    assert "\njournal " in out
    assert "1 run(s) in progress" in out

    status, out, _ = run(capsys, cli(store, "check", "--repair"))
    assert status == 1  # the missing, empty and orphan files need a person (or --prune)
    assert "repaired: sidecars ingested: 1" in out
    assert "repaired: journal runs ingested: 1" in out
    assert store.retrieve({"id": journalled["id"]}) is not None
    assert store.retrieve({"id": in_journal["id"]}) is not None
    assert disk.list_journals() == []
    assert disk.list_sidecars() == []
    assert Path(c.result_file).read_text() == "y" * 11  # the old result is back
    assert disk.list_aside() == []
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(CLAIMS.c.id)).scalars().all() == [d.id]
    assert store.count(id=a.id) == 1

    status, out, _ = run(capsys, cli(store, "check", "--repair", "--prune", "--json"))
    assert status == 1
    report = json.loads(out)
    assert report["repaired"] == {"rows_pruned": [a.id]}
    assert store.count(id=a.id) == 0
    assert report["problems"]["empty_files"] == [{"id": b.id, "path": b.result_file}]
    assert report["problems"]["orphan_files"] == [str(orphan)]

    orphan.unlink()
    Path(b.result_file).write_text("fixed")
    status, out, _ = run(capsys, cli(store, "check"))
    assert status == 0, out
    assert orphan.parent.exists()


def test_check_never_touches_files_outside_results_dir(
    store: Store[Wave], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    outside = tmp_path / "elsewhere.txt"
    outside.write_text("mine")
    store.register({"K": 1.0, "n": 1, "method": "x", "stiff": None}, outside)
    status, _, _ = run(capsys, cli(store, "check", "--repair", "--prune"))
    assert status == 0
    assert outside.read_text() == "mine"


def test_check_through_a_symlinked_results_dir(
    store: Store[Wave], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    link = tmp_path / "link"
    link.symlink_to(store.results_dir, target_is_directory=True)
    status, out, _ = run(capsys, ["check", "--db", _url(store), "--results", str(link)])
    assert status == 0, out
    (store.results_dir / "stray.txt").write_text("no row")
    status, out, _ = run(capsys, ["check", "--db", _url(store), "--results", str(link)])
    assert status == 1
    assert "orphan file" in out
    assert "stray.txt" in out


# -- choosing the table, and errors --------------------------------------------------------


def test_several_tables_need_table(
    store: Store[Wave], capsys: pytest.CaptureFixture[str], shared_db_url: str
) -> None:
    with Store(write, Other, store.results_dir.parent / "other", ".txt", shared_db_url):
        pass
    # results_dir says which table it belongs to...
    status, out, _ = run(capsys, cli(store, "ls"))
    assert status == 0
    assert len(out.splitlines()) == 5
    # ...and without it the table must be named.
    status, _, err = run(capsys, ["ls", "--db", _url(store), "--results", "nowhere"])
    assert status == 2
    assert "holds several store tables (other, wave); pick one with --table" in one_line_error(err)
    status, out, _ = run(capsys, cli(store, "ls", "--table", "wave"))
    assert status == 0
    assert len(out.splitlines()) == 5
    status, _, err = run(capsys, cli(store, "info", "--table", "nope"))
    assert status == 2
    assert "no table 'nope'" in one_line_error(err)
    status, _, err = run(capsys, cli(store, "info", "--table", "entropic_claims"))
    assert status == 2
    assert "is not an entropic store" in one_line_error(err)


def test_unreachable_database_is_one_line_without_the_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = "postgresql+psycopg://alice:s3cret-pw@127.0.0.1:1/nothing"
    status, out, err = run(capsys, ["info", "--db", url])
    assert status == 2
    assert out == ""
    assert "cannot open database postgresql+psycopg://alice:***@127.0.0.1:1/nothing" in err
    assert "s3cret-pw" not in one_line_error(err)


def test_missing_sqlite_file_is_an_error_and_is_not_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = run(capsys, ["ls", "--db", f"sqlite:///{tmp_path / 'none.db'}"])
    assert status == 2
    assert "no SQLite database at" in one_line_error(err)
    assert not (tmp_path / "none.db").exists()
    status, _, err = run(capsys, ["ls", "--db", "not a url"])
    assert status == 2
    assert "--db is not a SQLAlchemy database URL" in one_line_error(err)


def test_check_argument_errors(store: Store[Wave], capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(capsys, cli(store, "check", "--prune"))
    assert status == 2
    assert "--prune only works with --repair" in one_line_error(err)
    status, _, err = run(
        capsys, ["check", "--db", _url(store), "--results", str(store.results_dir / "nope")]
    )
    assert status == 2
    assert "is not a folder" in one_line_error(err)


def test_python_dash_m_entropic_runs_the_store_commands(store: Store[Wave]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "entropic", *cli(store, "ls", "--where", "n=10")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 2
    assert "100.0" in result.stdout

"""Nothing lost: processes killed mid-run (os._exit in a subprocess), then a new Store opens.

The child processes import this module and run ``child``; the test then opens a
new Store over the same results_dir and database and checks what it holds.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import entropic
from conftest import pg_database
from entropic import Base, Mapped, Store, hash_params
from entropic.cli import main as entropic_cli

KILLED = 17


class Recovered(Base):
    __tablename__ = "recovery_result"

    n: Mapped[int]


def runner(params: dict[str, Any]) -> None:
    """Write "<version>:<n>"; with ENTROPIC_TEST_DIE_AT=n, write half a file for n and die."""
    version = os.environ.get("ENTROPIC_TEST_VERSION", "v1")
    params["custom_data"]["reported"] = f"{version}:{params['n']}"
    path = Path(params["result_file"])
    if str(params["n"]) == os.environ.get("ENTROPIC_TEST_DIE_AT"):
        if not os.environ.get("ENTROPIC_TEST_DIE_CLEAN"):
            path.write_text(f"{version}-partial")
        os._exit(KILLED)
    path.write_text(f"{version}:{params['n']}")


def child(results_dir: str, db_url: str, mode: str, points: str) -> None:
    """Run points in a fresh process; ``mode`` says where the process dies.

    ``normal`` and ``die-before-commit`` call ``run`` for each point (a sidecar
    per run); ``sweep`` and ``sweep-die-before-commit`` sweep them (a journal).
    """
    store = Store(runner, Recovered, results_dir=results_dir, file_suffix=".txt", db_url=db_url)
    if mode.endswith("die-before-commit"):
        # The runner finished and its row is journalled; die before the database write.
        def die(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            if statement.lstrip().upper().startswith("INSERT INTO RECOVERY_RESULT"):
                os._exit(KILLED)

        sa.event.listen(store.engine, "before_cursor_execute", die)
    if mode.startswith("sweep"):
        store.sweep([{"n": int(n)} for n in points.split(",")])
    else:
        for n in points.split(","):
            store.run({"n": int(n)})
    store.close()


def _spawn(results_dir: Path, db_url: str, mode: str, points: str, **env: str) -> int:
    package_root = str(Path(entropic.__file__).resolve().parent.parent)
    environ = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([package_root, os.environ.get("PYTHONPATH", "")]),
        **env,
    }
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import test_recovery; "
        "test_recovery.child(*sys.argv[2:])"
    )
    here = str(Path(__file__).resolve().parent)
    done = subprocess.run(
        [sys.executable, "-c", code, here, str(results_dir), db_url, mode, points],
        env=environ,
        timeout=120,
        capture_output=True,
        text=True,
    )
    assert done.returncode in (0, KILLED), done.stderr
    return done.returncode


class Counting:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, params: dict[str, Any]) -> None:
        self.calls += 1
        runner(params)


@pytest.fixture
def results(tmp_path: Path) -> Path:
    return tmp_path / "results"


def _open(results: Path, db_url: str, run: Any = None) -> Store[Recovered]:
    return Store(
        run or Counting(), Recovered, results_dir=results, file_suffix=".txt", db_url=db_url
    )


def _raw_ids(db_url: str) -> set[str]:
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            return set(conn.scalars(sa.select(Recovered.__table__.c.id)))
    finally:
        engine.dispose()


def _leftovers(results: Path) -> list[str]:
    meta = results / ".entropic"
    # store.json names the table the folder belongs to: it is no leftover.
    return sorted(
        str(p.relative_to(meta)) for p in meta.rglob("*") if p.is_file() and p.name != "store.json"
    )


@pytest.fixture
def store_factory(shared_db_url: str, results: Path) -> Iterator[Any]:
    opened: list[Store[Recovered]] = []

    def make(run: Any = None) -> Store[Recovered]:
        store = _open(results, shared_db_url, run)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


def test_killed_inside_a_runner_then_a_new_store_opens_cleanly(
    shared_db_url: str, results: Path, store_factory: Any
) -> None:
    code = _spawn(results, shared_db_url, "normal", "0,1,2,3,4", ENTROPIC_TEST_DIE_AT="3")
    assert code == KILLED
    counting = Counting()
    store = store_factory(counting)
    for n in range(3):  # the runs that finished before the kill are all there
        record = store.retrieve({"n": n})
        assert record is not None
        assert Path(record.result_file).read_text() == f"v1:{n}"
        assert record.custom_data["reported"] == f"v1:{n}"
    assert store.retrieve({"n": 3}) is None
    assert store.retrieve({"n": 4}) is None
    assert _leftovers(results) == []
    # The half-written file of the dead run is replaced when the point runs again.
    records = store.sweep([{"n": n} for n in range(5)])
    assert counting.calls == 2
    assert [Path(r.result_file).read_text() for r in records] == [f"v1:{n}" for n in range(5)]


def test_killed_between_the_runner_and_the_commit_loses_nothing(
    shared_db_url: str, results: Path, store_factory: Any
) -> None:
    code = _spawn(results, shared_db_url, "die-before-commit", "7")
    assert code == KILLED
    run_id = hash_params({"n": 7})
    assert run_id not in _raw_ids(shared_db_url)  # the database never saw the row...
    assert _leftovers(results) == [f"sidecars/{run_id}.json"]  # ...but the journal did
    counting = Counting()
    store = store_factory(counting)
    record = store.retrieve({"n": 7})
    assert record is not None
    assert Path(record.result_file).read_text() == "v1:7"
    assert record.custom_data["reported"] == "v1:7"
    assert isinstance(record.custom_data["elapsed_seconds"], float)
    assert _leftovers(results) == []
    assert store.run_or_retrieve({"n": 7}).id == run_id
    assert counting.calls == 0


def test_killed_rerun_puts_the_old_file_back(
    shared_db_url: str, results: Path, store_factory: Any
) -> None:
    first = store_factory()
    old = first.run({"n": 1})
    first.close()
    code = _spawn(
        results, shared_db_url, "normal", "1", ENTROPIC_TEST_DIE_AT="1", ENTROPIC_TEST_VERSION="v2"
    )
    assert code == KILLED
    assert Path(old.result_file).read_text() == "v2-partial"  # what the dead run left
    assert _leftovers(results) == [f"aside/{old.id}"]
    store = store_factory()
    record = store.retrieve({"n": 1})
    assert record is not None
    assert (record.created_at, record.custom_data) == (old.created_at, old.custom_data)
    assert Path(record.result_file).read_text() == "v1:1"
    assert _leftovers(results) == []


def test_killed_rerun_after_its_journal_keeps_the_new_result(
    shared_db_url: str, results: Path, store_factory: Any
) -> None:
    first = store_factory()
    old = first.run({"n": 2})
    first.close()
    code = _spawn(results, shared_db_url, "die-before-commit", "2", ENTROPIC_TEST_VERSION="v2")
    assert code == KILLED
    store = store_factory()
    record = store.retrieve({"n": 2})
    assert record is not None
    assert record.custom_data["reported"] == "v2:2"
    assert record.created_at > old.created_at
    assert Path(record.result_file).read_text() == "v2:2"
    assert _leftovers(results) == []


def test_a_journalled_run_whose_file_is_gone_is_dropped(
    shared_db_url: str, results: Path, store_factory: Any
) -> None:
    assert _spawn(results, shared_db_url, "die-before-commit", "3") == KILLED
    (results / f"{hash_params({'n': 3})}.txt").unlink()
    store = store_factory()
    assert store.retrieve({"n": 3}) is None  # never a row without its file
    assert _leftovers(results) == []


def test_half_written_sidecars_are_cleared(shared_db_url: str, results: Path) -> None:
    # What a process killed while writing a sidecar leaves: a temp file, never a sidecar.
    with _open(results, shared_db_url) as store:
        store.run({"n": 1})
    tmp = results / ".entropic" / "tmp" / "abc.123.tmp"
    tmp.write_text('{"entropic_sidecar": 1, "id": "ab')
    hour_ago = time.time() - 3600
    os.utime(tmp, (hour_ago, hour_ago))
    with _open(results, shared_db_url) as store:
        assert not tmp.exists()
        assert store.retrieve({"n": 1}) is not None


def test_a_sidecar_being_written_now_is_left_alone(shared_db_url: str, results: Path) -> None:
    # Another process is writing this very file: a new Store must not pull it from under it.
    with _open(results, shared_db_url):
        pass
    tmp = results / ".entropic" / "tmp" / "abc.123.tmp"
    tmp.write_text('{"entropic_sidecar": 1, "id": "ab')
    with _open(results, shared_db_url):
        assert tmp.exists()


def test_failed_rerun_that_overwrote_its_file_in_place_keeps_the_old_file(
    db_url: str, results: Path
) -> None:
    fail = False

    def overwrite_then_fail(params: dict[str, Any]) -> None:
        if not fail:
            return runner(params)
        Path(params["result_file"]).write_text("garbage")
        raise ValueError("bad input file")

    with _open(results, db_url, overwrite_then_fail) as store:
        old = store.run({"n": 5})
        fail = True
        with pytest.raises(ValueError, match="bad input file"):
            store.run({"n": 5})
        record = store.retrieve({"n": 5})
        assert record is not None
        assert Path(record.result_file).read_text() == "v1:5"
        assert (record.custom_data, record.created_at) == (old.custom_data, old.created_at)
        assert _leftovers(results) == []


def test_failed_run_after_a_killed_first_run_leaves_no_partial_file(
    shared_db_url: str, results: Path, store_factory: Any
) -> None:
    assert _spawn(results, shared_db_url, "normal", "4", ENTROPIC_TEST_DIE_AT="4") == KILLED
    partial = results / f"{hash_params({'n': 4})}.txt"
    assert partial.read_text() == "v1-partial"

    def fails(params: dict[str, Any]) -> None:
        raise RuntimeError("no luck")

    store = store_factory(fails)
    with pytest.raises(RuntimeError, match="no luck"):
        store.run({"n": 4})
    assert not partial.exists()  # the dead run's leftover is not "an earlier result"
    assert store.retrieve({"n": 4}) is None


# -- one recovery: `entropic check`, `check --repair` and a new Store agree -------------------

#: Each way recovery knows a store can be left, and the finding `check --json` reports it as.
DAMAGE = {
    "journal of a dead sweep": "journals",
    "stale claims": "stale_claims",
    "kept-aside file": "kept_aside",
    "sidecar": "sidecars",
    "orphan file": "orphan_files",
    "missing file": "missing_files",
}


def _damage(results: Path, db_url: str, kind: str) -> None:
    """Four indexed runs, then the damage ``kind`` by a killed process or by hand."""
    with _open(results, db_url) as store:
        store.sweep([{"n": n} for n in range(4)])
    die_clean = {"ENTROPIC_TEST_DIE_CLEAN": "1"}  # killed before writing anything
    if kind == "journal of a dead sweep":
        assert _spawn(results, db_url, "sweep-die-before-commit", "4,5") == KILLED
    elif kind == "stale claims":
        assert (
            _spawn(results, db_url, "sweep", "4,5", ENTROPIC_TEST_DIE_AT="4", **die_clean) == KILLED
        )
    elif kind == "kept-aside file":
        assert (
            _spawn(results, db_url, "normal", "1", ENTROPIC_TEST_DIE_AT="1", **die_clean) == KILLED
        )
    elif kind == "sidecar":
        assert _spawn(results, db_url, "die-before-commit", "4") == KILLED
    elif kind == "orphan file":
        (results / "stray.txt").write_text("no run wrote this")
    elif kind == "missing file":
        (results / f"{hash_params({'n': 2})}.txt").unlink()


def _check(capsys: pytest.CaptureFixture[str], results: Path, db_url: str, *flags: str) -> Any:
    """``entropic check --json [flags]``: (exit status, report with results_dir as <results>)."""
    capsys.readouterr()
    code = entropic_cli(["check", "--db", db_url, "--results", str(results), "--json", *flags])
    out = capsys.readouterr().out.replace(str(results), "<results>")
    report = json.loads(_OWNER.sub("<owner>", out))
    report.pop("repaired")
    # Which process held a claim, and when it beat, differs between two copies.
    problems = report["problems"]
    problems["stale_claims"] = sorted(claim["id"] for claim in problems["stale_claims"])
    return code, report


#: An owner token (host~pid~start~random), in journal names: one per process.
_OWNER = re.compile(r"[^/\"~]+~[0-9]+~[0-9]*~[0-9a-f]{8}")


def _state(results: Path, db_url: str) -> dict[str, Any]:
    """What a user sees: the rows, the result files, entropic's leftovers, the claims."""
    engine = sa.create_engine(db_url)
    table = Recovered.__table__
    try:
        with engine.connect() as conn:
            rows = {
                r.id: (r.n, Path(r.result_file).name, r.custom_data.get("reported"))
                for r in conn.execute(sa.select(table))
            }
            claims = conn.scalar(sa.text("SELECT count(*) FROM entropic_claims"))
    finally:
        engine.dispose()
    files = {p.name: p.read_text() for p in results.iterdir() if p.is_file()}
    leftovers = [_OWNER.sub("<owner>", name) for name in _leftovers(results)]
    return {"rows": rows, "files": files, "leftovers": leftovers, "claims": claims}


@pytest.fixture
def two_stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[tuple[Path, str]]]:
    """Two empty stores (results_dir, db_url) on the same kind of database."""
    if request.param == "sqlite-file":
        yield [(tmp_path / f"r{i}", f"sqlite:///{tmp_path / f'db{i}.sqlite3'}") for i in (0, 1)]
        return
    first, second = pg_database(), pg_database()
    try:
        yield [(tmp_path / "r0", next(first)), (tmp_path / "r1", next(second))]
    finally:
        for database in (first, second):
            next(database, None)


@pytest.mark.parametrize("two_stores", ["sqlite-file", "postgresql"], indirect=True)
@pytest.mark.parametrize("kind", list(DAMAGE))
def test_check_repair_and_a_new_store_agree(
    kind: str, two_stores: list[tuple[Path, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    (by_hand, by_hand_db), (by_store, by_store_db) = two_stores
    _damage(by_hand, by_hand_db, kind)
    _damage(by_store, by_store_db, kind)
    assert _state(by_hand, by_hand_db) == _state(by_store, by_store_db)

    # `check` finds the damage and changes nothing.
    before = _state(by_hand, by_hand_db)
    code, found = _check(capsys, by_hand, by_hand_db)
    assert code == 1
    assert found["problems"][DAMAGE[kind]], found
    assert _state(by_hand, by_hand_db) == before
    assert _check(capsys, by_store, by_store_db) == (code, found)

    # `check --repair` on one copy, a new Store on the other: the same store results.
    _check(capsys, by_hand, by_hand_db, "--repair")
    _open(by_store, by_store_db).close()
    assert _state(by_hand, by_hand_db) == _state(by_store, by_store_db)
    after = _check(capsys, by_hand, by_hand_db)
    assert after == _check(capsys, by_store, by_store_db)
    # What recovery can finish, it finished; a row without its file and a file without
    # a row need the user (--prune, or deleting the file): both paths leave them.
    leaves = {"orphan file": "orphan_files", "missing file": "missing_files"}
    remaining = {key for key, value in after[1]["problems"].items() if value}
    assert remaining == ({leaves[kind]} if kind in leaves else set())

"""Confinement: nothing written or deleted outside results_dir, and no password ever shown.

Every test builds a sandbox: results_dir, a neighbour folder beside it full of
files that look like results (same names, same suffix), symlinks from
results_dir into the neighbour, and the database in its own folder. Whatever
the Store is asked to do, everything but results_dir and the database is
byte-for-byte what it was.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import pickle
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import conftest
from entropic import Store, SweepError, hash_params
from entropic.cli import main as cli_main

from ._support import Rel, checked_runner, read_checked, tree


class Sandbox:
    """A results_dir with a neighbour folder of look-alike files and links into it."""

    def __init__(self, root: Path, db_url: str) -> None:
        self.root = root
        self.results = root / "area" / "results"
        self.neighbour = root / "area" / "neighbour"
        self.neighbour.mkdir(parents=True)
        self.db_url = db_url
        self.victim = self.neighbour / "victim.txt"
        self.victim.write_text("precious")
        for n in range(4):  # files named exactly as results of the points used below
            (self.neighbour / f"{hash_params({'n': n})}.txt").write_text(f"not yours {n}")
        (self.neighbour / "sub").mkdir()
        (self.neighbour / "sub" / "deep.txt").write_text("deep")

    def store(self, runner: Any = checked_runner, **kwargs: Any) -> Store[Rel]:
        kwargs.setdefault("results_dir", self.results)
        return Store(runner, Rel, file_suffix=".txt", db_url=self.db_url, **kwargs)

    def outside(self) -> dict[str, tuple[str, int, str]]:
        """Everything under the sandbox but results_dir and the database's own files."""
        return tree(self.root, skip=(self.results, self.root / "db"))


@pytest.fixture
def box(shared_db_url: str, tmp_path: Path) -> Sandbox:
    return Sandbox(tmp_path / "box", shared_db_url)


def test_every_operation_stays_inside_results_dir(box: Sandbox) -> None:
    cwd_before = tree(Path.cwd())
    with box.store() as store:
        before = box.outside()
        store.run({"n": 0})
        store.run({"n": 0})  # a re-run: the old file is kept aside inside results_dir
        store.run_or_retrieve({"n": 1})
        store.sweep([{"n": n} for n in range(4)])
        external = box.neighbour / "sub" / "deep.txt"
        store.register({"n": 5}, external)
        with pytest.raises(ValueError, match="outside results_dir"):
            store.delete({"n": 5}, remove_file=True)
        assert store.delete({"n": 0}, remove_file=True)
        assert store.delete({"n": 1})
        store.delete({"n": 2}, remove_file=True)
        store.delete({"n": 42}, remove_file=True)  # no row: nothing at all
    with box.store() as again:  # a new Store runs recovery over the folder
        again.sweep([{"n": n} for n in range(6)])
    assert box.outside() == before
    assert tree(Path.cwd()) == cwd_before
    assert external.read_text() == "deep"


def test_a_result_path_that_is_a_symlink_out_is_replaced_not_followed(box: Sandbox) -> None:
    with box.store() as store:
        before = box.outside()
        # Someone put links where results of never-run points will go.
        box.results.mkdir(exist_ok=True)
        for n in range(3):
            (box.results / f"{hash_params({'n': n})}.txt").symlink_to(box.victim)
        (box.results / "mine.txt").symlink_to(box.victim)
        store.run({"n": 0})
        store.run_or_retrieve({"n": 1})
        store.sweep([{"n": 2}])
        store.run({"id": "mine", "n": 3})
        for n in range(3):
            path = box.results / f"{hash_params({'n': n})}.txt"
            assert not path.is_symlink()
            assert read_checked(path) is not None
    assert box.outside() == before
    assert box.victim.read_text() == "precious"


def test_a_rows_file_swapped_for_a_symlink_out_is_never_written_or_deleted_through(
    box: Sandbox,
) -> None:
    class Failing:
        def __call__(self, params: dict[str, Any]) -> None:
            Path(params["result_file"]).write_text("half")
            raise RuntimeError("dies mid-run")

    with box.store() as store:
        record = store.run({"n": 0})
        path = Path(record.result_file)
        path.unlink()
        path.symlink_to(box.victim)  # the row's file now points outside
        before = box.outside()
        with box.store(Failing()) as failing, pytest.raises(RuntimeError, match="mid-run"):
            failing.run({"n": 0})  # the old "file" (the link) is kept aside and put back
        assert path.is_symlink()
        store.run({"n": 0})  # a re-run replaces the link with a real file
        assert not path.is_symlink()
        path.unlink()
        path.symlink_to(box.victim)
        with pytest.raises(ValueError, match="outside results_dir"):
            store.delete({"n": 0}, remove_file=True)
        assert store.retrieve({"n": 0}) is not None  # refused before the row went
    assert box.outside() == before
    assert box.victim.read_text() == "precious"


def test_results_dir_reached_through_a_symlink_or_dotdot(box: Sandbox) -> None:
    real = box.root / "area" / "real-results"
    real.mkdir()
    link = box.root / "area" / "link-results"
    link.symlink_to(real, target_is_directory=True)
    dotted = box.root / "area" / "neighbour" / ".." / "dotted"
    with box.store(results_dir=link) as via_link, box.store(results_dir=dotted) as via_dots:
        before = tree(box.root, skip=(real, box.root / "area" / "dotted", box.root / "db"))
        a = via_link.run({"n": 0})
        b = via_dots.run({"n": 1})
        assert via_link.delete({"n": 0}, remove_file=True)
        assert via_dots.delete({"n": 1}, remove_file=True)
        assert not Path(a.result_file).exists()
        assert not Path(b.result_file).exists()
        assert ".." not in b.result_file
    after = tree(box.root, skip=(real, box.root / "area" / "dotted", box.root / "db"))
    assert after == before


@pytest.mark.parametrize(
    "bad_id", ["..", "../victim", "../neighbour/victim", "a/../../victim", "/tmp/x", ".entropic"]
)
def test_dotdot_and_absolute_ids_touch_nothing(box: Sandbox, bad_id: str) -> None:
    with box.store() as store:
        store.run({"n": 0})
        before = box.outside(), tree(box.results)
        for act in (
            lambda: store.run({"id": bad_id, "n": 1}),
            lambda: store.sweep([{"n": 2}, {"id": bad_id, "n": 1}]),
            lambda: store.register({"id": bad_id, "n": 1}, box.victim),
            lambda: store.delete({"id": bad_id}, remove_file=True),
            lambda: store.retrieve({"id": bad_id}),
        ):
            with pytest.raises(ValueError, match=r"params\['id'\]"):
                act()
        assert (box.outside(), tree(box.results)) == before


# -- passwords -------------------------------------------------------------------------------

SECRET = "s3cr3t-Pa55w0rd"


@pytest.fixture
def pg_url_with_password() -> Iterator[str]:
    """A real PostgreSQL database whose URL carries a password (the test server trusts)."""
    for url in conftest.pg_database():
        yield sa.make_url(url).set(password=SECRET).render_as_string(hide_password=False)


def flaky(params: dict[str, Any]) -> None:
    """The checksummed runner, failing for n == 3."""
    if params["n"] == 3:
        raise RuntimeError("bad point")
    checked_runner(params)


def _no_secret(*texts: object) -> None:
    for text in texts:
        assert SECRET not in str(text)


def test_password_in_db_url_never_shows(
    pg_url_with_password: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, SQLAlchemy's engine and pool included
    logging.getLogger("sqlalchemy.engine").setLevel(logging.DEBUG)
    logging.getLogger("sqlalchemy.pool").setLevel(logging.DEBUG)
    url = pg_url_with_password
    seen: list[object] = []
    try:
        with Store(flaky, Rel, results_dir=tmp_path / "r", db_url=url) as store:
            seen += [repr(store), str(store), store.db_url, store.engine.url, repr(store.engine)]
            record = store.run({"n": 1})
            seen += [repr(record), record.custom_data]
            with pytest.raises(SweepError) as failed:
                store.sweep([{"n": n} for n in range(5)])
            seen += [failed.value, "".join(traceback.format_exception(failed.value))]
            seen += [repr(f) for f in store.failures()]
            # The password travels only inside a pickle (a worker must reconnect) ...
            assert SECRET.encode() in pickle.dumps(store)
            # ... and an unpickled Store keeps it out of its repr too.
            clone = pickle.loads(pickle.dumps(store))
            seen += [repr(clone), clone.db_url]
            clone.close()
        for bad in (
            sa.make_url(url).set(port=1),  # nothing listens
            sa.make_url(url).set(database="no_such_database"),
            sa.make_url(url).set(drivername="postgresql+nodriver"),
        ):
            with pytest.raises(Exception) as info:  # noqa: PT011 - the message is what counts
                Store(flaky, Rel, results_dir=tmp_path / "r2", db_url=bad.render_as_string(False))
            seen += [info.value, "".join(traceback.format_exception(info.value))]
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            for argv in (
                ["info", "--db", url, "--results", str(tmp_path / "r")],
                ["ls", "--db", url, "--results", str(tmp_path / "r")],
                ["failures", "--db", url, "--results", str(tmp_path / "r"), "--traceback"],
                ["info", "--db", sa.make_url(url).set(port=1).render_as_string(False)],
            ):
                with contextlib.suppress(SystemExit):
                    cli_main(argv)
        seen += [out.getvalue(), err.getvalue()]
        assert "rows      4" in out.getvalue()  # the commands really read the store
        assert "postgres:***@" in out.getvalue()
        assert "postgres:***@" in err.getvalue()
        assert "***" in str(seen[0])
    finally:
        logging.getLogger("sqlalchemy.engine").setLevel(logging.NOTSET)
        logging.getLogger("sqlalchemy.pool").setLevel(logging.NOTSET)
    assert any("sqlalchemy" in r.name for r in caplog.records)  # the DEBUG logs were captured
    _no_secret(*seen, caplog.text, *(r.getMessage() for r in caplog.records))
    _no_secret(*(os.environ.get(k, "") for k in ("PGPASSWORD",)))

"""`entropic export` and `entropic import` between real stores: SQLite files and PostgreSQL."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import String

from conftest import pg_database
from entropic import Base, Mapped, Store, mapped_column
from entropic.cli import main


class Wave(Base):
    __tablename__ = "cli_archive_wave"

    K: Mapped[float]
    n: Mapped[int]
    method: Mapped[str] = mapped_column(String(16))
    stiff: Mapped[bool | None]


class Other(Base):
    __tablename__ = "cli_archive_other"

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


@pytest.fixture(params=["sqlite", "postgresql"])
def url_a(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'a.sqlite3'}"
    else:
        yield from pg_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def url_b(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'b.sqlite3'}"
    else:
        yield from pg_database()


def filled(url: str, folder: Path) -> Store[Wave]:
    store = Store(write, Wave, folder, ".txt", url)
    for point in POINTS:
        store.run_or_retrieve(point)
    return store


def entropic(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def one_error(err: str, fragment: str) -> None:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("entropic: error: "), err
    assert fragment in lines[0], err


def rows(store: Store[Wave]) -> dict[str, tuple[Any, ...]]:
    return {
        r.id: (
            r.K,
            r.n,
            r.method,
            r.stiff,
            r.created_at,
            dict(r.custom_data),
            Path(r.result_file).read_bytes(),
        )
        for r in store.find()
    }


def test_export_then_import_into_an_empty_database_both_ways(
    url_a: str, url_b: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The import creates the table (from the manifest) and the results folder."""
    with filled(url_a, tmp_path / "res_a") as source:
        expected = rows(source)
    archive = tmp_path / "a.tar.gz"
    status, out, err = entropic(
        capsys, "export", "--db", url_a, "--results", str(tmp_path / "res_a"), "--to", str(archive)
    )
    assert (status, err) == (0, "")
    assert f"exported 4 row(s) of cli_archive_wave to {archive}" in out

    res_b = tmp_path / "res_b"
    status, out, err = entropic(
        capsys, "import", str(archive), "--db", url_b, "--results", str(res_b), "--json"
    )
    assert (status, err) == (0, "")
    report = json.loads(out)
    assert sorted(report["inserted"]) == sorted(expected)
    assert report["table"] == "cli_archive_wave"
    assert report["replaced"] == report["kept"] == report["busy"] == []

    with Store(write, Wave, res_b, ".txt", url_b) as target:
        assert rows(target) == expected
        for point in POINTS:
            assert target.retrieve(point) is not None
    status, out, _ = entropic(capsys, "check", "--db", url_b, "--results", str(res_b))
    assert status == 0, out

    # Again: every row is as new in the target, nothing changes.
    status, out, err = entropic(
        capsys, "import", str(archive), "--db", url_b, "--results", str(res_b)
    )
    assert (status, err) == (0, "")
    assert "0 new, 0 replaced (older here), 4 kept" in out


def test_export_where_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'a.sqlite3'}"
    filled(url, tmp_path / "res").close()
    status, out, err = entropic(
        capsys,
        "export", "--db", url, "--results", str(tmp_path / "res"),
        "--to", str(tmp_path / "rk4.tar"), "--where", "method=rk4", "--json",
    )  # fmt: skip
    assert (status, err) == (0, "")
    report = json.loads(out)
    assert report["rows"] == 2
    with tarfile.open(tmp_path / "rk4.tar") as tar:
        names = tar.getnames()
    assert names[0] == "rows.jsonl"
    assert names[-1] == "manifest.json"
    assert len([n for n in names if n.startswith("files/")]) == 2


def test_errors_are_one_line_and_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'a.sqlite3'}"
    res = str(tmp_path / "res")
    filled(url, tmp_path / "res").close()
    archive = tmp_path / "a.tar"
    assert entropic(capsys, "export", "--db", url, "--results", res, "--to", str(archive))[0] == 0

    status, _, err = entropic(capsys, "export", "--db", url, "--results", res, "--to", str(archive))
    assert status == 2
    one_error(err, "exists; remove it or give another path")

    missing_db = f"sqlite:///{tmp_path / 'nope.sqlite3'}"
    status, _, err = entropic(capsys, "export", "--db", missing_db, "--to", str(tmp_path / "x.tar"))
    assert status == 2
    one_error(err, "no SQLite database at")

    status, _, err = entropic(capsys, "import", str(tmp_path / "nowhere.tar"), "--db", url)
    assert status == 2
    one_error(err, "no archive at")

    # A damaged archive: nothing is created, neither the database file nor the folder.
    damaged = tmp_path / "damaged.tar"
    with tarfile.open(archive) as tar, tarfile.open(damaged, "w") as out:
        for member in tar.getmembers():
            data = tar.extractfile(member)
            assert data is not None
            blob = data.read()
            if member.name.startswith("files/"):
                blob = blob[:-1] + b"z"
            out.addfile(member, io.BytesIO(blob))
    new_db = tmp_path / "new.sqlite3"
    status, _, err = entropic(
        capsys,
        "import",
        str(damaged),
        "--db",
        f"sqlite:///{new_db}",
        "--results",
        str(tmp_path / "new"),
    )
    assert status == 2
    one_error(err, "does not match its SHA-256 in the manifest")
    assert not new_db.exists()
    assert not (tmp_path / "new").exists()

    # A results folder that holds another table's files.
    with Store(write, Other, tmp_path / "other", ".txt", f"sqlite:///{tmp_path / 'o.sqlite3'}"):
        pass
    status, _, err = entropic(
        capsys,
        "import",
        str(archive),
        "--db",
        f"sqlite:///{new_db}",
        "--results",
        str(tmp_path / "other"),
    )
    assert status == 2
    one_error(err, "holds the result files of table 'cli_archive_other', not 'cli_archive_wave'")
    assert not new_db.exists()

    # A table of another model in the database: the archive does not fit it.
    status, _, err = entropic(
        capsys,
        "import", str(archive), "--db", f"sqlite:///{tmp_path / 'o.sqlite3'}",
        "--table", "cli_archive_other", "--results", str(tmp_path / "other"),
    )  # fmt: skip
    assert status == 2
    one_error(err, "that the table lacks")


def test_explicit_ids_need_the_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'a.sqlite3'}"
    with filled(url, tmp_path / "res") as store:
        outside = tmp_path / "made-elsewhere.txt"
        outside.write_text("external")
        store.register({**POINTS[0], "id": "reference"}, outside)
    archive = tmp_path / "a.tar"
    status, out, _ = entropic(
        capsys, "export", "--db", url, "--results", str(tmp_path / "res"), "--to", str(archive)
    )
    assert status == 0
    assert "1 row(s) have an explicit id" in out
    target = ["--db", f"sqlite:///{tmp_path / 'b.sqlite3'}", "--results", str(tmp_path / "b")]
    status, _, err = entropic(capsys, "import", str(archive), *target)
    assert status == 2
    one_error(err, "--explicit-ids")
    assert not (tmp_path / "b.sqlite3").exists()
    status, out, err = entropic(capsys, "import", str(archive), *target, "--explicit-ids")
    assert (status, err) == (0, "")
    assert "5 new" in out
    assert (tmp_path / "b" / "reference.txt").read_text() == "external"


def test_the_installed_command_exits_2_on_a_refused_archive(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tar"
    with tarfile.open(bad, "w") as tar:
        info = tarfile.TarInfo("../../etc/evil")
        tar.addfile(info, io.BytesIO(b""))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "entropic",
            "import",
            str(bad),
            "--db",
            f"sqlite:///{tmp_path / 'x.db'}",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 2
    one_error(result.stderr, "is a path out of the archive")
    assert result.stdout == ""
    assert not (tmp_path / "x.db").exists()

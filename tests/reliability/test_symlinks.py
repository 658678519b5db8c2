"""Symlinks in ``results_dir/.entropic``: never followed, whatever Store, check or repair does.

Each case puts a symlink pointing outside results_dir where entropic keeps its
own files: one of its folders (``tmp``, ``aside``, ``journal``, ``sidecars``,
``quarantine``), ``.entropic`` itself, or a file inside a real folder (a sidecar,
a journal, a kept-aside file, a half-written file, a quarantined entry,
``store.json``). Outside, the link's target holds bait: exactly what entropic
acts on if it followed the link (a finished sidecar and a dead sweep's journal
it would index and remove, an old result it would move back, a stale
half-written file it would delete, another table's store.json it would obey).
``entropic check``, ``check --repair``, a new Store and a sweep must leave the
outside folder exactly as it was (every entry's kind, size, content and mtime),
must not index the bait, and must report the link (check) or quarantine it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from entropic import Store, hash_params
from entropic._storage.codec import encode_line, encode_sidecar
from entropic._storage.disk import META_DIR
from entropic._storage.owner import HOST
from entropic.cli import main as cli_main
from entropic.models import utcnow

from ._support import Rel, checked_runner, read_checked, rows, write_checked

X, Y, Z = (hash_params({"n": n}) for n in (10, 11, 12))  # bait sidecar, journal, aside
DEAD_OWNER = f"{HOST}~4999999~1~deadbeef"  # no such pid can be alive
JOURNAL = f"{DEAD_OWNER}.0.jsonl"
QUARANTINED = "20200101T000000.000000-0000-sidecars-bait.json"
FOLDER_CASES = ["tmp", "aside", "journal", "sidecars", "quarantine", META_DIR]
FILE_CASES = [
    "sidecars/X.json",
    f"journal/{JOURNAL}",
    "aside/Z",
    "tmp/old.tmp",
    f"quarantine/{QUARANTINED}",
    "store.json",
]


def snapshot(root: Path) -> dict[str, tuple[str, int, str, int]]:
    """Every entry under ``root``, itself included, never following a link: kind, size,
    content (or link target) and mtime."""
    found: dict[str, tuple[str, int, str, int]] = {}
    for folder, dirs, files in os.walk(root):
        for name in [".", *dirs, *files] if folder == str(root) else [*dirs, *files]:
            path = Path(folder, name)
            st = path.lstat()
            rel = str(path.relative_to(root))
            if path.is_symlink():
                found[rel] = ("link", 0, os.readlink(path), st.st_mtime_ns)
            elif path.is_dir():
                found[rel] = ("dir", 0, "", st.st_mtime_ns)
            else:
                found[rel] = ("file", st.st_size, path.read_bytes().hex(), st.st_mtime_ns)
    return found


def _row(run_id: str, n: int, results: Path) -> dict[str, Any]:
    return {
        "id": run_id,
        "n": n,
        "x": 0.0,
        "tag": None,
        "cfg": None,
        "result_file": str(results / f"{run_id}.txt"),
        "created_at": utcnow(),
        "custom_data": {"bait": True},
    }


def _bait(outside: Path, results: Path) -> None:
    """What entropic would act on, were it to follow a link into ``outside``."""
    for folder in ("sidecars", "journal", "aside", "tmp", "quarantine"):
        (outside / folder).mkdir(parents=True)
    sidecar = encode_sidecar(X, _row(X, 10, results))
    assert sidecar is not None
    (outside / "sidecars" / f"{X}.json").write_text(sidecar)
    line = encode_line(_row(Y, 11, results))
    assert line is not None
    (outside / "journal" / JOURNAL).write_bytes(line)
    write_checked(outside / "aside" / Z, f"{Z} n=12 the old result")
    old = outside / "tmp" / "old.tmp"
    old.write_text("half")
    stamp = time.time() - 7200  # stale: recovery deletes such files in its own tmp
    os.utime(old, (stamp, stamp))
    (outside / "quarantine" / QUARANTINED).write_text("quarantined elsewhere")
    (outside / "quarantine" / f"{QUARANTINED}.reason.json").write_text(
        json.dumps({"reason": "bait", "from": "sidecars", "id": X})
    )
    (outside / "store.json").write_text(json.dumps({"entropic_store": 1, "table": "not_yours"}))


def _plant(case: str, meta: Path, outside: Path) -> Path:
    """Put the case's symlink in place; return where it is."""
    if case == META_DIR:
        link = meta
        for child in sorted(meta.rglob("*"), reverse=True):
            child.rmdir() if child.is_dir() else child.unlink()
        meta.rmdir()
        link.symlink_to(outside, target_is_directory=True)
        return link
    if case in FOLDER_CASES:
        link = meta / case
        for child in link.iterdir():
            child.unlink()
        link.rmdir()
        link.symlink_to(outside / case, target_is_directory=True)
        return link
    relative = case.replace("X.json", f"{X}.json").replace("aside/Z", f"aside/{Z}")
    link = meta / relative
    if link.exists():
        link.unlink()
    link.symlink_to(outside / relative)
    if case.startswith("quarantine/"):
        reason = meta / f"{relative}.reason.json"
        reason.symlink_to(outside / f"{relative}.reason.json")
    return link


def _check(results: Path, db_url: str, *more: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli_main(["check", "--db", db_url, "--results", str(results), *more])
    assert status in (0, 1), err.getvalue()  # a report, never an error
    return status, out.getvalue()


def _open(results: Path, db_url: str) -> Store[Rel]:
    return Store(checked_runner, Rel, results_dir=results, file_suffix=".txt", db_url=db_url)


@pytest.mark.parametrize("case", FOLDER_CASES + FILE_CASES)
def test_a_symlink_in_entropics_folder_is_never_followed(
    shared_db_url: str, tmp_path: Path, case: str
) -> None:
    results = tmp_path / "area" / "results"
    outside = tmp_path / "area" / "outside"
    with _open(results, shared_db_url) as store:
        record = store.run({"n": 12})
        Path(record.result_file).unlink()  # a row without its file: a restore would fill it
        for n, run_id in ((10, X), (11, Y)):  # result files the bait rows point to
            write_checked(results / f"{run_id}.txt", f"{run_id} n={n}")
    meta = results / META_DIR
    bad = meta / "sidecars" / "0000000000000000.json"  # something for repair to quarantine
    bad.write_text("not a sidecar")
    _bait(outside, results)
    link = _plant(case, meta, outside)
    before = snapshot(outside)

    status, report = _check(results, shared_db_url)  # looks only
    assert snapshot(outside) == before
    assert status == 1
    assert link.name in report, report
    assert link.is_symlink()  # a look moves nothing

    status, report = _check(results, shared_db_url, "--repair")
    assert snapshot(outside) == before
    if case == "aside/Z":
        assert (results / f"{Z}.txt").is_symlink()  # a result may be a link: put back as one
    elif not case.startswith("quarantine/"):  # a link in the quarantine is reported, and stays
        assert not link.is_symlink()
    quarantine = meta / "quarantine"
    assert quarantine.is_dir()
    assert not quarantine.is_symlink()
    held = [p.name for p in quarantine.iterdir()]
    if case != "aside/Z":
        assert any(link.name in name for name in held), (held, report)
        assert link.name in report, report  # and reported, with the reason it was put there
        if not case.startswith("quarantine/"):  # (a planted reason link is not read)
            assert "no reason was recorded" not in report, report

    with _open(results, shared_db_url) as store:
        assert snapshot(outside) == before
        for folder in ("tmp", "aside", "journal", "sidecars", "quarantine"):
            assert (meta / folder).is_dir()
            assert not (meta / folder).is_symlink()
        held_rows = rows(store)
        assert X not in held_rows  # the bait sidecar was never indexed
        assert Y not in held_rows  # nor the bait journal
        assert all(row["custom_data"].get("bait") is None for row in held_rows.values())
        records = store.sweep([{"n": n} for n in range(10, 14)])
        assert all(read_checked(r.result_file) is not None for r in records)
        store.run({"n": 12})  # a re-run never writes through a link
        assert not Path(store.retrieve({"n": 12}).result_file).is_symlink()
        assert store.delete({"n": 10}, remove_file=True)
    assert snapshot(outside) == before

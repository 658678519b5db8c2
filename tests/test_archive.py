"""Archives through the Store: round trips between databases, every kind of damage, the merge."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import textwrap
import time
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import JSON, Date, DateTime, LargeBinary
from sqlalchemy.orm import mapped_column

from conftest import pg_database
from entropic import ArchiveError, Base, Mapped, Store, expand_grid
from entropic._storage.archive_import import apply_import, check_import
from entropic._storage.claims import Claims


class Rich(Base):
    """Columns of every kind an archive has to carry exactly."""

    __tablename__ = "archive_rich"

    n: Mapped[int]
    x: Mapped[float]
    label: Mapped[str]
    flag: Mapped[bool]
    when: Mapped[datetime] = mapped_column(DateTime(timezone=False))
    day: Mapped[date] = mapped_column(Date)
    cfg: Mapped[dict[str, Any]] = mapped_column(JSON)
    blob: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    note: Mapped[str | None] = mapped_column(nullable=True, default=None)


class Other(Base):
    """A model whose columns an archive of Rich does not fit."""

    __tablename__ = "archive_other"

    n: Mapped[int]
    extra: Mapped[str]


def write_result(params: dict[str, Any]) -> None:
    text = f"{params['n']} {params['x']!r} {params['label']}\n"
    Path(params["result_file"]).write_text(text * (1 + params["n"]), encoding="utf-8")
    params["custom_data"]["score"] = params["n"] * params["x"]
    params["custom_data"]["nested"] = {"list": [1, 2.5, None, "s"], "deep": {"ok": True}}


def points(labels: tuple[str, ...] = ("a", "é")) -> list[dict[str, Any]]:
    base = expand_grid({"n": [1, 2], "x": [0.1, 2.5], "label": list(labels)})
    for i, point in enumerate(base):
        point.update(
            flag=bool(i % 2),
            when=datetime(2024, 5, 1, 12, 30, 15, 123456) + timedelta(days=i),
            day=date(2024, 1, 1 + i),
            cfg={"solver": "rk4", "tol": [1e-6, 1e-9], "i": i},
            blob=bytes([i, 0, 255]) if i % 3 else None,
        )
    return points_with_note(base)


def points_with_note(base: list[dict[str, Any]]) -> list[dict[str, Any]]:
    base[0]["note"] = "first"
    return base


def params_of(record: Any) -> dict[str, Any]:
    """The params that were swept for ``record`` (note only where one was given)."""
    names = ("n", "x", "label", "flag", "when", "day", "cfg", "blob")
    params = {name: getattr(record, name) for name in names}
    if record.note is not None:
        params["note"] = record.note
    return params


def ident(store: Store[Any], params: dict[str, Any]) -> str:
    return store._core.identify(params)


def sqlite_url(tmp_path: Path, name: str) -> str:
    return f"sqlite:///{tmp_path / name}"


@pytest.fixture(params=["sqlite", "postgresql"])
def source_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield sqlite_url(tmp_path, "source.sqlite3")
    else:
        yield from pg_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def target_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield sqlite_url(tmp_path, "target.sqlite3")
    else:
        yield from pg_database()


OPEN: list[Store[Any]] = []


@pytest.fixture(autouse=True)
def _close_stores() -> Iterator[None]:
    """Close every store a test opened, so no connection is left to the garbage collector."""
    yield
    while OPEN:
        OPEN.pop().close()


def make_store(
    url: str, folder: Path, model: type[Base] = Rich, suffix: str = ".txt"
) -> Store[Any]:
    store = Store(write_result, model, results_dir=folder, file_suffix=suffix, db_url=url)
    OPEN.append(store)
    return store


def record_values(store: Store[Any]) -> dict[str, dict[str, Any]]:
    """Every record's columns (but result_file), with the type of each value."""
    found = {}
    for record in store.find():
        values = {
            name: (type(getattr(record, name)).__name__, getattr(record, name))
            for name in ("n", "x", "label", "flag", "when", "day", "cfg", "blob", "note")
        }
        values["created_at"] = ("datetime", record.created_at)
        values["custom_data"] = ("dict", dict(record.custom_data))
        found[record.id] = values
    return found


def file_bytes(store: Store[Any]) -> dict[str, bytes]:
    return {record.id: Path(record.result_file).read_bytes() for record in store.find()}


def snapshot(store: Store[Any]) -> dict[str, Any]:
    """Everything an import could change: every table's rows, every file under results_dir."""
    tables = {}
    with store.engine.connect() as conn:
        for name in sa.inspect(conn).get_table_names():
            table = sa.Table(name, sa.MetaData(), autoload_with=conn)
            rows = conn.execute(sa.select(table)).all()
            tables[name] = sorted(repr(tuple(row)) for row in rows)
    files = {}
    for path in sorted(store.results_dir.rglob("*")):
        rel = str(path.relative_to(store.results_dir))
        if path.is_symlink():
            files[rel] = ("link", os.readlink(path))
        elif path.is_file():
            files[rel] = ("file", hashlib.sha256(path.read_bytes()).hexdigest())
        else:
            files[rel] = ("dir", "")
    return {"tables": tables, "files": files}


# -- round trips ---------------------------------------------------------------------------


def test_round_trip_keeps_every_value_type_and_file(
    source_url: str, target_url: str, tmp_path: Path
) -> None:
    source = make_store(source_url, tmp_path / "src")
    target = make_store(target_url, tmp_path / "dst")
    source.sweep(points())
    archive = tmp_path / "sweep.tar"
    report = source.export(archive)
    assert report.rows == 8
    assert report.missing == []
    assert report.explicit == []

    imported = target.import_(archive)
    assert sorted(imported.inserted) == sorted(record_values(source))
    assert imported.replaced == imported.kept == imported.busy == []
    assert record_values(target) == record_values(source)
    assert file_bytes(target) == file_bytes(source)
    for record in target.find():
        assert Path(record.result_file) == target.results_dir / f"{record.id}.txt"
        # The same params are a cache hit in the target store: nothing would run.
        assert target.retrieve(params_of(record)) is not None

    # And on, into a third store: the same rows.
    again = tmp_path / "again.tar.gz"
    assert target.export(again).rows == 8
    third = make_store(sqlite_url(tmp_path, "third.sqlite3"), tmp_path / "third")
    third.import_(again)
    assert record_values(third) == record_values(source)


def test_a_filtered_export_holds_only_the_matching_rows(tmp_path: Path) -> None:
    source = make_store(sqlite_url(tmp_path, "s.sqlite3"), tmp_path / "src")
    source.sweep(points())
    report = source.export(tmp_path / "n1.tar.xz", n=1)
    assert report.rows == 4
    target = make_store(sqlite_url(tmp_path, "t.sqlite3"), tmp_path / "dst")
    target.import_(tmp_path / "n1.tar.xz")
    assert {record.n for record in target.find()} == {1}
    assert target.count() == 4


def test_export_never_overwrites_and_leaves_out_rows_without_files(tmp_path: Path) -> None:
    source = make_store(sqlite_url(tmp_path, "s.sqlite3"), tmp_path / "src")
    records = source.sweep(points())
    Path(records[0].result_file).unlink()
    archive = tmp_path / "a.tar"
    archive.write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match="never overwrites"):
        source.export(archive)
    assert archive.read_bytes() == b"keep me"
    report = source.export(tmp_path / "b.tar")
    assert report.missing == [records[0].id]
    assert report.rows == 7
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []


# -- ids -----------------------------------------------------------------------------------


def test_ids_the_params_did_not_hash_to_directly_are_recomputed(tmp_path: Path) -> None:
    """Params that left out a defaulted column, or gave an int for a float, still verify."""
    source = make_store(sqlite_url(tmp_path, "s.sqlite3"), tmp_path / "src")
    point = points()[1]
    assert "note" not in point
    source.run(point)  # note left out: hashed without it, stored as NULL
    source.run({**points()[2], "x": 3})  # an int for a float column, stored as 3.0
    report = source.export(tmp_path / "a.tar")
    assert report.explicit == []
    target = make_store(sqlite_url(tmp_path, "t.sqlite3"), tmp_path / "dst")
    assert len(target.import_(tmp_path / "a.tar").inserted) == 2
    assert target.retrieve({**points()[2], "x": 3}) is not None


def test_explicit_ids_are_imported_only_on_request(tmp_path: Path) -> None:
    source = make_store(sqlite_url(tmp_path, "s.sqlite3"), tmp_path / "src")
    source.sweep(points())
    external = tmp_path / "external.dat"
    external.write_bytes(b"made elsewhere")
    source.register({**points()[0], "id": "baseline"}, external)
    report = source.export(tmp_path / "a.tar")
    assert report.explicit == ["baseline"]

    target = make_store(sqlite_url(tmp_path, "t.sqlite3"), tmp_path / "dst")
    before = snapshot(target)
    with pytest.raises(ArchiveError, match=r"explicit_ids=True.*--explicit-ids"):
        target.import_(tmp_path / "a.tar")
    assert snapshot(target) == before
    done = target.import_(tmp_path / "a.tar", explicit_ids=True)
    assert "baseline" in done.inserted
    record = target.retrieve({"id": "baseline"})
    assert record is not None
    assert Path(record.result_file).read_bytes() == b"made elsewhere"
    assert Path(record.result_file).parent == target.results_dir


def test_an_explicit_id_naming_other_params_here_is_refused(tmp_path: Path) -> None:
    source = make_store(sqlite_url(tmp_path, "s.sqlite3"), tmp_path / "src")
    theirs = tmp_path / "theirs.dat"
    theirs.write_bytes(b"theirs")
    source.register({**points()[0], "id": "baseline"}, theirs)
    source.export(tmp_path / "a.tar")
    target = make_store(sqlite_url(tmp_path, "t.sqlite3"), tmp_path / "dst")
    ours = tmp_path / "ours.dat"
    ours.write_bytes(b"ours")
    target.register({**points()[3], "id": "baseline"}, ours)
    before = snapshot(target)
    with pytest.raises(ArchiveError, match="explicit id baseline names a run of other parameters"):
        target.import_(tmp_path / "a.tar", explicit_ids=True)
    assert snapshot(target) == before


# -- damage --------------------------------------------------------------------------------


def members(path: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(path) as tar:
        out = []
        for info in tar.getmembers():
            handle = tar.extractfile(info)
            out.append((info, handle.read() if handle is not None else b""))
        return out


def repack(path: Path, items: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    damaged = path.with_name(f"damaged-{path.name}")
    with tarfile.open(damaged, "w") as tar:
        for info, data in items:
            if info.isreg():
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return damaged


def reseal(items: list[tuple[tarfile.TarInfo, bytes]]) -> list[tuple[tarfile.TarInfo, bytes]]:
    """The manifest's checksums and counts made to agree with the members again."""
    data = dict((info.name, blob) for info, blob in items)
    manifest = json.loads(data["manifest.json"])
    rows = data["rows.jsonl"]
    manifest["rows"].update(
        size=len(rows), sha256=hashlib.sha256(rows).hexdigest(), count=rows.count(b"\n")
    )
    for entry in manifest["files"]:
        blob = data.get(entry["name"])
        if blob is not None:
            entry.update(size=len(blob), sha256=hashlib.sha256(blob).hexdigest())
    text = json.dumps(manifest).encode()
    return [(info, text if info.name == "manifest.json" else blob) for info, blob in items]


def edit_rows(
    items: list[tuple[tarfile.TarInfo, bytes]], edit: Callable[[list[dict[str, Any]]], None]
) -> list[tuple[tarfile.TarInfo, bytes]]:
    out = []
    for info, blob in items:
        if info.name == "rows.jsonl":
            lines = [json.loads(line) for line in blob.splitlines()]
            edit(lines)
            blob = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
        out.append((info, blob))
    return out


def first_file(items: list[tuple[tarfile.TarInfo, bytes]]) -> int:
    return next(i for i, (info, _) in enumerate(items) if info.name.startswith("files/"))


def flip_a_byte(items: list[tuple[tarfile.TarInfo, bytes]]) -> list[tuple[tarfile.TarInfo, bytes]]:
    i = first_file(items)
    info, blob = items[i]
    items[i] = (info, bytes([blob[0] ^ 1]) + blob[1:])
    return items


def drop_a_file(items: list[tuple[tarfile.TarInfo, bytes]]) -> list[tuple[tarfile.TarInfo, bytes]]:
    del items[first_file(items)]
    return items


def special(name: str, kind: bytes, link: str = "") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    return info, b""


def plain(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def change_value(lines: list[dict[str, Any]]) -> None:
    lines[0]["row"]["n"] = 99


def duplicate_row(lines: list[dict[str, Any]]) -> None:
    lines.append(dict(lines[0]))


def wrong_type(lines: list[dict[str, Any]]) -> None:
    lines[0]["row"]["flag"] = "yes"
    lines[0]["hashed"] = None  # not a hash check: the value check must refuse it


def drop_a_column(lines: list[dict[str, Any]]) -> None:
    del lines[0]["row"]["label"]


def same_size_edit(
    items: list[tuple[tarfile.TarInfo, bytes]],
) -> list[tuple[tarfile.TarInfo, bytes]]:
    out = []
    for info, blob in items:
        if info.name == "rows.jsonl":
            assert b'"n":1' in blob
            blob = blob.replace(b'"n":1', b'"n":3', 1)
        out.append((info, blob))
    return out


def newer_format(items: list[tuple[tarfile.TarInfo, bytes]]) -> list[tuple[tarfile.TarInfo, bytes]]:
    out = []
    for info, blob in items:
        if info.name == "manifest.json":
            doc = json.loads(blob)
            doc["entropic_archive"] = 99
            blob = json.dumps(doc).encode()
        out.append((info, blob))
    return out


DAMAGE: dict[str, tuple[Callable[[list[Any]], list[Any]], str]] = {
    "a file's bytes changed": (flip_a_byte, r"files/\w+\.txt does not match its SHA-256"),
    "a row changed": (
        lambda items: edit_rows(items, change_value),
        r"rows.jsonl has \d+ bytes, its manifest says",
    ),
    "a row's bytes changed": (same_size_edit, "rows.jsonl does not match its SHA-256"),
    "a row changed, checksums resealed": (
        lambda items: reseal(edit_rows(items, change_value)),
        r"its parameters hash to \w+: the row was altered",
    ),
    "a file missing": (drop_a_file, r"lacks files/\w+\.txt"),
    "a file missing, manifest resealed": (
        lambda items: reseal(drop_a_file(items)),
        r"lacks files/\w+\.txt",
    ),
    "path traversal": (
        lambda items: [*items, plain("../escaped.txt", b"x")],
        r"'../escaped.txt' is a path out of the archive",
    ),
    "nested traversal": (
        lambda items: [*items, plain("files/../../escaped.txt", b"x")],
        "is a path out of the archive",
    ),
    "absolute member": (
        lambda items: [*items, plain("/tmp/escaped.txt", b"x")],
        "'/tmp/escaped.txt' is an absolute path",
    ),
    "symlink member": (
        lambda items: [*items, special("files/link.txt", tarfile.SYMTYPE, "/etc/passwd")],
        "is a symlink",
    ),
    "hard link member": (
        lambda items: [*items, special("files/hard.txt", tarfile.LNKTYPE, "rows.jsonl")],
        "is a hard link",
    ),
    "folder member": (lambda items: [*items, special("files", tarfile.DIRTYPE)], "not a regular"),
    "device member": (
        lambda items: [*items, special("files/dev", tarfile.CHRTYPE)],
        "not a regular",
    ),
    "unlisted member": (
        lambda items: [*items, plain("files/extra.txt", b"x")],
        "which its manifest does not list",
    ),
    "a member twice": (lambda items: [*items, items[0]], "holds the member .* twice"),
    "duplicate ids": (
        lambda items: reseal(edit_rows(items, duplicate_row)),
        "two rows with the id",
    ),
    "a value of the wrong type": (
        lambda items: reseal(edit_rows(items, wrong_type)),
        r"does not fit the store's table: column 'flag' = 'yes' is not a bool",
    ),
    "a row lacking a column": (
        lambda items: reseal(edit_rows(items, drop_a_column)),
        "but the manifest lists",
    ),
    "a newer format": (newer_format, "made by a newer entropic"),
    "an unreadable manifest": (
        lambda items: [
            (info, b"{not json" if info.name == "manifest.json" else blob) for info, blob in items
        ],
        "manifest.json is not JSON",
    ),
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_a_damaged_archive_is_refused_and_nothing_is_written(
    kind: str, shared_db_url: str, tmp_path: Path
) -> None:
    source = make_store(sqlite_url(tmp_path, "s.sqlite3"), tmp_path / "src")
    source.sweep(points())
    good = tmp_path / "good.tar"
    source.export(good)
    damage, message = DAMAGE[kind]
    damaged = repack(good, damage(members(good)))

    target = make_store(shared_db_url, tmp_path / "dst")
    target.sweep(points(("a", "z"))[:3])  # some rows already there, one shared with the archive
    (target.results_dir / "orphan.txt").write_text("an orphan")
    before = snapshot(target)
    outside = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(ArchiveError, match=message):
        target.import_(damaged)
    assert snapshot(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == outside
    # The undamaged archive still imports.
    assert len(target.import_(good).inserted) > 0


def test_truncated_and_foreign_files_are_refused(tmp_path: Path) -> None:
    source = make_store(sqlite_url(tmp_path, "s.sqlite3"), tmp_path / "src")
    source.sweep(points())
    target = make_store(sqlite_url(tmp_path, "t.sqlite3"), tmp_path / "dst")
    before = snapshot(target)
    for name in ("plain.tar", "packed.tar.gz"):
        good = tmp_path / name
        source.export(good)
        data = good.read_bytes()
        cut = tmp_path / f"cut-{name}"
        cut.write_bytes(data[: len(data) // 2])
        with pytest.raises(ArchiveError, match=r"damaged|not a readable tar"):
            target.import_(cut)
    foreign = tmp_path / "notes.tar"
    foreign.write_text("just text, not a tar file\n" * 100)
    with pytest.raises(ArchiveError, match="not a readable tar archive"):
        target.import_(foreign)
    not_ours = tmp_path / "other.tar"
    with tarfile.open(not_ours, "w") as tar:
        info, data = plain("manifest.json", b"{}")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(ArchiveError, match="not an entropic archive manifest"):
        target.import_(not_ours)
    with pytest.raises(FileNotFoundError, match="no archive at"):
        target.import_(tmp_path / "nowhere.tar")
    assert snapshot(target) == before


def test_an_archive_of_another_model_does_not_fit(tmp_path: Path) -> None:
    source = make_store(sqlite_url(tmp_path, "s.sqlite3"), tmp_path / "src")
    source.sweep(points())
    source.export(tmp_path / "a.tar")
    target = make_store(sqlite_url(tmp_path, "t.sqlite3"), tmp_path / "dst", Other)
    before = snapshot(target)
    with pytest.raises(ArchiveError, match="that the table lacks; add them to the model"):
        target.import_(tmp_path / "a.tar")
    assert snapshot(target) == before


def test_a_store_with_another_file_suffix_is_refused(tmp_path: Path) -> None:
    source = make_store(sqlite_url(tmp_path, "s.sqlite3"), tmp_path / "src")
    source.sweep(points())
    source.export(tmp_path / "a.tar")
    target = make_store(sqlite_url(tmp_path, "t.sqlite3"), tmp_path / "dst", suffix=".h5")
    before = snapshot(target)
    with pytest.raises(ArchiveError, match=r"file_suffix='.txt'"):
        target.import_(tmp_path / "a.tar")
    assert snapshot(target) == before


def test_a_folder_where_a_file_goes_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    source = make_store(sqlite_url(tmp_path, "s.sqlite3"), tmp_path / "src")
    records = source.sweep(points())
    source.export(tmp_path / "a.tar")
    target = make_store(sqlite_url(tmp_path, "t.sqlite3"), tmp_path / "dst")
    (target.results_dir / f"{records[-1].id}.txt").mkdir()
    before = snapshot(target)
    with pytest.raises(ArchiveError, match="is a folder where the result file"):
        target.import_(tmp_path / "a.tar")
    assert snapshot(target) == before


def test_an_archive_changed_during_the_import_is_undone(tmp_path: Path) -> None:
    """The last file's bytes change after the check: every file written is put back."""
    target = make_store(sqlite_url(tmp_path, "t.sqlite3"), tmp_path / "dst")
    target.sweep(points()[:2])  # older than the archive's: replaced, their files kept aside
    source = make_store(sqlite_url(tmp_path, "s.sqlite3"), tmp_path / "src")
    source.sweep(points())
    archive = tmp_path / "a.tar"
    source.export(archive)
    before = snapshot(target)
    index, disk = target._core.index, target._core.disk
    plan = check_import(index, archive, suffix=".txt")
    with tarfile.open(archive) as tar:
        last = [m for m in tar.getmembers() if m.name.startswith("files/")][-1]
    with open(archive, "r+b") as handle:
        handle.seek(last.offset_data)
        byte = handle.read(1)
        handle.seek(last.offset_data)
        handle.write(bytes([byte[0] ^ 1]))
    try:
        with pytest.raises(ArchiveError, match="changed while it was imported"):
            apply_import(plan, index, disk)
    finally:
        plan.close()
    assert snapshot(target) == before


# -- merging -------------------------------------------------------------------------------


def edited_copy(store: Store[Any], params: dict[str, Any], text: str) -> None:
    """Give ``params`` a newer row and file in ``store``."""
    record = store.run(params)
    Path(record.result_file).write_text(text)


def test_merge_keeps_newer_rows_and_replaces_older_ones(target_url: str, tmp_path: Path) -> None:
    grid = points()
    source = make_store(sqlite_url(tmp_path, "s.sqlite3"), tmp_path / "src")
    target = make_store(target_url, tmp_path / "dst")
    target.sweep(grid[:2])  # older than the archive's rows: replaced
    source.sweep(grid[:4])
    edited_copy(source, grid[0], "newer in the archive")
    target.sweep(grid[4:6])  # not in the archive: untouched
    edited_copy(target, grid[1], "newer here")  # newer than the archive's: kept
    lost = target.sweep([grid[3]])[0]  # newer here, but its file is gone: replaced
    archive = tmp_path / "a.tar"
    source.export(archive)
    Path(lost.result_file).unlink()
    untouched = {}
    for params in grid[4:6]:
        record = target.retrieve(params)
        assert record is not None
        untouched[record.id] = (record.created_at, Path(record.result_file).read_bytes())
    report = target.import_(archive)
    ids = [ident(target, params) for params in grid[:4]]
    assert sorted(report.replaced) == [ids[0]]
    assert sorted(report.kept) == [ids[1]]
    assert sorted(report.inserted) == sorted([ids[2], ids[3]])
    files = file_bytes(target)
    assert files[ids[0]] == b"newer in the archive"
    assert files[ids[1]] == b"newer here"
    assert record_values(target)[ids[3]] == record_values(source)[ids[3]]
    assert record_values(target)[ids[0]] == record_values(source)[ids[0]]
    for run_id, (created, data) in untouched.items():
        record = target.retrieve({"id": run_id})
        assert record is not None
        assert (record.created_at, Path(record.result_file).read_bytes()) == (created, data)
    # Importing again changes nothing: every row is now as new here.
    before = snapshot(target)
    again = target.import_(archive)
    assert again.inserted == again.replaced == []
    assert snapshot(target) == before
    # No leftovers: no sidecars, nothing aside, nothing half-written.
    meta = target.results_dir / ".entropic"
    assert [p for p in meta.rglob("*") if p.is_file() and "store.json" not in p.name] == []


def test_an_orphan_file_at_a_rows_path_is_replaced(tmp_path: Path) -> None:
    source = make_store(sqlite_url(tmp_path, "s.sqlite3"), tmp_path / "src")
    record = source.sweep(points()[:1])[0]
    source.export(tmp_path / "a.tar")
    target = make_store(sqlite_url(tmp_path, "t.sqlite3"), tmp_path / "dst")
    (target.results_dir / f"{record.id}.txt").write_text("a leftover of a dead run")
    target.import_(tmp_path / "a.tar")
    copy = target.retrieve({"id": record.id})
    assert copy is not None
    assert Path(copy.result_file).read_bytes() == Path(record.result_file).read_bytes()


def test_points_a_live_process_is_running_are_left_to_it(
    shared_db_url: str, tmp_path: Path
) -> None:
    source = make_store(sqlite_url(tmp_path, "s.sqlite3"), tmp_path / "src")
    records = source.sweep(points()[:3])
    source.export(tmp_path / "a.tar")
    target = make_store(shared_db_url, tmp_path / "dst")
    peer = Claims(target._core.index)  # another sweep, live in this process
    won, _ = peer.claim([records[0].id])
    assert won == [records[0].id]
    try:
        report = target.import_(tmp_path / "a.tar")
    finally:
        peer.release(won)
        peer.close()
    assert report.busy == [records[0].id]
    assert sorted(report.inserted) == sorted(r.id for r in records[1:])
    assert target.retrieve({"id": records[0].id}) is None
    assert target._core.recovery.inspect(full=True).count() == 0


def test_an_import_killed_midway_is_finished_or_undone_by_recovery(tmp_path: Path) -> None:
    """A process dies after writing some files: a new Store leaves every row whole."""
    source = make_store(sqlite_url(tmp_path, "s.sqlite3"), tmp_path / "src")
    source.sweep(points())
    archive = tmp_path / "a.tar"
    source.export(archive)
    target = make_store(sqlite_url(tmp_path, "t.sqlite3"), tmp_path / "dst")
    target.sweep(points()[:2])
    target.close()
    script = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from pathlib import Path
        from entropic._storage.disk import Disk
        from test_archive import make_store
        real = Disk.write_result
        calls = []
        def dying(self, *args):
            calls.append(1)
            if len(calls) == 3:
                os._exit(9)  # between the sidecar and the file of the third row
            real(self, *args)
        Disk.write_result = dying
        store = make_store({target.db_url!r}, Path({str(target.results_dir)!r}))
        store.import_({str(archive)!r})
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, check=False)
    assert result.returncode == 9, result.stderr.decode()
    reopened = make_store(target.db_url, target.results_dir)
    found = reopened._core.recovery.inspect(full=True)
    assert found.count() == 0, found
    source_files = file_bytes(source)
    for run_id, data in file_bytes(reopened).items():
        assert data == source_files[run_id]
    assert reopened.count() == 4  # the two rows it had, and the two files written whole
    report = reopened.import_(archive)
    assert (len(report.inserted), len(report.kept)) == (4, 4)
    assert file_bytes(reopened) == source_files


def test_an_import_beside_a_live_run_leaves_its_point_to_it(
    shared_db_url: str, tmp_path: Path
) -> None:
    """Another process is running a point of the archive: the import skips it, the run wins."""
    source = make_store(sqlite_url(tmp_path, "s.sqlite3"), tmp_path / "src")
    source.sweep(points())
    archive = tmp_path / "a.tar"
    source.export(archive)
    target = make_store(shared_db_url, tmp_path / "dst")
    started, go = tmp_path / "started", tmp_path / "go"
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import test_archive
        from test_archive import make_store, points
        def slow(params):
            Path({str(started)!r}).touch()
            while not Path({str(go)!r}).exists():
                time.sleep(0.02)
            Path(params["result_file"]).write_text("run by the live process")
        test_archive.write_result = slow
        store = make_store({shared_db_url!r}, Path({str(target.results_dir)!r}))
        store.run(points()[0])
        store.close()
        """
    )
    log = tmp_path / "peer.log"
    with (
        log.open("wb") as err,
        subprocess.Popen([sys.executable, "-c", script], stderr=err) as peer,
    ):
        try:
            deadline = time.monotonic() + 60
            while not started.exists():
                assert peer.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "the live run never started"
                time.sleep(0.02)
            report = target.import_(archive)
        finally:
            go.touch()
        assert peer.wait(timeout=60) == 0, log.read_text()
    busy = ident(target, points()[0])
    assert report.busy == [busy]
    assert len(report.inserted) == 7
    record = target.retrieve({"id": busy})
    assert record is not None
    assert Path(record.result_file).read_text() == "run by the live process"
    assert target._core.recovery.inspect(full=True).count() == 0

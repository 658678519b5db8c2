"""What the reliability tests share: a model, a checksummed runner, and snapshots of a store.

A result file is ``<payload>\\n#sha256=<hex of payload>\\n``: a file cut short by a
kill has no footer or a wrong one, so ``file_is_complete`` tells a finished
file from a partial one without trusting the store.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from entropic import Base, Mapped, Store, mapped_column
from entropic._storage.disk import META_DIR

FOOTER = "#sha256="


class Rel(Base):
    __tablename__ = "reliability_result"

    n: Mapped[int]
    x: Mapped[float] = mapped_column(default=0.0)
    tag: Mapped[str | None] = mapped_column(sa.String(40))
    cfg: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)


def write_checked(path: str | os.PathLike[str], payload: str) -> None:
    """Write ``payload`` and its checksum footer, the way a careful runner would."""
    digest = hashlib.sha256(payload.encode("utf-8")).hexdigest()
    Path(path).write_text(f"{payload}\n{FOOTER}{digest}\n", encoding="utf-8")


def read_checked(path: str | os.PathLike[str]) -> str | None:
    """The payload of a complete result file, or None if it is missing or cut short."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    payload, sep, footer = text.rpartition(f"\n{FOOTER}")
    if not sep or not footer.endswith("\n"):
        return None
    if hashlib.sha256(payload.encode("utf-8")).hexdigest() != footer[:-1]:
        return None
    return payload


def file_is_complete(path: str | os.PathLike[str]) -> bool:
    return read_checked(path) is not None


def checked_runner(params: dict[str, Any]) -> None:
    """A runner whose file says which run wrote it: ``<id> n=<n>``, with a checksum footer."""
    write_checked(params["result_file"], f"{params['id']} n={params['n']}")


def rows(store: Store[Any]) -> dict[str, dict[str, Any]]:
    """Every row of the store's table, by id, straight from the database."""
    table = store.result_cls.__table__
    with store.engine.connect() as conn:
        return {r.id: dict(r._mapping) for r in conn.execute(sa.select(table))}


def tree(root: Path, skip: tuple[Path, ...] = ()) -> dict[str, tuple[str, int, str]]:
    """Every entry under ``root`` (not following symlinks): kind, size and content hash."""
    found: dict[str, tuple[str, int, str]] = {}
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs[:] = [d for d in dirs if here / d not in skip]
        for name in dirs + files:
            path = here / name
            if path in skip:
                continue
            rel = str(path.relative_to(root))
            if path.is_symlink():
                found[rel] = ("link", 0, os.readlink(path))
            elif path.is_dir():
                found[rel] = ("dir", 0, "")
            else:
                data = path.read_bytes()
                found[rel] = ("file", len(data), hashlib.sha256(data).hexdigest())
    return found


def result_files(store: Store[Any]) -> dict[str, tuple[str, int, str]]:
    """The result files in results_dir, without entropic's own folder."""
    return tree(store.results_dir, skip=(store.results_dir / META_DIR,))


def journal(store: Store[Any]) -> list[str]:
    """Whatever is left in entropic's sidecar, aside and tmp folders (empty when at rest)."""
    meta = store.results_dir / META_DIR
    # store.json names the table the folder belongs to: it is no leftover.
    return sorted(
        str(p.relative_to(meta)) for p in meta.rglob("*") if p.is_file() and p.name != "store.json"
    )

"""Inside results_dir means inside it, not "a path starting with the same text".

``/x/results2/f`` starts with ``/x/results`` but is not in it. A row whose file
lives in such a sibling folder must not have that file deleted by
``delete(remove_file=True)`` or ``entropic check --repair --prune``, and a
sidecar or a dead sweep's journal pointing there must not be indexed (a row
would then vouch for a file entropic does not own).
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import pytest

from entropic import Store, hash_params
from entropic._storage.codec import encode_line, encode_sidecar
from entropic._storage.owner import HOST
from entropic.cli import main as cli_main
from entropic.models import utcnow

from ._support import Rel, checked_runner, rows, tree, write_checked

DEAD_OWNER = f"{HOST}~4999999~1~deadbeef"
REGISTERED, JOURNALLED, SIDECARRED, GONE = ({"n": n} for n in (1, 2, 3, 4))


def _row(params: dict[str, Any], folder: Path) -> dict[str, Any]:
    run_id = hash_params(params)
    return {
        "id": run_id,
        "n": params["n"],
        "x": 0.0,
        "tag": None,
        "cfg": None,
        "result_file": str(folder / f"{run_id}.txt"),
        "created_at": utcnow(),
        "custom_data": {},
    }


def _check(results: Path, db_url: str, *more: str) -> str:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli_main(["check", "--db", db_url, "--results", str(results), *more])
    assert status in (0, 1), err.getvalue()
    return out.getvalue()


def _open(results: Path, db_url: str) -> Store[Rel]:
    return Store(checked_runner, Rel, results_dir=results, file_suffix=".txt", db_url=db_url)


@pytest.mark.parametrize("sibling", ["results2", "results.old", "results-backup"])
def test_a_sibling_folder_sharing_results_dirs_name_is_outside_it(
    shared_db_url: str, tmp_path: Path, sibling: str
) -> None:
    results = tmp_path / "x" / "results"
    other = tmp_path / "x" / sibling
    other.mkdir(parents=True)
    for params in (REGISTERED, JOURNALLED, SIDECARRED, GONE):
        run_id = hash_params(params)
        write_checked(other / f"{run_id}.txt", f"{run_id} n={params['n']} not yours")
    with _open(results, shared_db_url) as store:
        store.register(REGISTERED, other / f"{hash_params(REGISTERED)}.txt")
        store.register(GONE, other / f"{hash_params(GONE)}.txt")
        (other / f"{hash_params(GONE)}.txt").unlink()  # --prune may drop this row, only it
        # What a dead process left: a journal and a sidecar whose rows point at the sibling.
        line = encode_line(_row(JOURNALLED, other))
        assert line is not None
        (results / ".entropic" / "journal" / f"{DEAD_OWNER}.0.jsonl").write_bytes(line)
        sidecar = encode_sidecar(hash_params(SIDECARRED), _row(SIDECARRED, other))
        assert sidecar is not None
        (results / ".entropic" / "sidecars" / f"{hash_params(SIDECARRED)}.json").write_text(sidecar)
        before = tree(other)
        with pytest.raises(ValueError, match="outside results_dir"):
            store.delete(REGISTERED, remove_file=True)
        assert store.retrieve(REGISTERED) is not None  # refused before the row went
    assert tree(other) == before
    _check(results, shared_db_url)
    _check(results, shared_db_url, "--repair", "--prune")
    assert tree(other) == before
    with _open(results, shared_db_url) as store:
        held = rows(store)
        assert hash_params(JOURNALLED) not in held  # the journal's row was not indexed
        assert hash_params(SIDECARRED) not in held  # nor the sidecar's
        assert hash_params(GONE) not in held  # pruned: its file is gone
        assert held[hash_params(REGISTERED)]["result_file"].startswith(str(other))
        with pytest.raises(ValueError, match="outside results_dir"):
            store.delete(REGISTERED, remove_file=True)
        assert store.delete(REGISTERED)  # the row may go; the file stays
        records = store.sweep([JOURNALLED, SIDECARRED])  # run here, into results_dir
        assert all(Path(r.result_file).parent == results for r in records)
    assert tree(other) == before

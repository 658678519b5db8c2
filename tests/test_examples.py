"""The examples on a small grid: a summary line, a PNG plot, all cache hits the second time."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from entropic.cli import main

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SUMMARY = re.compile(r"points (\d+), cached (\d+), ran (\d+), failed (\d+), time \d+\.\d\d s")

pytest.importorskip(
    "matplotlib", reason="the examples plot with matplotlib (pip install .[examples])"
)


def run_example(name: str, out: Path, png_name: str = "logistic.png") -> tuple[int, int, int, int]:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name), "--small", "--out", str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "MPLBACKEND": "Agg"},
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    match = SUMMARY.search(result.stdout)
    assert match, result.stdout
    png = out / png_name
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert png.stat().st_size > 10_000
    points, cached, ran, failed = (int(group) for group in match.groups())
    return points, cached, ran, failed


def stored_rows(out: Path, capsys: pytest.CaptureFixture[str]) -> int:
    status = main(["info", "--json", "--db", f"sqlite:///{out / 'db.sqlite3'}"])
    assert status == 0
    info = json.loads(capsys.readouterr().out)
    assert info["files"]["missing"] == 0
    return int(info["rows"])


def test_logistic_sweep_runs_then_hits_the_cache(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "logistic"
    assert run_example("logistic_sweep.py", out) == (12, 0, 12, 0)
    assert run_example("logistic_sweep.py", out) == (12, 12, 0, 0)
    assert stored_rows(out, capsys) == 12
    assert len(list((out / "results").glob("*.npy"))) == 12


def test_dask_sweep_runs_on_a_local_cluster(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "dask"
    assert run_example("dask_sweep.py", out) == (12, 0, 12, 0)
    assert stored_rows(out, capsys) == 12


def test_xarray_grid_reads_the_sweep_as_a_dataset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("xarray", reason="the example needs xarray (pip install .[examples])")
    out = tmp_path / "xarray"
    assert run_example("xarray_grid.py", out, "xarray_grid.png") == (12, 0, 12, 0)
    # The same store as logistic_sweep.py: its grid is all cache hits now.
    assert run_example("logistic_sweep.py", out) == (12, 12, 0, 0)
    assert run_example("xarray_grid.py", out, "xarray_grid.png") == (12, 12, 0, 0)
    assert stored_rows(out, capsys) == 12

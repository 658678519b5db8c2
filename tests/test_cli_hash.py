"""The `entropic hash` command: ids from the shell, the same as hash_params gives."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest

import entropic
from entropic.cli import main


def _run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "entropic", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        check=False,
    )


def test_hash_prints_the_id_of_a_json_object() -> None:
    result = _run("hash", '{"n": 100, "dt": 0.1}')
    assert result.returncode == 0, result.stderr
    assert result.stdout == entropic.hash_params({"n": 100, "dt": 0.1}) + "\n"


def test_hash_canonical_prints_id_and_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hash", "--canonical", '{"n": 100, "dt": 0.30000000000000004}']) == 0
    ident, text = capsys.readouterr().out.rstrip("\n").split("\t")
    assert text == '{"dt":0.3,"n":100}'
    assert ident == entropic.hash_params({"dt": 0.3, "n": 100})


def test_hash_reads_json_lines_from_stdin_in_order() -> None:
    points = [{"i": i, "x": i / 7} for i in range(10_000)]
    stdin = "".join(json.dumps(p) + "\n" for p in points)
    result = _run("hash", "-", stdin=stdin)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == entropic.hash_many(points)


def test_hash_stdin_skips_blank_lines(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO('{"a": 1}\n\n{"a": 2}\n'))
    assert main(["hash", "-"]) == 0
    assert capsys.readouterr().out.split() == entropic.hash_many([{"a": 1}, {"a": 2}])


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["hash", "{not json"], "", "PARAMS is not valid JSON"),
        (["hash", "[1, 2]"], "", "must be a JSON object"),
        (["hash", "-"], '{"a": 1}\n[3]\n', "line 2 must be a JSON object"),
        (["hash", "-"], '{"a": 1}\n{"a": \n', "line 2 is not valid JSON"),
    ],
)
def test_hash_errors_are_one_line_and_exit_2(args: list[str], stdin: str, message: str) -> None:
    result = _run(*args, stdin=stdin)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert message in lines[0]
    assert "Traceback" not in result.stderr


def test_console_script_is_declared() -> None:
    from importlib.metadata import PackageNotFoundError, entry_points

    try:
        scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    except PackageNotFoundError:  # pragma: no cover
        pytest.fail("entropic is not installed")
    assert scripts.get("entropic") == "entropic.cli:main"

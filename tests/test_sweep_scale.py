"""Scale and progress: a 100,000-point sweep, bounded statements, the progress bar."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from entropic import Base, Mapped, Store, SweepError, hash_many


class Big(Base):
    __tablename__ = "sweep_big"

    i: Mapped[int]
    x: Mapped[float]


def _touch(params: dict[str, Any]) -> None:
    with open(params["result_file"], "wb") as handle:
        handle.write(b"x")


def test_a_100000_point_sweep(tmp_path: Path) -> None:
    n = 100_000
    points = ({"i": i, "x": i / 3} for i in range(n))  # a generator: consumed once
    bound: list[int] = []

    with Store(
        _touch,
        Big,
        results_dir=tmp_path / "r",
        file_suffix=".bin",
        db_url=f"sqlite:///{tmp_path}/big.db",
    ) as store:

        def spy(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
            if (
                isinstance(parameters, (tuple, list))
                and parameters
                and not isinstance(parameters[0], (tuple, list, dict))
            ):
                bound.append(len(parameters))

        sa.event.listen(store.engine, "before_cursor_execute", spy)
        records = store.sweep(points)
        assert len(records) == n
        assert [r.i for r in records[:3]] == [0, 1, 2]
        assert records[-1].id == hash_many([{"i": n - 1, "x": (n - 1) / 3}])[0]
        assert max(bound) <= 999  # no statement binds more than SQLite allows
        with store.engine.connect() as conn:
            assert conn.scalar(sa.select(sa.func.count()).select_from(Big)) == n
        again = store.sweep({"i": i, "x": i / 3} for i in range(0, n, 7))
        assert [r.i for r in again] == list(range(0, n, 7))
    assert len(list((tmp_path / "r").glob("*.bin"))) == n


def _fail_odd(params: dict[str, Any]) -> None:
    if params["i"] % 2:
        raise ValueError("odd")
    _touch(params)


def test_progress_bar_shows_counts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="entropic")
    with Store(
        _fail_odd, Big, results_dir=tmp_path / "r", db_url=f"sqlite:///{tmp_path}/p.db"
    ) as store:
        store.sweep([{"i": 0, "x": 0.0}])
        with pytest.raises(SweepError):
            store.sweep([{"i": i, "x": float(i)} for i in range(6)], progress=True)
    err = capsys.readouterr().err
    assert "entropic sweep" in err
    assert "6/6" in err
    assert "cached=1" in err
    assert "ran=2" in err
    assert "failed=3" in err
    summary = [r.getMessage() for r in caplog.records if "sweep of" in r.getMessage()]
    assert "6 points (6 distinct): 1 cached, 2 ran, 3 failed" in summary[-1]


def test_no_progress_bar_unless_asked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with Store(
        _touch, Big, results_dir=tmp_path / "r", db_url=f"sqlite:///{tmp_path}/p.db"
    ) as store:
        store.sweep([{"i": i, "x": 0.5} for i in range(3)])
    captured = capsys.readouterr()
    assert captured.err == ""
    assert captured.out == ""


def test_progress_into_a_file_prints_the_final_counts_once(tmp_path: Path) -> None:
    # A batch job's log: stderr is a file, not a terminal, so no redraw per batch.
    script = tmp_path / "job.py"
    script.write_text(
        "import sys\n"
        "from pathlib import Path\n"
        "from entropic import Base, Mapped, Store\n"
        "class Job(Base):\n"
        "    __tablename__ = 'job'\n"
        "    i: Mapped[int]\n"
        "def runner(params):\n"
        "    Path(params['result_file']).write_text('x')\n"
        "with Store(runner, Job, results_dir=sys.argv[1], db_url=sys.argv[2]) as store:\n"
        "    store.sweep([{'i': i} for i in range(600)], progress=True)\n"
    )
    log = tmp_path / "job.log"
    with log.open("w") as err:
        subprocess.run(
            [sys.executable, str(script), str(tmp_path / "r"), f"sqlite:///{tmp_path}/j.db"],
            stderr=err,
            check=True,
            timeout=120,
        )
    text = log.read_text()
    assert text.count("600/600") == 1, text
    assert "ran=600" in text


def test_log_messages_do_not_repeat_the_logger_name(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="entropic")
    with Store(
        _fail_odd, Big, results_dir=tmp_path / "r", db_url=f"sqlite:///{tmp_path}/p.db"
    ) as store:
        with pytest.raises(SweepError):
            store.sweep([{"i": i, "x": float(i)} for i in range(4)])
        store.run_or_retrieve({"i": 0, "x": 0.0})
        store.delete({"i": 0, "x": 0.0})
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("entropic")]
    assert len(messages) > 5
    assert [m for m in messages if m.startswith("entropic")] == []

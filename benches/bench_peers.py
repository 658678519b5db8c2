"""entropic beside signac and joblib.Memory: the same sweep, side by side in the same run.

The tools a user would pick instead of entropic (docs/comparison.md), each used the
idiomatic way, on the same 20,000 points (the grid of bench_sweep.py) and the same
trivial runner (it writes a 1-byte file):

- entropic: ``store.sweep(points)`` on SQLite;
- signac: ``signac.init_project(path)``, then for each point ``job =
  project.open_job(sp)``, ``job.init()`` and, unless ``job.isfile("out.bin")``, the
  file written at ``job.fn("out.bin")``; warm: ``project.open_job(sp)``, ``job in
  project`` and ``job.isfile("out.bin")``, the check a user makes to know a point
  is done;
- joblib.Memory: ``Memory(folder, verbose=0).cache`` of a function of the point's
  values that writes the file into a results folder and returns its path, called
  once per point;
- the runner alone: the same file writes in a plain loop, into a fresh folder;
- the system-call floor: the calls entropic's bookkeeping cannot skip, in a plain
  loop over the runner-alone folder: cold, a look for a leftover file before the
  run, a look at the result after it and one journal line written per point;
  warm, one listing of the results folder (a re-sweep of the whole table looks
  at the cached points' files through it). On a machine where system
  calls are slow (a virtual machine, a network filesystem) this floor is most of
  what the bookkeeping can still be brought down to.

Goals: entropic at most 0.5x signac cold (nothing cached) and at most 0.5x signac
warm (everything cached); joblib.Memory is measured beside them for the record.

How it measures: cold passes start from an empty folder; warm passes open a fresh
handle (a new Store, ``signac.get_project``, a new Memory) over the folder the cold
pass filled, as a second session would, and opening it is timed too. Each round
times every tool cold, then every tool warm, in an order rotated from round to
round (the machine is shared and noisy, so no tool gets all the quiet moments);
the figures are the best of ``ROUNDS`` rounds, in wall time (``perf_counter``) and
CPU time (``process_time``). Cold bookkeeping is a tool's cold time minus the
runner alone. Nothing asserts a speed: the bench checks that every tool produced
the same number of files and results, and that no warm pass ran anything.

With ``--benchmark-disable`` (CI's smoke run) it sweeps 300 points once.
"""

from __future__ import annotations

import gc
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib  # type: ignore[import-untyped]
import signac  # type: ignore[import-untyped]
from pytest_benchmark.fixture import BenchmarkFixture

from entropic import Base, Mapped, Store
from grids import grid

SIGNAC_COLD_MAX = 0.5
SIGNAC_WARM_MAX = 0.5
ROUNDS = 3
TOOLS = ("runner alone", "entropic", "signac", "joblib.Memory")
FLOOR = "syscall floor"


class PeerGrid(Base):
    __tablename__ = "bench_peers"

    n: Mapped[int]
    dt: Mapped[float]
    method: Mapped[str]


class Writes:
    """Counts the runs of every tool: the same 1-byte file write for all of them."""

    count = 0

    @classmethod
    def write(cls, path: str) -> None:
        with open(path, "wb") as handle:
            handle.write(b"x")
        cls.count += 1


def _entropic_runner(params: dict[str, Any]) -> None:
    Writes.write(params["result_file"])


def _joblib_make(out_dir: str, n: int, dt: float, method: str) -> str:
    path = os.path.join(out_dir, f"{n}_{dt}_{method}.bin")
    Writes.write(path)
    return path


# Each pass returns how many results it produced (records, jobs done, paths).


def _runner_alone(folder: Path, points: list[dict[str, Any]]) -> int:
    folder.mkdir()
    base = str(folder)
    for i in range(len(points)):
        Writes.write(os.path.join(base, f"{i}.bin"))
    return len(points)


def _entropic(folder: Path, points: list[dict[str, Any]]) -> int:
    folder.mkdir(exist_ok=True)
    with Store(
        _entropic_runner,
        PeerGrid,
        results_dir=folder / "r",
        file_suffix=".bin",
        db_url=f"sqlite:///{folder}/s.db",
    ) as store:
        return len(store.sweep(points))


def _signac_cold(folder: Path, points: list[dict[str, Any]]) -> int:
    project = signac.init_project(str(folder))
    done = 0
    for sp in points:
        job = project.open_job(sp)
        job.init()
        if not job.isfile("out.bin"):
            Writes.write(job.fn("out.bin"))
        done += 1
    return done


def _signac_warm(folder: Path, points: list[dict[str, Any]]) -> int:
    project = signac.get_project(str(folder), search=False)
    done = 0
    for sp in points:
        job = project.open_job(sp)
        if job in project and job.isfile("out.bin"):
            done += 1
        else:  # not expected: counted as a run by Writes, which the bench checks
            job.init()
            Writes.write(job.fn("out.bin"))
    return done


def _joblib(folder: Path, points: list[dict[str, Any]]) -> int:
    out_dir = folder / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    make = joblib.Memory(str(folder / "cache"), verbose=0).cache(_joblib_make)
    out = str(out_dir)
    return len([make(out, p["n"], p["dt"], p["method"]) for p in points])


Pass = Callable[[Path, list[dict[str, Any]]], int]
COLD: dict[str, Pass] = {
    "runner alone": _runner_alone,
    "entropic": _entropic,
    "signac": _signac_cold,
    "joblib.Memory": _joblib,
}
WARM: dict[str, Pass] = {"entropic": _entropic, "signac": _signac_warm, "joblib.Memory": _joblib}


#: A journal line of the grid's size (entropic writes one per finished run).
_LINE = b'{"row":{"n":1,"dt":0.001,"method":"rk4","id":"0123456789abcdef",' + b"x" * 120 + b"}}\n"


def _floor(folder: Path, size: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """(cold, warm) (wall s, CPU s) of the system calls per point bookkeeping cannot skip."""
    base = str(folder)
    paths = [os.path.join(base, f"{i}.bin") for i in range(size)]
    absent = [os.path.join(base, f"{i}.absent") for i in range(size)]
    fd = os.open(os.path.join(base, "journal"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        gc.collect()
        wall, cpu = time.perf_counter(), time.process_time()
        for path, missing in zip(paths, absent, strict=True):
            os.path.lexists(missing)
            os.path.isfile(path)
            os.write(fd, _LINE)
        cold = (time.perf_counter() - wall, time.process_time() - cpu)
    finally:
        os.close(fd)
    wall, cpu = time.perf_counter(), time.process_time()
    with os.scandir(base) as entries:
        found = sum(entry.is_file(follow_symlinks=False) for entry in entries)
    warm = (time.perf_counter() - wall, time.process_time() - cpu)
    assert found >= size  # the results, and the journal written above
    return cold, warm


def _timed(run: Pass, folder: Path, points: list[dict[str, Any]]) -> tuple[float, float, int, int]:
    """(wall s, CPU s, results, runs) of one pass."""
    gc.collect()
    runs = Writes.count
    wall, cpu = time.perf_counter(), time.process_time()
    results = run(folder, points)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return wall, cpu, results, Writes.count - runs


def _files(folder: Path) -> int:
    """The result files a tool left in its folder (entropic's own .entropic/ aside)."""
    found = 0
    for _root, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if d != ".entropic"]
        found += sum(name.endswith(".bin") for name in names)
    return found


def test_entropic_vs_signac_and_joblib(
    benchmark: BenchmarkFixture, tmp_path: Path, quiet: None
) -> None:
    size = 300 if benchmark.disabled else 20_000
    points = grid(size)
    assert len(points) == size
    rounds = 1 if benchmark.disabled else ROUNDS
    # best[(tool, phase)] = (wall s, CPU s)
    best: dict[tuple[str, str], tuple[float, float]] = {}
    folders: dict[str, Path] = {}
    made: list[Path] = []
    try:
        for i in range(rounds):
            order = TOOLS[i % len(TOOLS) :] + TOOLS[: i % len(TOOLS)]
            folders = {tool: tmp_path / f"{i}-{tool.replace(' ', '-')}" for tool in TOOLS}
            made += folders.values()
            for phase, passes in (("cold", COLD), ("warm", WARM)):
                for tool in order:
                    if tool not in passes:
                        continue
                    wall, cpu, results, runs = _timed(passes[tool], folders[tool], points)
                    assert results == size, (tool, phase, results)
                    assert runs == (size if phase == "cold" else 0), (tool, phase, runs)
                    old = best.get((tool, phase), (wall, cpu))
                    best[tool, phase] = (min(old[0], wall), min(old[1], cpu))
            for tool in TOOLS:
                assert _files(folders[tool]) == size, (tool, _files(folders[tool]))
            for phase, (wall, cpu) in zip(
                ("cold", "warm"), _floor(folders["runner alone"], size), strict=True
            ):
                old = best.get((FLOOR, phase), (wall, cpu))
                best[FLOOR, phase] = (min(old[0], wall), min(old[1], cpu))

        # pytest-benchmark's own row: one more warm entropic sweep (it must run nothing).
        runs = Writes.count
        assert benchmark.pedantic(_entropic, args=(folders["entropic"], points)) == size
        assert Writes.count == runs
    finally:
        # Removed only now: deleting ~100,000 files is slow here and would disturb
        # the next round's timings.
        for folder in made:
            shutil.rmtree(folder, ignore_errors=True)

    if benchmark.disabled:
        return
    us = {key: (wall / size * 1e6, cpu / size * 1e6) for key, (wall, cpu) in best.items()}
    alone = us["runner alone", "cold"]
    info: dict[str, Any] = {"points": size, "rounds": rounds, "outputs_agree": True}
    lines = [
        f"\n{size} points, best of {rounds} interleaved rounds, us/point (wall / CPU)",
        f"{'':14} {'cold':>15} {'bookkeeping':>15} {'warm':>15}",
    ]
    for tool in TOOLS:
        key = tool.replace(" ", "_").replace(".", "_").lower()
        cold = us[tool, "cold"]
        book = (cold[0] - alone[0], cold[1] - alone[1])
        row = f"{tool:14} {cold[0]:7.1f} / {cold[1]:5.1f}"
        info[f"{key}_cold_us_wall"] = round(cold[0], 2)
        info[f"{key}_cold_us_cpu"] = round(cold[1], 2)
        if tool == "runner alone":
            lines.append(row)
            continue
        row += f" {book[0]:7.1f} / {book[1]:5.1f}"
        info[f"{key}_cold_bookkeeping_us_wall"] = round(book[0], 2)
        info[f"{key}_cold_bookkeeping_us_cpu"] = round(book[1], 2)
        warm = us[tool, "warm"]
        row += f" {warm[0]:7.1f} / {warm[1]:5.1f}"
        info[f"{key}_warm_us_wall"] = round(warm[0], 2)
        info[f"{key}_warm_us_cpu"] = round(warm[1], 2)
        lines.append(row)
    floor = us[FLOOR, "cold"], us[FLOOR, "warm"]
    lines.append(
        f"{FLOOR:14} {'':15} {floor[0][0]:7.1f} / {floor[0][1]:5.1f}"
        f" {floor[1][0]:7.1f} / {floor[1][1]:5.1f}"
    )
    for phase, cost in zip(("cold", "warm"), floor, strict=True):
        info[f"syscall_floor_{phase}_us_wall"] = round(cost[0], 2)
        info[f"syscall_floor_{phase}_us_cpu"] = round(cost[1], 2)
    ratios = []
    for peer, name in (("signac", "signac"), ("joblib.Memory", "joblib")):
        for phase in ("cold", "warm"):
            wall = us["entropic", phase][0] / us[peer, phase][0]
            cpu = us["entropic", phase][1] / us[peer, phase][1]
            info[f"entropic_over_{name}_{phase}_wall"] = round(wall, 3)
            info[f"entropic_over_{name}_{phase}_cpu"] = round(cpu, 3)
            ratios.append(f"entropic/{peer} {phase}: {wall:.2f} wall, {cpu:.2f} CPU")
        kept = (us["entropic", "cold"][0] - alone[0]) / (us[peer, "cold"][0] - alone[0])
        info[f"entropic_over_{name}_cold_bookkeeping_wall"] = round(kept, 3)
        ratios.append(f"entropic/{peer} cold bookkeeping: {kept:.2f} wall")
    lines += ratios
    lines.append(
        f"goals: entropic/signac cold <= {SIGNAC_COLD_MAX}, warm <= {SIGNAC_WARM_MAX} (wall)"
    )
    benchmark.extra_info.update(info)
    print("\n".join(lines))

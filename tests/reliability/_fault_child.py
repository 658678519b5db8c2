"""A process of the fault tests: it runs points through a Store and may die on the way.

Run as ``python -m reliability._fault_child SPEC`` with SPEC a JSON object:

- ``db_url``, ``results``: the store;
- ``points``: the params to run; ``how``: ``"sweep"`` or ``"run"`` (one ``run`` each);
- ``version``: written into each result file and its row's custom_data (``v``);
- ``die``: ``"before-insert"`` to SIGKILL itself just before the first upsert into the
  results table (the runs are journalled, nothing is committed), or ``""``;
- ``fsize``: if set, ``RLIMIT_FSIZE`` in bytes (a file may not grow past it: a real
  short write, then EFBIG);
- ``gate``: if set, each runner call waits until this file is gone, having first
  created ``<gate>.waiting``; ``gate_at``: ``"before"`` (the default) it writes its
  result file, or ``"after"`` (the file complete, before the runner returns);
- ``log``: if set, a file each runner call appends ``start <id>`` to when it begins and
  ``end <id>`` once its file is complete; ``<log>.opening`` is created just before the
  Store is built; ``sleep``: seconds each runner call takes;
- ``short``: ``{"at": k, "how": "fsize" | "full", "fill": folder, "snapshot": file}``: at
  the k-th runner call, once its file is written, the next journal line can only be
  written in part: ``fsize`` sets ``RLIMIT_FSIZE`` a little past the journal's size,
  ``full`` fills the filesystem of ``fill`` (results_dir on a small tmpfs) to the last
  byte. The next call lifts that again and first copies the journal to ``snapshot``;
- ``die_at``: at that runner call, before it writes anything, SIGKILL itself;
- ``batch_runs``: runs per batch (batches then go by count only).

It exits 0 when everything ran, 4 on an OSError (printed), 5 on a SweepError.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from ._support import Rel, write_checked


def payload(params: dict[str, Any], version: int) -> str:
    return f"{params['id']} n={params['n']} v={version}"


class VersionRunner:
    """Writes ``<id> n=<n> v=<version>`` (checksummed) and notes the version in custom_data."""

    def __init__(
        self,
        version: int,
        gate: str = "",
        log: str = "",
        gate_at: str = "before",
        sleep: float = 0.0,
    ) -> None:
        self.version = version
        self.gate = gate
        self.gate_at = gate_at
        self.log = log
        self.sleep = sleep

    def _note(self, line: str) -> None:
        fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{line}\n".encode())
        finally:
            os.close(fd)

    def _wait(self) -> None:
        Path(f"{self.gate}.waiting").touch()
        deadline = time.monotonic() + 60
        while os.path.exists(self.gate) and time.monotonic() < deadline:
            time.sleep(0.01)

    def __call__(self, params: dict[str, Any]) -> None:
        if self.log:
            self._note(f"start {params['id']}")
        if self.gate and self.gate_at == "before":
            self._wait()
        if self.sleep:
            time.sleep(self.sleep)
        params["custom_data"]["v"] = self.version
        write_checked(params["result_file"], payload(params, self.version))
        if self.gate and self.gate_at == "after":
            self._wait()
        if self.log:
            self._note(f"end {params['id']}")


class ShortWriteRunner(VersionRunner):
    """The version runner, making the journal's next line fall short at a chosen call."""

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__(spec.get("version", 1), log=spec.get("log", ""))
        self.short = spec.get("short") or {}
        self.die_at = spec.get("die_at", 0)
        self.journals = Path(spec["results"], ".entropic", "journal")
        self.calls = 0
        self.filler: Path | None = None

    def __call__(self, params: dict[str, Any]) -> None:
        self.calls += 1
        if self.calls == self.die_at:
            os.kill(os.getpid(), signal.SIGKILL)
        at = self.short.get("at", 0)
        if self.calls == at + 1 and at:
            self._lift()
        super().__call__(params)
        if self.calls == at:
            self._fall_short()

    def _journal(self) -> Path:
        (found,) = self.journals.glob("*.jsonl")
        return found

    def _fall_short(self) -> None:
        if self.short["how"] == "fsize":
            limit = self._journal().stat().st_size + 100  # less than a line
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
            return
        self.filler = Path(self.short["fill"], "filler")
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            for size in (1 << 20, 1 << 12, 1 << 9, 1):
                while True:
                    try:
                        if os.write(fd, b"\0" * size) < size:
                            break
                    except OSError:
                        break
        finally:
            os.close(fd)

    def _lift(self) -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
        if self.filler is not None:
            self.filler.unlink()
        Path(self.short["snapshot"]).write_bytes(self._journal().read_bytes())


def main(spec_text: str) -> None:
    from entropic import Store, SweepError

    spec = json.loads(spec_text)
    if spec.get("die") == "before-insert":

        def die(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
            if statement.lstrip().upper().startswith(f"INSERT INTO {Rel.__tablename__.upper()}"):
                os.kill(os.getpid(), signal.SIGKILL)

        sa.event.listen(sa.Engine, "before_cursor_execute", die)
    if spec.get("batch_runs"):
        from entropic import sweep

        sweep.BATCH_RUNS = spec["batch_runs"]
        sweep.BATCH_SECONDS = 3600.0
    runner: VersionRunner
    if spec.get("short") or spec.get("die_at"):
        runner = ShortWriteRunner(spec)
    else:
        runner = VersionRunner(
            spec.get("version", 1),
            spec.get("gate", ""),
            spec.get("log", ""),
            spec.get("gate_at", "before"),
            spec.get("sleep", 0.0),
        )
    if spec.get("log"):
        Path(f"{spec['log']}.opening").touch()
    store = Store(
        runner, Rel, results_dir=spec["results"], file_suffix=".txt", db_url=spec["db_url"]
    )
    if spec.get("fsize"):
        resource.setrlimit(resource.RLIMIT_FSIZE, (spec["fsize"], resource.RLIM_INFINITY))
    try:
        if spec.get("how", "sweep") == "sweep":
            store.sweep(spec["points"])
        else:
            for params in spec["points"]:
                store.run(params)
    except SweepError as exc:
        print(f"SweepError: {exc}", file=sys.stderr)
        sys.exit(5)
    except OSError as exc:
        print(f"OSError: {exc!r}", file=sys.stderr)
        sys.exit(4)
    finally:
        store.close()


if __name__ == "__main__":
    # A file past RLIMIT_FSIZE raises EFBIG instead of killing the process.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    main(sys.argv[1])

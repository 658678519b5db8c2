"""What the job-array, kill and requeue tests read back: runner calls and task reports."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from entropic import Store

from ._task import Point, Runner


@dataclass
class Call:
    event: str  # "start" or "end"
    id: str
    job: str
    task: str
    restart: int
    pid: int


def calls(path: Path) -> list[Call]:
    """Every line the runners appended, in order."""
    if not path.exists():
        return []
    found = []
    for line in path.read_text().splitlines():
        event, run_id, job, task, restart, pid = line.split()
        found.append(Call(event, run_id, job, task, int(restart), int(pid)))
    return found


def ends(path: Path) -> int:
    return sum(call.event == "end" for call in calls(path))


def starts_per_id(found: list[Call]) -> Counter[str]:
    return Counter(call.id for call in found if call.event == "start")


def reports(out: Path) -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in sorted(out.glob("*.json"))]


def stored(db_url: str, results: Path) -> list[Point]:
    """Every row of the store, read through a Store of its own."""
    with Store(Runner("/dev/null", 0), Point, results, ".txt", db_url) as store:
        return store.find()

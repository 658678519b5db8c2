"""A Hypothesis state machine that drives the Store and checks it against a plain dict model.

Rules call run, run_or_retrieve, retrieve, register, delete, sweep (with failing
points) and reopen the Store, on a small space of points so that ids collide
often. After every step the database rows, the files in results_dir, the
journal folders and ``Store.failures()`` must agree with the model. The number
of examples follows the Hypothesis profile (``HYPOTHESIS_PROFILE``): a twentieth
of its ``max_examples``, each of ``STEPS`` steps.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from entropic import Store, SweepError, hash_params
from entropic.models import RESERVED_COLUMNS

from ._support import Rel, journal, read_checked, result_files, rows, write_checked

STEPS = 30
EXAMPLES = max(5, settings.default.max_examples // 20)


class Boom(RuntimeError):
    """What a runner told to fail raises."""


class ModelRunner:
    """A checksummed runner that stamps each run with a counter and fails when told to."""

    def __init__(self) -> None:
        self.counter = 0
        self.fail_ids: set[str] = set()
        self.ran: dict[str, int] = {}  # id -> stamp of the runs that succeeded this step

    def __call__(self, params: dict[str, Any]) -> None:
        self.counter += 1
        run_id = params["id"]
        if run_id in self.fail_ids:
            Path(params["result_file"]).write_text("partial")  # then dies: must not survive
            raise Boom(f"{run_id} fails")
        write_checked(params["result_file"], f"{run_id}#{self.counter}")
        params["custom_data"]["stamp"] = self.counter
        self.ran[run_id] = self.counter


@dataclass
class Expected:
    values: dict[str, Any]
    file: str
    payload: str
    custom: dict[str, Any]
    ran: bool  # made by a runner (so custom_data has elapsed_seconds)


@dataclass
class World:
    """The plain model: what the store should hold."""

    rows: dict[str, Expected] = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)  # ids Store.failures() must list
    unsure: set[str] = field(default_factory=set)  # ids whose failure record is not modelled


points = st.fixed_dictionaries(
    {"n": st.integers(0, 4)},
    optional={
        "tag": st.sampled_from([None, "a", "b"]),
        "x": st.sampled_from([0.0, 0.5]),
        "id": st.sampled_from(["e0", "e1"]),
    },
)


def point_id(params: dict[str, Any]) -> str:
    if "id" in params:
        return str(params["id"])
    return hash_params({k: v for k, v in params.items() if k not in RESERVED_COLUMNS})


def column_values(params: dict[str, Any]) -> dict[str, Any]:
    return {"n": params["n"], "x": params.get("x", 0.0), "tag": params.get("tag")}


class StoreMachine(RuleBasedStateMachine):
    db_url = ""  # set by the test
    work = Path()

    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(dir=self.work))
        self.external = self.root / "external"
        self.external.mkdir()
        self.runner = ModelRunner()
        self.store = self._open()
        with self.store.engine.begin() as conn:  # one database serves every example
            conn.execute(sa.delete(Rel.__table__))
            conn.exec_driver_sql("DELETE FROM entropic_failures")
        self.world = World()
        self.orphans: set[str] = set()  # result files without a row that may remain
        self.registered = 0

    def _open(self) -> Store[Rel]:
        return Store(
            self.runner,
            Rel,
            results_dir=self.root / "results",
            file_suffix=".txt",
            db_url=self.db_url,
        )

    def teardown(self) -> None:
        self.store.close()

    # -- helpers ---------------------------------------------------------------------------

    def _ran(self, params: dict[str, Any], custom: dict[str, Any]) -> None:
        """Record in the model the run of ``params`` the runner just finished."""
        run_id = point_id(params)
        stamp = self.runner.ran[run_id]
        self.world.rows[run_id] = Expected(
            column_values(params),
            str(self.store.results_dir / f"{run_id}.txt"),
            f"{run_id}#{stamp}",
            {**custom, "stamp": stamp},
            ran=True,
        )
        self.world.failed.discard(run_id)
        self.orphans.discard(f"{run_id}.txt")

    def _check_record(self, record: Rel) -> None:
        want = self.world.rows[record.id]
        assert record.result_file == want.file
        assert {"n": record.n, "x": record.x, "tag": record.tag} == want.values
        got = dict(record.custom_data)
        assert ("elapsed_seconds" in got) == want.ran
        got.pop("elapsed_seconds", None)
        assert got == want.custom

    def _left_as_it_was(self, run_id: str) -> None:
        if run_id not in self.world.rows:
            self.orphans.discard(f"{run_id}.txt")  # a failed first run removes a leftover

    # -- rules -----------------------------------------------------------------------------

    @rule(params=points, fail=st.booleans(), note=st.sampled_from(["", "é", "x" * 50]))
    def run(self, params: dict[str, Any], fail: bool, note: str) -> None:
        run_id = point_id(params)
        self.runner.ran.clear()
        if fail:
            self.runner.fail_ids = {run_id}
            with pytest.raises(Boom):
                self.store.run(params, note=note)
            self.runner.fail_ids = set()
            self._left_as_it_was(run_id)
            return
        record = self.store.run(params, note=note)
        self._ran(params, {"note": note})
        self._check_record(record)

    @rule(params=points)
    def run_or_retrieve(self, params: dict[str, Any]) -> None:
        run_id = point_id(params)
        self.runner.ran.clear()
        record = self.store.run_or_retrieve(params)
        if run_id in self.world.rows and not self.runner.ran:
            self._check_record(record)
            return
        assert run_id not in self.world.rows, "a cached point ran again"
        self._ran(params, {})
        self._check_record(record)

    @rule(params=points)
    def retrieve(self, params: dict[str, Any]) -> None:
        record = self.store.retrieve(params)
        if point_id(params) not in self.world.rows:
            assert record is None
        else:
            assert record is not None
            self._check_record(record)

    @rule(params=points, note=st.sampled_from(["", "ext"]))
    def register(self, params: dict[str, Any], note: str) -> None:
        run_id = point_id(params)
        self.registered += 1
        path = self.external / f"made-elsewhere-{self.registered}.dat"
        payload = f"external {self.registered}"
        write_checked(path, payload)
        record = self.store.register(params, path, note=note)
        old = self.world.rows.get(run_id)
        if old is not None and old.ran:
            self.orphans.add(Path(old.file).name)  # register leaves the old result where it is
        self.world.rows[run_id] = Expected(
            column_values(params), str(path), payload, {"note": note}, ran=False
        )
        self.world.unsure.add(run_id)
        self._check_record(record)

    @rule(params=points, remove_file=st.booleans())
    def delete(self, params: dict[str, Any], remove_file: bool) -> None:
        run_id = point_id(params)
        want = self.world.rows.get(run_id)
        if want is not None and remove_file and not want.ran:
            with pytest.raises(ValueError, match="outside results_dir"):
                self.store.delete(params, remove_file=True)
            return
        assert self.store.delete(params, remove_file=remove_file) == (want is not None)
        if want is None:
            return
        del self.world.rows[run_id]
        self.world.unsure.add(run_id)
        name = Path(want.file).name
        if remove_file:
            assert not Path(want.file).exists()
        elif want.ran:
            self.orphans.add(name)

    @rule(batch=st.lists(points, min_size=1, max_size=8), fails=st.sets(st.integers(0, 4)))
    def sweep(self, batch: list[dict[str, Any]], fails: set[int]) -> None:
        self.runner.ran.clear()
        distinct: dict[str, dict[str, Any]] = {}
        for params in batch:
            distinct.setdefault(point_id(params), params)
        cached = {run_id for run_id in distinct if run_id in self.world.rows}
        failing = {
            run_id
            for run_id, params in distinct.items()
            if params["n"] in fails and run_id not in cached
        }
        self.runner.fail_ids = failing
        try:
            records = self.store.sweep(batch)
            error = None
        except SweepError as exc:
            records, error = exc.records, exc
        finally:
            self.runner.fail_ids = set()
        assert set(self.runner.ran) == set(distinct) - cached - failing, "ran the wrong points"
        for run_id, params in distinct.items():
            if run_id in self.runner.ran:
                self._ran(params, {})
            elif run_id in failing:
                self._left_as_it_was(run_id)
                self.world.failed.add(run_id)
                self.world.unsure.discard(run_id)
        if failing:
            assert error is not None
            assert sorted(point_id(p) for p, _ in error.failures) == sorted(failing)
            assert all(isinstance(e, Boom) for _, e in error.failures)
        else:
            assert error is None
        assert [r.id for r in records] == [i for i in distinct if i not in failing]
        for record in records:
            self._check_record(record)

    @rule()
    def reopen(self) -> None:
        self.store.close()
        self.store = self._open()

    @precondition(lambda self: bool(self.world.rows))
    @rule(data=st.data())
    def retrieve_by_id(self, data: st.DataObject) -> None:
        run_id = data.draw(st.sampled_from(sorted(self.world.rows)))
        record = self.store.retrieve({"id": run_id})
        assert record is not None
        self._check_record(record)

    # -- the check after every step ---------------------------------------------------------

    @invariant()
    def store_files_and_model_agree(self) -> None:
        held = rows(self.store)
        assert set(held) == set(self.world.rows)
        for run_id, row in held.items():
            want = self.world.rows[run_id]
            assert row["result_file"] == want.file
            assert read_checked(row["result_file"]) == want.payload, "a row's file is wrong"
            assert {k: row[k] for k in ("n", "x", "tag")} == want.values
            assert row["created_at"].tzinfo is None
        owned = {Path(w.file).name for w in self.world.rows.values() if w.ran}
        present = set(result_files(self.store))
        assert owned <= present, "a row's file is missing"
        assert present - owned <= self.orphans, f"unexpected files: {present - owned}"
        self.orphans &= present
        assert journal(self.store) == [], "journal files left after a call returned"
        failures = {f.id for f in self.store.failures()}
        assert failures - self.world.unsure == self.world.failed - self.world.unsure


def test_store_agrees_with_a_dict_model(shared_db_url: str, tmp_path: Path) -> None:
    class Machine(StoreMachine):
        db_url = shared_db_url
        work = tmp_path

    run_state_machine_as_test(
        Machine,
        settings=settings(max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None),
    )

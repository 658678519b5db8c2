"""Bad inputs: each fails with a clear error before any work, and leaves the store as it was.

``CASES`` is the list, one row per bad input: add a row to test a new one. A
row's ``act`` does the bad thing through a Store; ``through`` says which entry
points it goes through (the params ones are tried on run, run_or_retrieve,
register and sweep). After the error, the rows of the table, every file in
results_dir (entropic's journal folders included) and every file beside it
are exactly as before, and the runner was not called unless the case is about
what a runner does.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from entropic import MissingResultError, ParamsDepthError, ParamsTypeError, Store
from entropic.hashing import MAX_DEPTH

from ._support import Rel, checked_runner, result_files, rows, tree


class Runner:
    """The checksummed runner, counting its calls, with a misbehaviour to switch on."""

    def __init__(self) -> None:
        self.calls = 0
        self.mode = ""
        self.victim = ""

    def __call__(self, params: dict[str, Any]) -> None:
        self.calls += 1
        if self.mode == "write-nothing":
            return
        checked_runner(params)
        if self.mode == "delete-another":
            Path(self.victim).unlink()


@dataclass
class Ctx:
    """What a case acts on: a seeded store, its runner, and the folders around it."""

    store: Store[Rel]
    runner: Runner
    tmp: Path
    db_url: str
    seeded: list[Rel]
    external: Path  # a file outside results_dir, for register


def nested(depth: int) -> Any:
    """A value with ``depth`` levels of lists around 0."""
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


# Entry points a params case goes through; each gets the bad params as its only point.
Entry = Callable[["Ctx", dict[str, Any], dict[str, Any]], object]
PARAMS_ENTRY: dict[str, Entry] = {
    "run": lambda c, p, kw: c.store.run(p, **kw),
    "run_or_retrieve": lambda c, p, kw: c.store.run_or_retrieve(p, **kw),
    "register": lambda c, p, kw: c.store.register(p, c.external, **kw),
    # A good new point first: a bad point anywhere fails the sweep before anything runs.
    "sweep": lambda c, p, kw: c.store.sweep([{"n": 1000}, p, {"n": 1001}]),
}
# Lookups take the same params but run nothing: an id or key problem must still be refused.
LOOKUP_ENTRY: dict[str, Entry] = {
    "retrieve": lambda c, p, kw: c.store.retrieve(p),
    "delete": lambda c, p, kw: c.store.delete(p, remove_file=True),
}


@dataclass(frozen=True)
class Case:
    name: str
    error: type[BaseException]
    match: str  # a regular expression the message must contain
    params: dict[str, Any] | None = None  # a bad parameter set, tried through PARAMS_ENTRY
    act: Callable[[Ctx], object] | None = None  # or: anything else, done once
    lookups: bool = False  # also try the params through retrieve and delete
    runs_runner: bool = False  # the case is about a runner, so the runner is called
    custom_data: dict[str, Any] | None = None  # keyword custom_data given with params


def _build(ctx: Ctx, **kwargs: Any) -> object:
    kwargs.setdefault("results_dir", ctx.tmp / "other-results")
    kwargs.setdefault("db_url", ctx.db_url)
    with Store(ctx.runner, Rel, **kwargs):
        pass
    return None


def _runner_writes_nothing(ctx: Ctx) -> object:
    ctx.runner.mode = "write-nothing"
    return ctx.store.run({"n": 7})


def _runner_writes_nothing_on_rerun(ctx: Ctx) -> object:
    ctx.runner.mode = "write-nothing"
    return ctx.store.run({"n": 0})  # seeded: its old row and file must survive


def _unwritable_results_dir(ctx: Ctx) -> object:
    """Build a Store on a results_dir this user cannot write to."""
    locked = Path(tempfile.mkdtemp(prefix="entropic-locked-"))
    try:
        os.chmod(locked, 0o755)
        (locked / "results").mkdir(mode=0o555)
        if os.geteuid() != 0:
            return _build(ctx, results_dir=locked / "results")
        # Root writes anywhere: a forked child drops to an unprivileged user (real
        # and effective ids, so access checks see it too), builds the Store, and
        # reports the exception it got, which is raised here.
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            report: list[str] = ["", ""]
            try:
                os.setgid(65534)
                os.setuid(65534)
                Store(checked_runner, Rel, results_dir=locked / "results", db_url="sqlite://")
            except BaseException as exc:
                report = [type(exc).__name__, str(exc)]
            os.write(write, json.dumps(report).encode())
            os._exit(0)
        os.close(write)
        with os.fdopen(read, "rb") as pipe:
            kind, message = json.loads(pipe.read())
        os.waitpid(pid, 0)
        raise {"PermissionError": PermissionError}.get(kind, RuntimeError)(message)
    finally:
        (locked / "results").rmdir()
        locked.rmdir()


UNSAFE_ID = r"params\['id'\] .*(separator|NUL|empty|'\.'|longer)"
DEEP_CFG = {"n": 1, "cfg": {"a": nested(MAX_DEPTH + 1)}}
VERY_DEEP = nested(100_000)

CASES: list[Case] = [
    # Reserved keys with the wrong types.
    Case("result_file not a path", TypeError, r"params\['result_file'\] must be a path",
         params={"n": 1, "result_file": 3}),
    Case("created_at not a datetime", TypeError, r"params\['created_at'\] must be a datetime",
         params={"n": 1, "created_at": "yesterday"}),
    Case("custom_data not a dict", TypeError, r"params\['custom_data'\] must be a dict",
         params={"n": 1, "custom_data": [1, 2]}),
    Case("id not a str", TypeError, r"params\['id'\] must be a str",
         params={"n": 1, "id": 5}, lookups=True),
    # Columns.
    Case("unknown column", ValueError, r"not columns of Rel: 'bogus'.*its columns are cfg, n",
         params={"n": 1, "bogus": 2}, lookups=True),
    Case("missing required column", ValueError, r"lacks required columns of Rel: 'n'",
         params={"x": 1.0}),
    Case("None for a NOT NULL column", ValueError, r"params\['n'\] is None.*NOT NULL",
         params={"n": None}),
    Case("NaN for an Integer column", ValueError, r"params\['n'\] = nan is not a whole number",
         params={"n": float("nan")}),
    Case("infinity for an Integer column", ValueError, r"params\['n'\] = inf is not a whole",
         params={"n": float("inf")}),
    Case("string for an Integer column", TypeError, r"params\['n'\] = '3' is a str.*Integer",
         params={"n": "3"}),
    Case("NaN for a Float column", ValueError, r"params\['x'\] is NaN",
         params={"n": 1, "x": float("nan")}),
    Case("int too big for an Integer column", ValueError, r"does not fit.*BigInteger",
         params={"n": 2**70}),
    Case("string too long for String(40)", ValueError, r"params\['tag'\] is 41 characters",
         params={"n": 1, "tag": "t" * 41}),
    Case("10,000-key params dict", ValueError, r"not columns of Rel: 'k0', 'k1'",
         params={"n": 1, **{f"k{i}": i for i in range(10_000)}}),
    # Unsafe explicit ids: each would name a file outside results_dir or a hidden one.
    *[
        Case(f"unsafe id {bad!r}", ValueError, UNSAFE_ID,
             params={"n": 1, "id": bad}, lookups=True)
        for bad in ["../escape", "/etc/passwd", "a/b", "a\\b", "..", ".", ".hidden", "",
                    "a\0b", "x" * 300]
    ],
    # custom_data that JSON cannot hold.
    Case("custom_data value not JSON", TypeError, r"custom_data\['blob'\] cannot be stored as JSON",
         params={"n": 1}, custom_data={"blob": object()}),
    Case("custom_data NaN", TypeError, r"custom_data\['e'\] cannot be stored as JSON",
         params={"n": 1}, custom_data={"e": float("nan")}),
    Case("params custom_data with a set", TypeError, r"custom_data\['s'\] cannot be stored",
         params={"n": 1, "custom_data": {"s": {1, 2}}}),
    Case("JSON column value not JSON", TypeError, r"params\['cfg'\] cannot be stored as JSON",
         params={"n": 1, "cfg": {"f": print}}),
    # Nesting past the depth bound, a little and a lot.
    Case("params nested past MAX_DEPTH", ParamsDepthError, rf"deeper than {MAX_DEPTH}|{MAX_DEPTH}",
         params=DEEP_CFG),
    Case("params nested 100,000 deep", ParamsDepthError, r"nested|deep",
         params={"n": 1, "cfg": {"a": VERY_DEEP}}),
    Case("custom_data nested 100,000 deep", ParamsDepthError, r"nested|deep",
         params={"n": 1}, custom_data={"d": VERY_DEEP}),
    # Non-string dict keys.
    Case("non-string params key", ValueError, r"not columns of Rel: 1\b",
         params={"n": 1, 1: 2}),
    Case("non-string custom_data key", TypeError, r"custom_data keys must be str.*\(1, 2\)",
         params={"n": 1, "custom_data": {(1, 2): "x"}}),
    Case("tuple key inside a JSON column", TypeError, r"params\['cfg'\] cannot be stored as JSON",
         params={"n": 1, "cfg": {"a": {(1, 2): 3}}}),
    Case("str and int keys mixed in a JSON column", ParamsTypeError, r"params\[.cfg.\]",
         params={"n": 1, "cfg": {"a": 1, 2: 3}}),
    # Configuration.
    *[
        Case(f"file_suffix {suffix!r}", ValueError, r"file_suffix .* contains a path separator",
             act=lambda c, s=suffix: _build(c, file_suffix=s))
        for suffix in ["/../x.h5", "a/b", ".h5\\x", ".h5\0"]
    ],
    Case("results_dir not writable", PermissionError, r"results_dir .*(not writable|can write)",
         act=_unwritable_results_dir),
    Case("results_dir is a file", NotADirectoryError, r"exists and is not a directory",
         act=lambda c: _build(c, results_dir=c.external)),
    Case("db_url not a URL", ValueError, r"db_url is not a SQLAlchemy database URL",
         act=lambda c: _build(c, db_url="not a url")),
    # Runners that break the contract (the runner is called, then the store is restored).
    Case("runner writes no file", MissingResultError, r"without writing the result file",
         act=_runner_writes_nothing, runs_runner=True),
    Case("runner writes no file on a re-run", MissingResultError, r"without writing the result",
         act=_runner_writes_nothing_on_rerun, runs_runner=True),
]  # fmt: skip


def _through(case: Case) -> list[str]:
    if case.params is None:
        return ["act"]
    # sweep takes no keyword custom_data
    entries = [e for e in PARAMS_ENTRY if not (case.custom_data and e == "sweep")]
    return [*entries, *(LOOKUP_ENTRY if case.lookups else ())]


def _attempt(ctx: Ctx, case: Case, via: str) -> object:
    if case.act is not None:
        return case.act(ctx)
    assert case.params is not None
    entry = PARAMS_ENTRY.get(via) or LOOKUP_ENTRY[via]
    return entry(ctx, case.params, case.custom_data or {})


TABLE = [(case, via) for case in CASES for via in _through(case)]


@pytest.fixture
def ctx(db_url: str, tmp_path: Path) -> Iterator[Ctx]:
    runner = Runner()
    external = tmp_path / "external.dat"
    external.write_text("made elsewhere")
    with Store(runner, Rel, results_dir=tmp_path / "results", db_url=db_url) as store:
        seeded = [store.run({"n": i, "tag": f"seed{i}"}, seed=i) for i in range(3)]
        seeded.append(store.register({"n": 99}, external))
        with pytest.raises(ValueError, match="outside results_dir"):
            store.delete({"n": 99}, remove_file=True)  # a file outside is never deleted
        yield Ctx(store, runner, tmp_path, db_url, seeded, external)


def _state(ctx: Ctx) -> tuple[Any, ...]:
    results = ctx.store.results_dir
    beside = tree(ctx.tmp, skip=(results,))
    # The database file may change on a read (SQLite's WAL index); its rows are compared.
    beside = {k: v for k, v in beside.items() if not k.startswith("store.sqlite3")}
    return rows(ctx.store), tree(results), beside


@pytest.mark.parametrize(("case", "via"), TABLE, ids=[f"{case.name}-{via}" for case, via in TABLE])
def test_bad_input_fails_clearly_before_any_work(ctx: Ctx, case: Case, via: str) -> None:
    before = _state(ctx)
    files = result_files(ctx.store)
    with pytest.raises(case.error) as info:
        _attempt(ctx, case, via)
    message = str(info.value)
    assert re.search(case.match, message, re.DOTALL), message
    assert len(message) < 2_000, f"a {len(message)}-character message is not clear"
    assert ctx.runner.calls == (3 + (1 if case.runs_runner else 0))
    assert _state(ctx) == before
    assert result_files(ctx.store) == files
    for record in ctx.seeded:  # the records handed out before still describe the store
        again = ctx.store.retrieve({"id": record.id})
        assert again is not None
        assert again.result_file == record.result_file
        assert Path(record.result_file).is_file()


def test_the_table_covers_every_kind_of_bad_input_the_issue_lists() -> None:
    names = " | ".join(case.name for case in CASES)
    for kind in [
        "result_file not", "created_at not", "custom_data not", "id not a str",
        "unknown column", "missing required", "unsafe id", "file_suffix",
        "custom_data value not JSON", "NaN for an Integer", "string for an Integer",
        "10,000-key", "past MAX_DEPTH", "non-string", "runner writes no file",
        "results_dir not writable",
    ]:  # fmt: skip
        assert kind in names


def test_runner_that_deletes_another_runs_file(ctx: Ctx) -> None:
    """A row never vouches for a lost file: a hit whose file is gone runs again."""
    victim, other = ctx.seeded[0], ctx.seeded[1]
    ctx.runner.mode = "delete-another"
    ctx.runner.victim = victim.result_file
    ctx.store.run({"n": 50})
    ctx.runner.mode = ""
    assert not Path(victim.result_file).exists()
    calls = ctx.runner.calls
    again = ctx.store.run_or_retrieve({"n": 0, "tag": "seed0"})
    assert Path(again.result_file).is_file()
    assert ctx.runner.calls == calls + 1
    assert again.id == victim.id

    Path(other.result_file).unlink()  # the same in a sweep, beside a good hit
    records = ctx.store.sweep([{"n": 1, "tag": "seed1"}, {"n": 0, "tag": "seed0"}])
    assert [r.id for r in records] == [other.id, victim.id]
    assert all(Path(r.result_file).is_file() for r in records)
    assert ctx.runner.calls == calls + 2

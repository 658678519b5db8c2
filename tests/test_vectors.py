"""The golden hashing vectors (tests/vectors/hashing.json) against every backend there is.

Each case runs through the backend ``entropic.hashing`` picked, the pure-Python
reference, and the compiled core; so both CI runs (compiled and pure) check both.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import entropic
from entropic import _pyhash, errors, hashing

VECTORS_DIR = Path(__file__).parent / "vectors"
VECTORS = json.loads((VECTORS_DIR / "hashing.json").read_text(encoding="ascii"))
CASES = VECTORS["cases"]


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        f"entropic_vectors_{name}", VECTORS_DIR / f"{name}.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tagged = _load("tagged")


def compiled_core() -> Any:
    """entropic._core; skipped only when it is not built and this is the pure-Python run."""
    try:
        return importlib.import_module("entropic._core")
    except ModuleNotFoundError as exc:
        pure = os.environ.get("ENTROPIC_PURE_PYTHON", "") not in ("", "0")
        if pure and exc.name == "entropic._core":
            pytest.skip("entropic._core is not built (pure-Python run)")
        raise


def backend(
    name: str,
) -> tuple[Callable[[Any], str], Callable[[Any], str], Callable[[Any], list[str]]]:
    """(canonical_json, hash_params, hash_many) of one implementation."""
    if name == "active":
        return hashing.canonical_json, hashing.hash_params, hashing.hash_many
    if name == "reference":
        return _pyhash.canonical_json, _pyhash.hash_params, _pyhash.hash_many
    core = compiled_core()
    return core.canonical_json, core.hash_params, core.hash_many


def needs_numpy(case: dict[str, Any]) -> bool:
    return "$numpy" in json.dumps(case["params"])


@pytest.fixture(params=["active", "reference", "compiled"])
def impl(request: pytest.FixtureRequest) -> tuple[Callable[..., Any], ...]:
    return backend(request.param)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_vector(case: dict[str, Any], impl: tuple[Callable[..., Any], ...]) -> None:
    if needs_numpy(case):
        pytest.importorskip("numpy")
    canonical_json, hash_params, hash_many = impl
    inputs = [tagged.decode(case["params"])]
    if "json" in case:
        inputs.append(case["json"])
    for params in inputs:
        if "error" in case:
            expected = case["error"]
            cls = getattr(errors, expected["class"])
            for call in (canonical_json, hash_params, lambda p: hash_many([p])):
                with pytest.raises(cls) as info:
                    call(params)
                assert str(info.value) == expected["message"]
        else:
            assert canonical_json(params) == case["canonical"]
            assert hash_params(params) == case["id"]
            assert hash_many([params, params]) == [case["id"], case["id"]]


def test_json_inputs_hash_as_typed_from_a_shell() -> None:
    """The plain-JSON form of a case, parsed from text, gives the case's id."""
    plain = [c for c in CASES if "json" in c and "error" not in c]
    assert len(plain) > 20
    for case in plain:
        assert entropic.hash_params(json.loads(json.dumps(case["json"]))) == case["id"]


def test_vectors_cover_the_spec() -> None:
    names = " ".join(c["name"] for c in CASES)
    for topic in (
        "1/8192",
        "3/8192",
        "1e16",
        "1e-5",
        "1.5e-12",
        "5e-13",
        "-1e-13",
        "subnormal",
        "1e308",
        "NaN",
        "Infinity",
        "ints of any size",
        "astral",
        "lone high surrogate",
        "control characters",
        "int keys",
        "float and int keys",
        "str enum",
        "int enum",
        "float enum",
        "tuple value",
        "nested",
        "set",
        "numpy",
        "numpy array subclass",
        "numpy scalar subclass",
        "nesting past the bound",
    ):
        assert topic in names, topic
    assert VECTORS["max_depth"] == hashing.MAX_DEPTH == _pyhash.MAX_DEPTH


def test_vectors_file_is_current() -> None:
    """hashing.json is what make_vectors.py writes from the reference today."""
    pytest.importorskip("numpy")
    saved = list(sys.path)
    try:
        make_vectors = _load("make_vectors")  # it puts its own folder on sys.path
        assert make_vectors.build() == VECTORS
    finally:
        sys.path[:] = saved

"""Regenerate tests/vectors/hashing.json from the pure-Python reference (entropic._pyhash).

Run from the repository root after a deliberate change to the spec:

    python tests/vectors/make_vectors.py

Each case's expected canonical text, id or error comes from the reference; the
inputs are written in the tagged form described in tagged.py.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent.parent / "python"))

from tagged import decode, python_only  # noqa: E402

from entropic import _pyhash  # noqa: E402


def f(x: float) -> dict[str, str]:
    """A float, exactly: NaN, the infinities and every double by its repr."""
    if math.isnan(x):
        return {"$float": "nan"}
    if math.isinf(x):
        return {"$float": "inf" if x > 0 else "-inf"}
    return {"$float": repr(x)}


def s(text: str) -> Any:
    """A str; by code points when it holds lone surrogates (not valid in strict JSON)."""
    if any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        return {"$str": [ord(c) for c in text]}
    return text


def d(*pairs: tuple[Any, Any]) -> dict[str, Any]:
    """A dict with any keys, in this insertion order."""
    return {"$dict": [[k, v] for k, v in pairs]}


def nest(depth: int, leaf: Any) -> dict[str, Any]:
    return {"$nest": {"depth": depth, "leaf": leaf}}


def enum_of(kind: str, value: Any) -> dict[str, Any]:
    return {"$enum": {"type": kind, "value": value}}


def np_(dtype: str, value: Any, scalar: bool = False, subclass: bool = False) -> dict[str, Any]:
    body = {"dtype": dtype, "value": value, "scalar": scalar}
    if subclass:
        body["subclass"] = True
    return {"$numpy": body}


FLOATS = {
    "tie 1/8192 rounds to even": 1 / 8192,
    "tie 3/8192 rounds to even": 3 / 8192,
    "tie 5000 + 1/8192 above 2^52 scaled": 5000 + 1 / 8192,
    "0.1 + 0.2": 0.1 + 0.2,
    "1e16 exponent form": 1e16,
    "1e15 fixed form": 1e15,
    "9999999999999998.0 largest fixed": 9999999999999998.0,
    "1e-5 exponent form": 1e-5,
    "1e-4 fixed form": 1e-4,
    "1.5e-5": 1.5e-5,
    "1.5e-12 rounds up to 2e-12": 1.5e-12,
    "2.5e-12 rounds to even 2e-12": 2.5e-12,
    "5e-13 rounds to 0.0": 5e-13,
    "-1e-13 rounds to -0.0": -1e-13,
    "-0.0": -0.0,
    "smallest subnormal": 5e-324,
    "largest subnormal": 2.225073858507201e-308,
    "smallest normal": 2.2250738585072014e-308,
    "1e308": 1e308,
    "largest double": 1.7976931348623157e308,
    "100.0 keeps .0": 100.0,
    "8191.999999999999 below 2^13": 8191.999999999999,
    "just above 2^13, unchanged": 8192.000000000002,
    "123456.78901234567 unchanged above 2^13": 123456.78901234567,
    "-2.675": -2.675,
    "NaN": math.nan,
    "Infinity": math.inf,
    "-Infinity": -math.inf,
}

CASES: list[tuple[str, Any]] = [
    ("simple", {"n": 100, "dt": 0.1}),
    ("simple, keys in the other order", {"dt": 0.1, "n": 100}),
    ("empty", {}),
    ("sweep-like", {"r": 3.7, "K": 50.0, "x0": 2.0, "dt": 0.01, "steps": 1000, "method": "rk4"}),
    *((f"float: {name}", {"x": f(x)}) for name, x in FLOATS.items()),
    ("floats in a list", {"xs": [f(x) for x in FLOATS.values()]}),
    (
        "ints of any size",
        {
            "ints": [
                0,
                -1,
                2**63 - 1,
                2**63,
                -(2**63),
                -(2**63) - 1,
                2**64,
                10**30,
                -(10**40),
                3**200,
            ]
        },
    ),
    ("bool and None", {"flags": [True, False, None], "on": True}),
    ("string escapes", {"s": 'quote " backslash \\ slash / tab\t newline\n cr\r bs\b ff\f'}),
    ("control characters and DEL", {"s": "".join(map(chr, range(32))) + "\x7f"}),
    ("non-ASCII", {"s": "é ß € 中文 \u00a0 \u2028 \ufeff \uffff"}),
    ("astral characters", {"s": "😀 𝄞 \U0010ffff"}),
    ("lone high surrogate", {"s": s("a\ud800b")}),
    ("lone low surrogate", {"s": s("\udfff")}),
    ("surrogate pair as two code points", {"s": s("\ud83d\ude00")}),
    (
        "non-ASCII and surrogate keys in code-point order",
        d((s("\uffff"), 1), (s("😀"), 2), (s("\ud800"), 3), (s("é"), 4), (s("z"), 5), (s(""), 6)),
    ),
    ("int keys in numeric order", d((10, "a"), (9, "b"), (-1, "c"), (2**70, "d"), (-(2**70), "e"))),
    ("float and int keys", d((f(2.5), "a"), (1, "b"), (f(0.5), "c"), (f(-math.inf), "d"))),
    ("float keys are not rounded", d((f(0.1 + 0.2), 1), (f(1e-13), 2), (f(1e16), 3), (f(-0.0), 4))),
    ("bool keys", d((True, "t"), (False, "f"), (f(0.5), "half"))),
    ("None key alone", d((None, 1))),
    (
        "int and float keys near 2^53 and 2^63",
        d((2**53 + 1, "a"), (f(2.0**53), "b"), (2**63, "c"), (f(2.0**63 + 2048), "d")),
    ),
    (
        "nested dicts and lists",
        {
            "cfg": {
                "solver": {"name": "rk4", "tol": f(1e-9)},
                "grid": [[1, 2], [3, [4, {"k": 5}]]],
            },
            "empty": {"list": [], "dict": {}},
        },
    ),
    ("tuples become lists", {"t": {"$tuple": [1, {"$tuple": [2, f(3.5)]}, {"$tuple": []}]}}),
    ("set of mixed members", {"s": {"$set": [3, "a", f(1.5), {"$tuple": [1, 2]}, None, True]}}),
    ("set of strings", {"s": {"$set": ["banana", "apple", "cherry", "é"]}}),
    ("frozenset and empty set", {"f": {"$frozenset": [2, 1, 10]}, "e": {"$set": []}}),
    ("set members sorted by canonical text", {"s": {"$set": [10, 9, -1, f(0.5)]}}),
    ("str enum", {"e": enum_of("str", "fast")}),
    ("int enum", {"e": enum_of("int", 3)}),
    ("float enum reads the float value", {"e": enum_of("float", f(0.1 + 0.2))}),
    ("plain enum with a tuple value", {"e": enum_of("plain", {"$tuple": [1, f(0.5), "x"]})}),
    ("enums in a list", {"es": [enum_of("plain", "a"), enum_of("int", -7)]}),
    ("numpy int64 scalar", {"n": np_("int64", 3, scalar=True)}),
    ("numpy float32 scalar", {"x": np_("float32", f(0.10000000149011612), scalar=True)}),
    ("numpy bool scalar", {"b": np_("bool", True, scalar=True)}),
    ("numpy float64 is a float", {"x": np_("float64", f(0.1 + 0.2), scalar=True)}),
    ("numpy 2-d array", {"a": np_("int32", [[1, 2, 3], [4, 5, 6]])}),
    ("numpy float array", {"a": np_("float64", [f(0.1), f(1 / 8192), f(math.nan)])}),
    (
        "numpy array subclass defined outside numpy",
        {"a": np_("float64", [f(0.5), f(1.0), f(0.1 + 0.2)], subclass=True)},
    ),
    ("numpy scalar subclass defined outside numpy", {"n": np_("int32", 5, True, True)}),
    ("error: numpy longdouble scalar", {"x": np_("longdouble", f(0.1), scalar=True)}),
    ("error: numpy clongdouble array", {"x": [np_("clongdouble", [f(1.0)])]}),
    ("nesting at the bound", {"x": nest(255, 1)}),
    ("error: nesting past the bound", {"x": nest(256, 1)}),
    ("error: params not a mapping", [1, 2]),
    ("error: params a str", "n=100"),
    ("error: int and str keys", d((1, "a"), ("b", 2))),
    ("error: None and str keys", {"cfg": d(("a", 1), (None, 2))}),
    ("error: NaN key", {"cfg": {"inner": d((f(1.0), 1), (f(math.nan), 2))}}),
    ("error: NaN key before mixed keys", d(("a", 1), (f(math.nan), 2))),
    ("error: first error in key order", {"b": nest(300, 0), "a": [d((1, 1), ("x", 2))]}),
    ("error: object with an address", {"cfg": {"solver": {"$object": None}}}),
    ("error: tuple key", {"cfg": d(({"$tuple": [1, 2]}, 1))}),
    ("error: object inside a set", {"s": {"$set": [1, {"$object": None}]}}),
    ("error: object under an int key", d((3, {"$object": None}))),
    ("error: object under a float key", d((f(0.5), [{"$object": None}]))),
    ("error: object under a bool key", d((True, {"$object": None}))),
]


def plain_json(tagged: Any) -> Any:
    """The same input as strict JSON, or None when JSON cannot say it exactly."""
    if not _only_json_kinds(tagged):
        return None
    try:
        text = json.dumps(decode(tagged), allow_nan=False)
    except (TypeError, ValueError):
        return None
    if "\\ud8" in text or "\\ud9" in text or "\\uda" in text or "\\udb" in text:
        return None  # lone surrogates (or pairs) would not survive strict parsers
    return json.loads(text)


def _only_json_kinds(tagged: Any) -> bool:
    if isinstance(tagged, list):
        return all(_only_json_kinds(item) for item in tagged)
    if isinstance(tagged, dict):
        if len(tagged) == 1 and next(iter(tagged)).startswith("$"):
            return "$float" in tagged and math.isfinite(float(tagged["$float"]))
        return all(_only_json_kinds(value) for value in tagged.values())
    return True


def build() -> dict[str, Any]:
    cases = []
    for name, tagged in CASES:
        case: dict[str, Any] = {"name": name, "params": tagged}
        plain = plain_json(tagged)
        if plain is not None:
            case["json"] = plain
        if python_only(tagged):
            case["python_only"] = True
        try:
            params = decode(tagged)
            case["canonical"] = _pyhash.canonical_json(params)
            case["id"] = _pyhash.hash_params(params)
        except (TypeError, ValueError) as exc:
            case["error"] = {"class": type(exc).__name__, "message": str(exc)}
        if name.startswith("error:") != ("error" in case):
            wanted = "an error" if name.startswith("error:") else "an id"
            raise SystemExit(f"case {name!r}: the reference did not give {wanted}")
        cases.append(case)
    return {
        "about": "entropic hashing vectors; generated by tests/vectors/make_vectors.py "
        "from entropic._pyhash. Input format: tests/vectors/tagged.py and docs/hashing.md.",
        "max_depth": _pyhash.MAX_DEPTH,
        "cases": cases,
    }


def main() -> None:
    vectors = build()
    text = json.dumps(vectors, indent=1, ensure_ascii=True, allow_nan=False) + "\n"
    (HERE / "hashing.json").write_text(text, encoding="ascii")
    print(f"wrote {len(vectors['cases'])} cases to {HERE / 'hashing.json'}")


if __name__ == "__main__":
    main()

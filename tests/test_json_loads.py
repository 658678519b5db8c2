"""``json_loads``: either None, or exactly what ``json.loads`` reads, for JSON columns.

A warm sweep reads every record's custom_data back as JSON text. The compiled
core reads plain JSON itself and gives None for anything else, which the caller
then leaves to ``json.loads``. These tests hold both backends to that contract:
a value given is ``json.loads``'s own (same types, floats bit for bit, dict keys
in the same order), and nothing ever raises.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from compiled import PURE_RUN
from compiled import core as _core
from entropic import _pyhash, hashing
from entropic._storage.codec import loads

needs_core = pytest.mark.skipif(
    _core is None or PURE_RUN, reason="entropic._core is not in use (pure run)"
)


def same(a: Any, b: Any) -> bool:
    """Equal, of the same types throughout, floats bit for bit, dict keys in order."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        return struct.pack("<d", a) == struct.pack("<d", b)
    if type(a) is list:
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is dict:
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


def test_same_tells_types_float_bits_and_key_order_apart() -> None:
    assert same({"a": [1, 2.5, None, "x"]}, {"a": [1, 2.5, None, "x"]})
    assert not same(1, 1.0)
    assert not same(1, True)
    assert not same(0.0, -0.0)
    assert not same({"a": 1, "b": 2}, {"b": 2, "a": 1})
    assert not same([1], [1, 1])
    assert same(math.nan, math.nan)


json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(),
    st.sampled_from(
        [
            2**63 - 1,
            -(2**63),
            2**63,
            -(2**63) - 1,
            10**40,
            5e-324,
            2.2250738585072014e-308,
            2.225073858507201e-308,
            1.7976931348623157e308,
            -0.0,
            "\ud800",
            "\udc00\ud800",
            "\U0001f600",
            '"\\/\b\f\n\r\t\x00\x1f\x7f',
            "é€",
        ]
    ),
)
json_values = st.recursive(
    json_leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(max_size=4), inner, max_size=4),
    ),
    max_leaves=16,
)
DUMPS_OPTIONS = [
    {},
    {"ensure_ascii": False},
    {"separators": (",", ":")},
    {"separators": (",", ":"), "ensure_ascii": False},
    {"indent": 2},
    {"indent": "\t", "ensure_ascii": False},
]


@needs_core
@pytest.mark.parametrize("options", DUMPS_OPTIONS)
@given(value=json_values)
def test_the_compiled_reader_gives_none_or_what_json_loads_gives(
    options: dict[str, Any], value: Any
) -> None:
    text = json.dumps(value, **options)
    got = _core.json_loads(text)
    assert got is None or same(got, json.loads(text))


@pytest.mark.parametrize("options", DUMPS_OPTIONS)
@given(value=json_values)
def test_json_loads_gives_none_or_what_json_loads_gives(
    options: dict[str, Any], value: Any
) -> None:
    # hashing.json_loads is whichever backend is in use; the reference is checked too.
    text = json.dumps(value, **options)
    for reader in (hashing.json_loads, _pyhash.json_loads):
        got = reader(text)
        assert got is None or same(got, json.loads(text))
    assert same(_pyhash.json_loads(text), json.loads(text))


def _json_outcome(text: str) -> tuple[str, Any]:
    try:
        return "value", json.loads(text)
    except (ValueError, RecursionError) as exc:
        return type(exc).__name__, str(exc)


#: Numbers as JSON writes them: long mantissas and exponents well past the float range.
json_numbers = st.from_regex(
    r"-?(0|[1-9][0-9]{0,40})(\.[0-9]{1,40})?([eE][-+]?[0-9]{1,4})?", fullmatch=True
)


@given(text=json_numbers)
def test_numbers_are_read_as_json_loads_reads_them(text: str) -> None:
    expected = json.loads(text)
    readers = [hashing.json_loads, _pyhash.json_loads]
    if _core is not None:
        readers.append(_core.json_loads)
    for reader in readers:
        got = reader(text)
        assert got is None or same(got, expected)
    if _core is not None and not PURE_RUN and type(expected) is float:
        # Every float is read by the compiled core, inf (an overflow) included.
        assert same(_core.json_loads(text), expected)


#: Text made of JSON's own characters, so much of it is JSON or nearly so.
json_like_text = st.text(
    alphabet=st.sampled_from(list('{}[]",: \t\n\r0123456789.-+eEtrufalsn\\/u0dDbfA\x00é')),
    max_size=24,
)


@given(text=st.one_of(st.text(), json_like_text))
def test_any_text_gives_none_or_what_json_loads_gives_never_an_error(text: str) -> None:
    kind, expected = _json_outcome(text)
    readers = [hashing.json_loads, _pyhash.json_loads]
    if _core is not None:
        readers.append(_core.json_loads)
    for reader in readers:
        got = reader(text)
        if kind != "value":
            assert got is None
        else:
            assert got is None or same(got, expected)
    # The reference gives None only when json.loads raises (or reads null).
    assert same(_pyhash.json_loads(text), expected if kind == "value" else None)
    # The caller's decoder gives json.loads' values and errors, whatever the backend.
    if kind == "value":
        assert same(loads(text), expected)
    else:
        with pytest.raises((ValueError, RecursionError)) as caught:
            loads(text)
        assert (type(caught.value).__name__, str(caught.value)) == (kind, expected)


PLAIN_TEXTS = [
    '{"elapsed_seconds": 1.2e-05}',
    '{"elapsed_seconds": 1.2345678e-05}',
    '{"elapsed_seconds":0.5,"steps":1000,"converged":true,"note":null}',
    '{"stats": {"mean": -1.5e3, "runs": [1, 2, 3]}, "label": "caf\\u00e9 \\"x\\"\\n",'
    ' "tags": [], "more": {}}',
    '{"emoji": "\\ud83d\\ude00", "raw": "é€😀", "slash": "a\\/b\\\\c\\b\\f\\r\\t"}',
    " \n\t\r[0, -0, -0.0, 0.0, 1E2, 1e+2, 1e-2, 123456789012345678, -9223372036854775808]\r\n",
    "9223372036854775807",
    '"plain"',
    "true",
    "false",
    "1e400",
    "-1e400",
    "4.9e-324",
    "2.4703282292062327e-324",
    "2.4703282292062328e-324",
    "1e-400",
    "-0.0",
    "0." + "1" * 800,
    "179769313486231580793728971405301e276",
    '{"a": 1, "b": 2, "a": 3}',
    # More keys than the compiled reader keeps, so kept keys are replaced, and long keys.
    json.dumps({f"key {i}": i for i in range(300)}),
    json.dumps({f"key {i}": i for i in range(300)}, ensure_ascii=False),
    json.dumps({"k" * n: n for n in range(1, 80)}),
    '[{"x\\u00e9": 1, "xé": 2, "x": {"x": "x"}}, {"xé": 3, "x\\u00e9": 4}]',
    "[" * hashing.MAX_DEPTH + "]" * hashing.MAX_DEPTH,
    '{"a":' * (hashing.MAX_DEPTH - 1) + "[]" + "}" * (hashing.MAX_DEPTH - 1),
]


@needs_core
@pytest.mark.parametrize("text", PLAIN_TEXTS)
def test_the_compiled_reader_reads_plain_json_itself(text: str) -> None:
    # The fast path must engage for ordinary custom_data, not fall back every time.
    got = _core.json_loads(text)
    assert got is not None
    assert same(got, json.loads(text))


LEFT_TEXTS = [
    "NaN",
    "Infinity",
    "-Infinity",
    '{"x": NaN}',
    "[1, -Infinity]",
    '"\\ud800"',
    '"\\udc00"',
    '"\\ud800\\u0041"',
    '"\\ud800x"',
    '"a\nb"',
    '"tab\there"',
    "9223372036854775808",
    "-9223372036854775809",
    "1" * 5000,
    "",
    " ",
    "{} x",
    "[1,]",
    '{"a":1,}',
    "[1 2]",
    "01",
    "1.",
    ".5",
    "1e",
    "-",
    "+1",
    "tru",
    "nul",
    "[",
    '{"a"}',
    "{1: 2}",
    '"\\x41"',
    '"\\u12"',
    '"unterminated',
    "\ufeff{}",
    "\u00a0{}",
    "{}\x0b",
    "\u0661",  # an Arabic-Indic digit: \d, but not a JSON digit
    "[" * (hashing.MAX_DEPTH + 1) + "]" * (hashing.MAX_DEPTH + 1),
    '{"a":' * hashing.MAX_DEPTH + "[]" + "}" * hashing.MAX_DEPTH,
    "[" * 100_000,
    "[" * 100_000 + "]" * 100_000,
]


@needs_core
@pytest.mark.parametrize("text", LEFT_TEXTS)
def test_the_compiled_reader_leaves_anything_unusual_to_json(text: str) -> None:
    assert _core.json_loads(text) is None


class Text(str):
    pass


@pytest.mark.parametrize(
    "value", [b'{"a": 1}', bytearray(b"1"), Text('{"a": 1}'), 1, 1.5, None, ["1"]]
)
def test_only_an_exact_str_of_json_is_read(value: Any) -> None:
    assert hashing.json_loads(value) is None
    assert _pyhash.json_loads(value) is None
    if _core is not None:
        assert _core.json_loads(value) is None


def test_a_lone_surrogate_in_the_text_itself_is_left_to_json() -> None:
    text = '"a\ud800b"'
    assert json.loads(text) == "a\ud800b"
    assert _pyhash.json_loads(text) == "a\ud800b"
    if _core is not None:
        assert _core.json_loads(text) is None
    assert loads(text) == "a\ud800b"


def test_errors_of_text_left_to_json_are_its_own() -> None:
    for text in ("[1,]", "NaN x", '"\\ud800', "", "1" * 5000, "[" * 100_000):
        with pytest.raises((ValueError, RecursionError)) as caught:
            json.loads(text)
        with pytest.raises(type(caught.value)) as ours:
            loads(text)
        assert str(ours.value) == str(caught.value)

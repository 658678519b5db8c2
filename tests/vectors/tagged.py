"""The tagged JSON form of the hashing vectors: plain JSON plus ``$``-tags for Python kinds.

A JSON object with exactly one key that starts with ``$`` is a tag; every other
object is a dict with string keys. The Rust tests (rust/tests/vectors.rs) read
the same form. Tags:

- ``{"$float": "nan" | "inf" | "-inf" | "<repr>"}``: a float (plain JSON numbers
  with a point or exponent are floats too).
- ``{"$str": [code points]}``: a str that may hold lone surrogates.
- ``{"$tuple": [...]}``, ``{"$set": [...]}``, ``{"$frozenset": [...]}``.
- ``{"$dict": [[key, value], ...]}``: a dict with any keys, in that insertion order.
- ``{"$enum": {"type": "plain" | "str" | "int" | "float", "value": v}}``: the
  member of a one-member Enum (``str``, ``int``, ``float`` are mixin enums).
- ``{"$numpy": {"dtype": "int64", "value": v, "scalar": bool, "subclass": bool}}``:
  ``np.array(v, dtype)``, or its single element as a numpy scalar; with ``subclass``
  (optional, default false), an instance of a subclass defined here, outside numpy.
- ``{"$nest": {"depth": n, "leaf": v}}``: ``v`` inside ``n`` nested lists.
- ``{"$object": null}``: an ``object()``, whose ``str()`` holds its address (Python only).
"""

from __future__ import annotations

import enum
from typing import Any

__all__ = ["decode", "python_only"]

#: numpy dtypes whose values no Python number holds (``.tolist()`` gives numpy values).
_NUMPY_ONLY = ("longdouble", "clongdouble")
_ENUM_BASES: dict[str, type | None] = {"plain": None, "str": str, "int": int, "float": float}


def decode(tagged: Any) -> Any:
    """Build the Python object a tagged value stands for."""
    if isinstance(tagged, list):
        return [decode(item) for item in tagged]
    if not isinstance(tagged, dict):
        return tagged
    if len(tagged) == 1:
        ((tag, body),) = tagged.items()
        if tag.startswith("$"):
            return _decode_tag(tag, body)
    return {key: decode(value) for key, value in tagged.items()}


def _decode_tag(tag: str, body: Any) -> Any:
    if tag == "$float":
        return float(body)
    if tag == "$str":
        return "".join(map(chr, body))
    if tag == "$tuple":
        return tuple(decode(item) for item in body)
    if tag == "$set":
        return {decode(item) for item in body}
    if tag == "$frozenset":
        return frozenset(decode(item) for item in body)
    if tag == "$dict":
        return {decode(key): decode(value) for key, value in body}
    if tag == "$enum":
        base = _ENUM_BASES[body["type"]]
        members = [("MEMBER", decode(body["value"]))]
        if base is None:
            return enum.Enum("VectorEnum", members)["MEMBER"]
        return enum.Enum("VectorEnum", members, type=base)["MEMBER"]
    if tag == "$numpy":
        import numpy as np

        array = np.array(decode(body["value"]), dtype=body["dtype"])
        value = array[()] if body.get("scalar") else array
        if not body.get("subclass"):
            return value
        if body.get("scalar"):
            # A subclass of the scalar's own type, as a user module would define it.
            return type("VectorScalar", (type(value),), {})(value)
        return array.view(type("VectorArray", (np.ndarray,), {}))
    if tag == "$nest":
        value = decode(body["leaf"])
        for _ in range(body["depth"]):
            value = [value]
        return value
    if tag == "$object":
        return object()
    raise ValueError(f"unknown tag {tag!r} in a hashing vector")


def python_only(tagged: Any) -> bool:
    """True if the value holds something only Python can build (the Rust test skips it)."""
    if isinstance(tagged, list):
        return any(python_only(item) for item in tagged)
    if not isinstance(tagged, dict):
        return False
    if len(tagged) == 1:
        ((tag, body),) = tagged.items()
        if tag == "$object":
            return True
        if tag == "$numpy" and body["dtype"] in _NUMPY_ONLY:
            return True
        if tag == "$dict":
            return any(
                python_only(key) or python_only(value) or _python_only_key(key)
                for key, value in body
            )
        if tag.startswith("$"):
            return python_only(body)
    return any(python_only(value) for value in tagged.values())


def _python_only_key(key: Any) -> bool:
    """Keys the Rust Value cannot hold: anything but str, int, float, bool and None."""
    if isinstance(key, dict):
        return next(iter(key)) not in ("$float", "$str")
    return isinstance(key, list)

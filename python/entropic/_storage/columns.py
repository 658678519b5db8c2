"""One table of column types: how a value is checked, read from text and matched, per type.

Everything that turns a user's value into a column value goes through ``rule_for``:
validating params before a run (``Rule.check``), filters of ``Store.find`` and
``Store.count`` (``Rule.match``), and the command line's ``--where``, whose text
is first read as the column's type (``Rule.parse``). So a value means the same
thing in a run, in a query and in the shell.

Floats match the way ids do: the hash rounds floats to 12 decimal places, so a
filter value ``x`` matches a stored value within ``FLOAT_TOLERANCE`` of
``round(x, 12)``.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any, ClassVar

import sqlalchemy as sa

from entropic import hashing
from entropic.errors import ParamsDepthError

__all__ = [
    "FLOAT_TOLERANCE",
    "Rule",
    "check_json_text",
    "check_text",
    "json_clean",
    "json_default",
    "json_value",
    "names",
    "rule_for",
    "unwrap_numpy",
]

#: Half a unit in the 12th decimal place: the widest gap between a stored float
#: and the 12-decimal value it is hashed as.
FLOAT_TOLERANCE = 5e-13

#: Integer columns are this many bits wide, by dialect (32 unless listed).
_INT_BITS = {"sqlite": 64}
_PLAIN = frozenset({int, float, str, bool})


class Rule:
    """How the values of one column are checked, read from text and matched by equality."""

    #: What a value must be, said in an error message: "pass {wants}".
    wants: ClassVar[str] = "a value"
    #: What ``parse`` accepts, said in an error message: "give {text_wants}".
    text_wants: ClassVar[str] = "a value"
    #: Whether the checked value is exactly what the database gives back.
    exact: bool = True
    #: Whether a filter can match the column by equality.
    matchable: ClassVar[bool] = True
    #: Whether the column holds text (so the word null is text, not NULL, on the command line).
    textual: ClassVar[bool] = False

    def __init__(self, column: sa.Column[Any], name: str, owner: str, dialect: str) -> None:
        self.column = column
        self.name = name
        self.nullable = bool(column.nullable)
        self.dialect = dialect
        self.null_text = f"column {owner}.{name} is NOT NULL"
        self.target = f"column {owner}.{name} is {type(column.type).__name__}"

    def check(self, value: Any, where: str) -> Any:
        """``value`` as the column stores it, or TypeError/ValueError naming the fix."""
        if value is None:
            if self.nullable:
                return None
            raise ValueError(f"{where} is None, but {self.null_text}")
        if type(value) not in _PLAIN:
            value = unwrap_numpy(value)
        value = self.convert(value, where)
        self.limit(value, where)
        return value

    def convert(self, value: Any, where: str) -> Any:
        """The type check and conversion shared by storing and matching."""
        return value

    def plain(self) -> tuple[int, int, int] | None:
        """``(kind, low, high)`` of the values ``check`` takes as they are, for
        ``hashing.hash_plain``; None if the column has no such plain kind."""
        return None

    def limit(self, value: Any, where: str) -> None:
        """What only a stored value must respect (range, length, characters)."""

    def stored_as(self, sql_type: object) -> None:
        """Take in the column's type in the database, where it differs from the model's."""

    def match(self, value: Any, where: str) -> Any:
        """An SQL condition matching ``value`` (None matches NULL)."""
        column = self.column
        if value is None:
            return column.is_(None)
        if not self.matchable:
            raise ValueError(
                f"{where}: {self.target}, and JSON equality differs between databases; "
                "filter it with SQLAlchemy on the model (see docs/api.md)"
            )
        return column == self.convert(unwrap_numpy(value), where)

    def parse(self, text: str) -> Any:
        """``text`` read as a value of this column's type; ValueError if it is not one."""
        return text

    def _type_error(self, value: Any, where: str) -> TypeError:
        return TypeError(
            f"{where} = {value!r} is a {type(value).__name__}, but {self.target}; pass {self.wants}"
        )


class BooleanRule(Rule):
    wants = "True or False"
    text_wants = "true or false"

    def plain(self) -> tuple[int, int, int] | None:
        return (hashing.PLAIN_BOOL, 0, 0)

    def convert(self, value: Any, where: str) -> Any:
        if isinstance(value, bool):
            return value
        raise TypeError(f"{where} = {value!r} is not a bool, but {self.target}")

    def parse(self, text: str) -> Any:
        lowered = text.lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ValueError(text)


class IntegerRule(Rule):
    wants = "an int"
    text_wants = "a whole number"

    def __init__(self, column: sa.Column[Any], name: str, owner: str, dialect: str) -> None:
        super().__init__(column, name, owner, dialect)
        ctype = column.type
        if isinstance(ctype, sa.BigInteger):
            self.bits = 64
        elif isinstance(ctype, sa.SmallInteger):
            self.bits = 16
        else:
            self.bits = _INT_BITS.get(dialect, 32)
        self.low, self.high = -(2 ** (self.bits - 1)), 2 ** (self.bits - 1) - 1

    def check(self, value: Any, where: str) -> Any:
        if type(value) is int and self.low <= value <= self.high:
            return value
        return super().check(value, where)

    def plain(self) -> tuple[int, int, int] | None:
        return (hashing.PLAIN_INT, self.low, self.high)

    def convert(self, value: Any, where: str) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self._type_error(value, where)
        if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
            raise ValueError(
                f"{where} = {value!r} is not a whole number, but {self.target}; pass an int"
            )
        return int(value)

    def limit(self, value: Any, where: str) -> None:
        if not self.low <= value <= self.high:
            raise ValueError(
                f"{where} = {value!r} does not fit {self.target} ({self.bits}-bit on "
                f"{self.dialect}); use a BigInteger column"
            )

    def parse(self, text: str) -> Any:
        return int(text)


class FloatRule(Rule):
    wants = "a number"
    text_wants = "a finite number"

    def __init__(self, column: sa.Column[Any], name: str, owner: str, dialect: str) -> None:
        super().__init__(column, name, owner, dialect)
        self.exact = not getattr(column.type, "asdecimal", False)

    def check(self, value: Any, where: str) -> Any:
        if type(value) is float and value == value:  # not NaN
            return value
        return super().check(value, where)

    def plain(self) -> tuple[int, int, int] | None:
        return (hashing.PLAIN_FLOAT, 0, 0)

    def convert(self, value: Any, where: str) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
            raise self._type_error(value, where)
        try:
            return float(value)
        except OverflowError:
            raise ValueError(f"{where} = {value!r} is too large for {self.target}") from None

    def limit(self, value: Any, where: str) -> None:
        if math.isnan(value):
            raise ValueError(
                f"{where} is NaN, which SQL databases cannot store or match reliably; "
                "pass a number, or None for a nullable column"
            )

    def match(self, value: Any, where: str) -> Any:
        if value is None or not self.exact:
            return super().match(value, where)
        number = self.convert(unwrap_numpy(value), where)
        if not math.isfinite(number):
            raise ValueError(f"{where} = {value!r}: only finite numbers can be matched")
        target = float.__round__(number, 12)
        return self.column.between(target - FLOAT_TOLERANCE, target + FLOAT_TOLERANCE)

    def parse(self, text: str) -> Any:
        number = float(text)
        if not math.isfinite(number):
            raise ValueError(text)
        return number


class NumericRule(FloatRule):
    """Numeric(asdecimal=True) stores exact decimals: they are kept as given and match exactly."""

    exact = False

    def __init__(self, column: sa.Column[Any], name: str, owner: str, dialect: str) -> None:
        Rule.__init__(self, column, name, owner, dialect)

    def check(self, value: Any, where: str) -> Any:
        return Rule.check(self, value, where)

    def plain(self) -> tuple[int, int, int] | None:
        return None

    def convert(self, value: Any, where: str) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
            raise self._type_error(value, where)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{where} = {value!r} is not finite, but {self.target}")
        return value

    def limit(self, value: Any, where: str) -> None:
        pass


class StringRule(Rule):
    wants = "a str"
    text_wants = "text"
    textual = True

    def __init__(self, column: sa.Column[Any], name: str, owner: str, dialect: str) -> None:
        super().__init__(column, name, owner, dialect)
        self.length = getattr(column.type, "length", None)

    def check(self, value: Any, where: str) -> Any:
        if (
            type(value) is str
            and value.isascii()
            and "\0" not in value
            and (self.length is None or len(value) <= self.length)
        ):
            return value
        return super().check(value, where)

    def plain(self) -> tuple[int, int, int] | None:
        return (hashing.PLAIN_STR, 0, -1 if self.length is None else self.length)

    def convert(self, value: Any, where: str) -> Any:
        if isinstance(value, Enum) and isinstance(value.value, str):
            value = value.value
        if not isinstance(value, str):
            raise self._type_error(value, where)
        return value

    def limit(self, value: Any, where: str) -> None:
        if self.length is not None and len(value) > self.length:
            raise ValueError(
                f"{where} is {len(value)} characters long, but {self.target}({self.length})"
            )
        check_text(value, where, self.dialect)


class EnumRule(StringRule):
    exact = False

    def __init__(self, column: sa.Column[Any], name: str, owner: str, dialect: str) -> None:
        super().__init__(column, name, owner, dialect)
        ctype = column.type
        assert isinstance(ctype, sa.Enum)
        self.enum_class = ctype.enum_class
        self.choices = set(ctype.enums)

    def check(self, value: Any, where: str) -> Any:
        return Rule.check(self, value, where)

    def plain(self) -> tuple[int, int, int] | None:
        return None

    def convert(self, value: Any, where: str) -> Any:
        if self.enum_class is not None and isinstance(value, self.enum_class):
            return value
        if isinstance(value, str) and value in self.choices:
            return value
        raise ValueError(
            f"{where} = {value!r} is not one of {sorted(self.choices)} ({self.target})"
        )

    def limit(self, value: Any, where: str) -> None:
        pass


class DateTimeRule(Rule):
    wants = "a datetime"
    text_wants = "an ISO date-time such as 2024-05-01T12:00:00"

    def __init__(self, column: sa.Column[Any], name: str, owner: str, dialect: str) -> None:
        super().__init__(column, name, owner, dialect)
        self.exact = not getattr(column.type, "timezone", False)

    def convert(self, value: Any, where: str) -> Any:
        if not isinstance(value, datetime):
            raise TypeError(f"{where} = {value!r} is not a datetime, but {self.target}")
        return value

    def parse(self, text: str) -> Any:
        return datetime.fromisoformat(text)


class DateRule(Rule):
    wants = "a date"
    text_wants = "an ISO date such as 2024-05-01"

    def convert(self, value: Any, where: str) -> Any:
        if isinstance(value, datetime) or not isinstance(value, date):
            raise TypeError(f"{where} = {value!r} is not a date, but {self.target}")
        return value

    def parse(self, text: str) -> Any:
        return date.fromisoformat(text)


class JsonRule(Rule):
    wants = "JSON: numbers, strings, booleans, None, lists and dicts with string keys"
    matchable = False

    def __init__(self, column: sa.Column[Any], name: str, owner: str, dialect: str) -> None:
        super().__init__(column, name, owner, dialect)
        #: Whether the column is JSONB, which refuses lone surrogates and NUL in its text.
        self.strict = is_jsonb(column.type)

    def convert(self, value: Any, where: str) -> Any:
        return json_value(value, where)

    def match(self, value: Any, where: str) -> Any:
        if value is None:
            # A None stored in a JSON column is JSON null unless the column says
            # none_as_null; a filter for None finds both.
            return sa.or_(self.column.is_(None), sa.cast(self.column, sa.Text) == "null")
        return super().match(value, where)

    def limit(self, value: Any, where: str) -> None:
        if self.strict:
            check_json_text(value, where)

    def stored_as(self, sql_type: object) -> None:
        self.strict = self.strict or is_jsonb(sql_type)

    def parse(self, text: str) -> Any:
        return json.loads(text)


class OtherRule(Rule):
    """A column type entropic does not know: its values go to SQLAlchemy as they are."""

    exact = False


#: The one table from column type to rule, most specific type first.
RULES: tuple[tuple[type[Any], type[Rule]], ...] = (
    (sa.Boolean, BooleanRule),
    (sa.Enum, EnumRule),
    (sa.Integer, IntegerRule),
    (sa.Float, FloatRule),
    (sa.Numeric, NumericRule),
    (sa.String, StringRule),
    (sa.DateTime, DateTimeRule),
    (sa.Date, DateRule),
    (sa.JSON, JsonRule),
)


def rule_for(column: sa.Column[Any], owner: str, dialect: str, name: str | None = None) -> Rule:
    """The rule of ``column`` (named ``name`` in messages; its name by default)."""
    ctype = column.type
    kind = next((rule for sa_type, rule in RULES if isinstance(ctype, sa_type)), OtherRule)
    return kind(column, column.name if name is None else name, owner, dialect)


def check_text(value: str, where: str, dialect: str) -> None:
    """Refuse text a database cannot store: lone surrogates anywhere, NUL on PostgreSQL."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(
                f"{where} = {value!r} contains a lone surrogate ({value[exc.start]!r} at index "
                f"{exc.start}), which is not valid Unicode and no database stores as text; "
                "decode the text properly, or drop the character"
            ) from None
    if dialect == "postgresql" and "\0" in value:
        raise ValueError(
            f"{where} = {value!r} contains a NUL character, which PostgreSQL cannot store "
            "in a text column; remove it (or keep the value in a JSON column)"
        )


def is_jsonb(sql_type: object) -> bool:
    """Whether ``sql_type`` is PostgreSQL's JSONB (a model's, or one reflected from a table)."""
    return getattr(sql_type, "__visit_name__", "") == "JSONB"


def check_json_text(value: Any, where: str) -> None:
    """Refuse JSON holding text JSONB cannot store: a lone surrogate or NUL, in a value or a key.

    A JSON column keeps both as escapes and gives them back exactly; JSONB decodes
    its text and refuses them, so they are refused here, before anything runs.
    """
    stack: list[tuple[Any, str]] = [(value, where)]
    while stack:
        item, at = stack.pop()
        if isinstance(item, str):
            _check_jsonb_text(item, at)
        elif isinstance(item, dict):
            for key, inner in item.items():
                _check_jsonb_text(key, f"the key {key!r} of {at}")
                stack.append((inner, f"{at}[{key!r}]"))
        elif isinstance(item, list):
            stack.extend((inner, f"{at}[{i}]") for i, inner in enumerate(item))


def _check_jsonb_text(text: str, where: str) -> None:
    if "\0" in text:
        raise ValueError(
            f"{where} = {text!r} contains a NUL character, which PostgreSQL's JSONB cannot "
            "store; remove it (a JSON column keeps it)"
        )
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(
                f"{where} = {text!r} contains a lone surrogate ({text[exc.start]!r} at index "
                f"{exc.start}), which is not valid Unicode and PostgreSQL's JSONB cannot "
                "store; decode the text properly, or drop the character"
            ) from None


def unwrap_numpy(value: Any) -> Any:
    """A numpy scalar (or 0-d array) as the Python value it holds; numpy is never imported."""
    np = sys.modules.get("numpy")
    if np is None:
        return value
    if isinstance(value, np.generic) or (isinstance(value, np.ndarray) and value.ndim == 0):
        return value.item()
    return value


def json_default(value: Any) -> Any:
    """JSON for numpy values (arrays as lists); TypeError for anything else."""
    np = sys.modules.get("numpy")
    if np is not None and isinstance(value, (np.generic, np.ndarray)):
        plain = value.tolist()
        if type(plain) is type(value):  # longdouble and the like hold nothing plainer
            raise TypeError(f"{type(value).__name__} is not JSON-serialisable")
        return plain
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


#: Scalars a JSON round trip gives back unchanged (exact types; floats only when finite).
_SAME_AFTER_JSON = frozenset({str, int, bool, type(None)})


def json_value(value: Any, where: str) -> Any:
    """A JSON-round-tripped copy of ``value``, or an error naming ``where`` and the fix."""
    kind = type(value)
    if kind in _SAME_AFTER_JSON or (kind is float and math.isfinite(value)):
        return value  # what the round trip would give
    try:
        return json.loads(json.dumps(value, allow_nan=False, default=json_default))
    except RecursionError:
        raise ParamsDepthError(
            f"{where} is nested too deeply to store as JSON; flatten it (at most "
            f"{hashing.MAX_DEPTH} levels)"
        ) from None
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"{where} cannot be stored as JSON ({exc}); use numbers, strings, booleans, "
            "None, lists and dicts with string keys (NaN and infinity are not JSON)"
        ) from None


def json_clean(data: Mapping[str, Any], name: str) -> dict[str, Any]:
    """A deep, JSON-round-tripped copy of ``data``, or a TypeError naming the bad key."""
    clean: dict[str, Any] = {}
    for key, value in data.items():
        if not isinstance(key, str):
            raise TypeError(f"{name} keys must be str, not {type(key).__name__} ({key!r})")
        clean[key] = json_value(value, f"{name}[{key!r}]")
    return clean


def names(keys: Iterable[Any], most: int = 20) -> str:
    """The keys as text, the first ``most`` of them only, so a huge dict gives a short message."""
    listed = list(keys)
    shown = ", ".join(repr(key) for key in listed[:most])
    return shown if len(listed) <= most else f"{shown}, ... ({len(listed)} keys in all)"

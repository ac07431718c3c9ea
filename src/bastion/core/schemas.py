"""Pydantic building blocks shared by every domain's schemas."""

from __future__ import annotations

import math
import re
import unicodedata
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Strict,
    StringConstraints,
    field_validator,
)

T = TypeVar("T")


def _visible(value: str) -> str:
    """A name shows what it is: no control characters (Unicode category Cc: newlines,
    tabs, escapes) and no format characters (Cf: zero-width spaces and joiners, bidi
    overrides, soft hyphens), which make two different names look the same."""
    if any(unicodedata.category(c) in ("Cc", "Cf") for c in value):
        raise ValueError("must not contain control or invisible formatting characters")
    return value


# Every name a caller gives a thing (team, role, agent, source, webhook endpoint, policy,
# key, sink, ...). `DisplayName` is a person's name, which may be empty.
Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    AfterValidator(_visible),
]
DisplayName = Annotated[
    str, StringConstraints(strip_whitespace=True, max_length=200), AfterValidator(_visible)
]
Description = Annotated[str, StringConstraints(max_length=1000)]

# A secret's name, the same in a body and in a URL path (no "/": it is one path segment).
_ONE_SEGMENT = r"^[A-Za-z0-9_.:-]{1,200}$"
SecretName = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=_ONE_SEGMENT)]


# How deep JSON may nest inside one field of a body (a tool's schema, a call's
# arguments, metadata): far beyond any real document, and well inside what every
# validator and the database can walk.
MAX_DEPTH = 64
_INT64 = (-(2**63), 2**63 - 1)


class In(BaseModel):
    """Request bodies: unknown fields are an error, so typos never pass silently, and
    types are strict: `true` is not 1, `"1"` is not 1, `1.0` is not 1 (a caller's mistake
    stays visible instead of being stored as something else). Times are `Timestamp`s
    (RFC 3339 text: JSON has no time type); enums take `Strict(False)`, their values being
    text too."""

    model_config = ConfigDict(extra="forbid", str_max_length=10_000, strict=True)

    @field_validator("*", mode="after")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        """NUL is never meaningful text, and PostgreSQL cannot store it, nor an unpaired
        surrogate (not text in any encoding); NaN and Infinity are not JSON (the parser
        takes them), compare unlike numbers and PostgreSQL's JSON refuses them: refuse
        them here, anywhere in a body, and JSON nested deeper than `MAX_DEPTH`. An integer
        field holds what a database column can (64 bits)."""
        if (
            isinstance(value, int)
            and not isinstance(value, bool)
            and not _INT64[0] <= value <= _INT64[1]
        ):
            raise ValueError("must fit in 64 bits (-2**63 to 2**63 - 1)")  # what databases store
        if isinstance(value, datetime):
            return _utc(value)
        problem = _unstorable(value)
        if problem is not None:
            raise ValueError(problem)
        return value


def _utc(value: datetime) -> datetime:
    """A time with its zone, in UTC: a time without one is ambiguous (and compared with
    an aware "now" it raised TypeError), and one past year 9999 in UTC cannot be stored."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("must include a time zone, e.g. 2030-01-01T00:00:00Z")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range") from None


# RFC 3339 date-time (the offset is checked after parsing, for a clearer message).
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})?"
)


def _rfc3339_text(value: Any) -> Any:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or _RFC3339.fullmatch(value) is None:
        # pydantic alone takes numbers, and numeric text, as Unix times
        raise ValueError("must be an RFC 3339 time, e.g. 2030-01-01T00:00:00Z")
    return value


# A point in time, in a body or a query: RFC 3339 text with its zone, in UTC once parsed.
Timestamp = Annotated[datetime, Strict(False), BeforeValidator(_rfc3339_text), AfterValidator(_utc)]


def _integer_text(value: Any) -> Any:
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]{1,19}", value) is None:
        raise ValueError("must be a whole number, e.g. 50")
    return value


def _number_text(value: Any) -> Any:
    if isinstance(value, str) and (
        re.fullmatch(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?", value) is None
    ):
        raise ValueError("must be a number, e.g. 2.5")
    return value


def _boolean_text(value: Any) -> Any:
    if isinstance(value, str) and value not in ("true", "false"):
        raise ValueError("must be true or false")
    return value


# Query parameters arrive as text: these take the JSON spelling of their type and nothing
# else (pydantic alone reads "1.0" and " 5" as 5, "yes" and "on" as true, "1_0" as 10).
QueryInt = Annotated[int, BeforeValidator(_integer_text)]
QueryNumber = Annotated[float, BeforeValidator(_number_text)]
QueryBool = Annotated[bool, BeforeValidator(_boolean_text)]


def _unstorable(value: Any, depth: int = 0) -> str | None:
    if depth > MAX_DEPTH:
        return f"must not nest deeper than {MAX_DEPTH} levels"
    if isinstance(value, str):
        if "\x00" in value:
            return "must not contain NUL (\\u0000) characters"
        if not value.isascii():
            try:
                value.encode()
            except UnicodeEncodeError:  # JSON's "\ud800": text no database can store
                return "must not contain unpaired surrogates (\\ud800-\\udfff)"
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else "must not be NaN or Infinity (not JSON)"
    if isinstance(value, dict):
        for key, item in value.items():
            problem = _unstorable(key) or _unstorable(item, depth + 1)
            if problem is not None:
                return problem
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            problem = _unstorable(item, depth + 1)
            if problem is not None:
                return problem
    return None


def unstorable(value: Any) -> str | None:
    """Why a JSON value cannot be stored (NUL, unpaired surrogates, NaN/Infinity,
    nesting past `MAX_DEPTH`, integers past 64 bits), or None: for JSON parsed outside
    a request model (the MCP gateway's tool arguments)."""
    problem = _unstorable(value)
    return problem if problem is not None else _too_big(value)


def _too_big(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return None if _INT64[0] <= value <= _INT64[1] else "must fit in 64 bits"
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    for item in items:  # bounded: `_unstorable` refused anything nested too deep
        problem = _too_big(item)
        if problem is not None:
            return problem
    return None


class Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class ListOf(BaseModel, Generic[T]):
    data: list[T]
    next_cursor: str | None

"""Pydantic building blocks shared by every domain's schemas."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, StringConstraints, field_validator

T = TypeVar("T")

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Description = Annotated[str, StringConstraints(max_length=1000)]


# How deep JSON may nest inside one field of a body (a tool's schema, a call's
# arguments, metadata): far beyond any real document, and well inside what every
# validator and the database can walk.
MAX_DEPTH = 64
_INT64 = (-(2**63), 2**63 - 1)


class In(BaseModel):
    """Request bodies: unknown fields are an error, so typos never pass silently."""

    model_config = ConfigDict(extra="forbid", str_max_length=10_000)

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


class Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class ListOf(BaseModel, Generic[T]):
    data: list[T]
    next_cursor: str | None

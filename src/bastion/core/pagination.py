"""Opaque cursors and page sizes shared by every list endpoint."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute, Session

from bastion.core.errors import InvalidInput

T = TypeVar("T")
DEFAULT_LIMIT = 50
MAX_LIMIT = 200


@dataclass(frozen=True)
class Page(Generic[T]):
    data: list[T]
    next_cursor: str | None


def encode_cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> Any:
    if cursor is None:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        return json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput.field("cursor", "is not a cursor this API issued") from None


def decode_id_cursor(cursor: str | None) -> str | None:
    """Cursor over newest-first id order: the last id of the previous page."""
    value = decode_cursor(cursor)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 64:
        raise InvalidInput.field("cursor", "is not a cursor this API issued")
    return value


def page_of(rows: list[T], limit: int, key: Any) -> Page[T]:
    """`rows` holds up to limit+1 items; the extra one only signals there is more."""
    if len(rows) > limit:
        rows = rows[:limit]
        return Page(rows, encode_cursor(key(rows[-1])))
    return Page(rows, None)


def newest_first(
    db: Session,
    stmt: Select[T],
    id_column: InstrumentedAttribute[str],
    *,
    limit: int,
    cursor: str | None,
) -> Page[T]:
    """One page of `stmt` in newest-first id order (ids are time-sortable)."""
    after = decode_id_cursor(cursor)
    if after:
        stmt = stmt.where(id_column < after)
    rows = list(db.execute(stmt.order_by(id_column.desc()).limit(limit + 1)).scalars())
    return page_of(rows, limit, key=lambda row: getattr(row, id_column.key))

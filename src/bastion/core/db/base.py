"""The declarative base, column types and the tenant-scoped lookup every domain uses."""

from __future__ import annotations

from datetime import datetime
from typing import TypeVar

from sqlalchemy import JSON, DateTime, MetaData
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Session
from sqlalchemy.types import TypeDecorator

from bastion.core.clock import as_utc
from bastion.core.errors import NotFound
from bastion.core.ids import has_prefix

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Rows print as `<Type id=…>` only: no column value (hashes, secrets, PII) ever
    reaches a log line or traceback through `repr`. Secret columns are also marked
    `info={"secret": True}`."""

    metadata = MetaData(naming_convention=NAMING)

    def __repr__(self) -> str:
        identity = (
            getattr(self, "id", None) or getattr(self, "lookup", None) or getattr(self, "chain", "")
        )
        return f"<{type(self).__name__} id={identity}>"


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = as_utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)


JSONType = JSON().with_variant(JSONB(), "postgresql")


M = TypeVar("M", bound=Base)


def get_in_org(
    db: Session, model: type[M], object_id: str, org_id: str, *, prefix: str, noun: str
) -> M:
    """The row of `model` with this `prefix`-typed id in this organisation, or NotFound:
    an id of another type, a missing row and another organisation's row answer alike."""
    found = db.get(model, object_id) if has_prefix(object_id, prefix) else None
    if found is None or getattr(found, "org_id", None) != org_id:
        raise NotFound(f"{noun} not found")
    return found

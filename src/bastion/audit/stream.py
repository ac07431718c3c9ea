"""An organisation's audit chain read as a stream by the domains that watch it (alerts):
the chain's head, the events after a sequence number, and what happened in a time
window. The watchers sit above audit and never query its tables themselves; each
function here is the one query they used to write, so no round trip was added."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from bastion.audit.models import AuditEvent, AuditHead


def head_seq(db: Session, chain: str) -> int:
    """The last sequence number of `chain` (0 before its first event)."""
    return int(db.execute(select(AuditHead.seq).where(AuditHead.chain == chain)).scalar() or 0)


def events_after(db: Session, chain: str, seq: int, limit: int) -> list[AuditEvent]:
    """Up to `limit` events of `chain` after `seq`, in chain order, attached to `db`."""
    stmt = (
        select(AuditEvent)
        .where(AuditEvent.chain == chain, AuditEvent.seq > seq)
        .order_by(AuditEvent.seq)
        .limit(limit)
    )
    return list(db.execute(stmt).scalars())


def _window(
    chain: str,
    since: datetime,
    until: datetime,
    *,
    actor_id: str | None,
    actor_ip: str | None = None,
    resource_id: str | None = None,
) -> list[ColumnElement[bool]]:
    """Events of `chain` in (since, until], narrowed to the subject given (None: any)."""
    conds = [AuditEvent.chain == chain, AuditEvent.time > since, AuditEvent.time <= until]
    if actor_id is not None:
        conds.append(AuditEvent.actor_id == actor_id)
    if actor_ip is not None:
        conds.append(AuditEvent.actor_ip == actor_ip)
    if resource_id is not None:
        conds.append(AuditEvent.resource_id == resource_id)
    return conds


def count_between(
    db: Session,
    chain: str,
    since: datetime,
    until: datetime,
    *,
    types: Sequence[str],
    actor_id: str | None = None,
    actor_ip: str | None = None,
    resource_id: str | None = None,
) -> int:
    """How many events of `types` in (since, until] for one subject (thresholds)."""
    window = _window(
        chain, since, until, actor_id=actor_id, actor_ip=actor_ip, resource_id=resource_id
    )
    stmt = select(func.count()).select_from(AuditEvent).where(*window, AuditEvent.type.in_(types))
    return int(db.execute(stmt).scalar_one())


def metadata_between(
    db: Session, chain: str, since: datetime, until: datetime, *, type_: str, actor_id: str
) -> list[dict[str, Any] | None]:
    """The metadata of one actor's events of `type_` in (since, until] (summary events
    that carry their own counts)."""
    window = _window(chain, since, until, actor_id=actor_id)
    stmt = select(AuditEvent.event_metadata).where(*window, AuditEvent.type == type_)
    return list(db.execute(stmt).scalars())


def addresses_before(
    db: Session, chain: str, seq: int, since: datetime, *, type_: str, actor_id: str, limit: int
) -> list[str | None]:
    """Up to `limit` distinct addresses of one actor's events of `type_` after `since`
    and before `seq` (the networks it used until then)."""
    stmt = (
        select(AuditEvent.actor_ip)
        .where(
            AuditEvent.chain == chain,
            AuditEvent.type == type_,
            AuditEvent.actor_id == actor_id,
            AuditEvent.seq < seq,
            AuditEvent.time > since,
        )
        .distinct()
        .limit(limit)
    )
    return list(db.execute(stmt).scalars())

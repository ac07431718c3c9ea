"""Retention: purge events older than an organisation's retention period without
breaking verification of what remains.

Events are purged only up to a signed checkpoint (the *anchor*): verification then
starts from the anchor's hash instead of the genesis hash. The segment to purge is
verified first; a segment that does not verify is kept (evidence is never destroyed),
and the refusal is reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from bastion.audit import service as audit
from bastion.audit.models import INSTANCE_CHAIN, AuditCheckpoint, AuditEvent, AuditHead
from bastion.core.clock import utcnow
from bastion.core.context import SYSTEM
from bastion.core.events import EventType, Outcome


@dataclass(frozen=True)
class Purge:
    chain: str
    purged: int
    anchor_seq: int | None
    refused: str | None = None


def purge_instance_chain(db: Session, retention_days: int) -> Purge:
    """`purge_chain` for the instance's own chain (events of no organisation)."""
    return purge_chain(db, INSTANCE_CHAIN, retention_days)


def purge_chain(db: Session, chain: str, retention_days: int) -> Purge:
    cutoff = utcnow() - timedelta(days=retention_days)
    anchor = db.execute(
        select(AuditCheckpoint)
        .join(
            AuditEvent,
            (AuditEvent.chain == AuditCheckpoint.chain) & (AuditEvent.seq == AuditCheckpoint.seq),
        )
        .where(AuditCheckpoint.chain == chain, AuditEvent.time < cutoff)
        .order_by(AuditCheckpoint.seq.desc())
        .limit(1)
    ).scalar_one_or_none()
    if anchor is None:
        return Purge(chain, 0, None)
    check = audit.verify(db, chain)
    if not check.valid:
        return Purge(chain, 0, anchor.seq, refused=check.problem or "chain does not verify")
    result = db.execute(
        delete(AuditEvent).where(AuditEvent.chain == chain, AuditEvent.seq <= anchor.seq)
    )
    db.execute(
        delete(AuditCheckpoint).where(
            AuditCheckpoint.chain == chain, AuditCheckpoint.seq < anchor.seq
        )
    )
    purged = int(getattr(result, "rowcount", 0) or 0)
    head = db.get(AuditHead, chain)
    if head is not None and 0 < head.unordered_seq <= anchor.seq:
        # The events out of order are gone: what remains is in time order throughout.
        head.unordered_seq, head.unordered_time = 0, None
    if purged:
        audit.record(
            db,
            type=EventType.AUDIT_PURGED,
            actor=SYSTEM,
            org_id=None if chain == INSTANCE_CHAIN else chain,
            outcome=Outcome.SUCCESS,
            resource=("org", chain),
            metadata={
                "purged": purged,
                "through_seq": anchor.seq,
                "retention_days": retention_days,
            },
        )
    return Purge(chain, purged, anchor.seq)

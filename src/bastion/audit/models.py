from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, Index, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from bastion.core.db import Base, JSONType, UTCDateTime

INSTANCE_CHAIN = "instance"


class AuditEvent(Base):
    """One audit event. `chain` is the org id, or `instance` for events with no org
    (e.g. a sign-in attempt for an unknown email). Events form a per-chain hash chain."""

    __tablename__ = "audit_events"
    __table_args__ = (
        UniqueConstraint("chain", "seq"),
        # Search by type, actor, resource or time, and the alert rules' window counts.
        Index("ix_audit_events_chain_type_seq", "chain", "type", "seq"),
        Index("ix_audit_events_chain_actor_seq", "chain", "actor_id", "seq"),
        Index("ix_audit_events_chain_resource_seq", "chain", "resource_id", "seq"),
        Index("ix_audit_events_chain_time", "chain", "time"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    chain: Mapped[str] = mapped_column(String(40))
    seq: Mapped[int] = mapped_column(BigInteger)
    org_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    time: Mapped[datetime] = mapped_column(UTCDateTime)
    type: Mapped[str] = mapped_column(String(64))
    actor_type: Mapped[str] = mapped_column(String(32))
    actor_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    actor_ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    actor_user_agent: Mapped[str | None] = mapped_column(String(512), nullable=True)
    resource_type: Mapped[str | None] = mapped_column(String(32), nullable=True)
    resource_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    outcome: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(500), nullable=True)
    request_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    event_metadata: Mapped[dict[str, Any]] = mapped_column("metadata", JSONType, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """The newest link of each chain; locked while appending so chains never fork.

    Event times never decrease along a chain: an event is stamped no earlier than the
    one before it (`time`, the newest event's), whatever the appending worker's clock
    says. So a time range is a seq range, which search finds with two index probes.
    Events recorded before that rule (revision 0014) may be out of order: the last one
    that is earlier than its predecessor is `unordered_seq` (0: none), and the latest
    time among the events up to it is `unordered_time`; a search starting after that
    time still translates, an older one filters the plain way."""

    __tablename__ = "audit_heads"

    chain: Mapped[str] = mapped_column(String(40), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
    time: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    unordered_seq: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    unordered_time: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class AuditCheckpoint(Base):
    """A signed statement "chain C had N events ending in hash H at time T". Anchors
    verification: a chain rewritten or cut after a checkpoint no longer matches it, and
    retention may purge only events covered by one."""

    __tablename__ = "audit_checkpoints"
    __table_args__ = (UniqueConstraint("chain", "seq"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    chain: Mapped[str] = mapped_column(String(40))
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    key_version: Mapped[int] = mapped_column(BigInteger)
    signature: Mapped[str] = mapped_column(String(128))


class AuditSink(Base):
    """A SIEM destination for one organisation's events, with its delivery state: the
    last delivered sequence number of the org's chain (`cursor`) only ever advances after
    the receiver accepted the batch (at-least-once, nothing lost across restarts)."""

    __tablename__ = "audit_sinks"
    __table_args__ = (Index("ix_audit_sinks_org_id_id", "org_id", "id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(40))
    name: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(20))  # syslog | https | splunk_hec
    format: Mapped[str] = mapped_column(String(20))  # json | ocsf | cef
    config: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # The destination's credential (HEC token, bearer token): AES-256-GCM under a key
    # derived from the root key, bound to org and sink; never returned by the API.
    secret_ciphertext: Mapped[bytes | None] = mapped_column(
        LargeBinary, nullable=True, info={"secret": True}
    )
    key_version: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    cursor: Mapped[int] = mapped_column(BigInteger, default=0)
    delivered: Mapped[int] = mapped_column(BigInteger, default=0)
    failures: Mapped[int] = mapped_column(BigInteger, default=0)  # consecutive
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    leased_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(500), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

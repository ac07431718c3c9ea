"""The alerts domain's tables: rules, incidents and each organisation's evaluation
cursor. The table names predate the package (they were defined with the audit models)
and are kept as they are, so moving the classes changed no schema."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, Index, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from bastion.core.db import Base, JSONType, UTCDateTime


class AlertRule(Base):
    """A rule over an organisation's event stream (see `bastion.alerts.rules`)."""

    __tablename__ = "alert_rules"
    __table_args__ = (Index("ix_alert_rules_org_id_id", "org_id", "id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(40))
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(40))
    params: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # Channel destinations without their secrets; the secrets (webhook signing keys) are
    # AES-256-GCM under a root-derived key, bound to org and rule.
    channels: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    secrets_ciphertext: Mapped[bytes | None] = mapped_column(
        LargeBinary, nullable=True, info={"secret": True}
    )
    key_version: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Alert(Base):
    """One incident: every matching event of the same rule and subject while it is open
    and recent extends it (`count`, `last_at`) instead of raising another."""

    __tablename__ = "alerts"
    __table_args__ = (
        Index("ix_alerts_org_id_id", "org_id", "id"),
        Index("ix_alerts_rule_key", "rule_id", "key", "status"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(40))
    rule_id: Mapped[str] = mapped_column(String(40))
    kind: Mapped[str] = mapped_column(String(40))
    key: Mapped[str] = mapped_column(String(300))
    status: Mapped[str] = mapped_column(String(20), default="open")  # open | resolved
    summary: Mapped[str] = mapped_column(String(500))
    count: Mapped[int] = mapped_column(BigInteger, default=1)
    first_event_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    last_event_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    first_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_at: Mapped[datetime] = mapped_column(UTCDateTime)
    details: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    notify_attempts: Mapped[int] = mapped_column(BigInteger, default=0)
    next_notify_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    notify_error: Mapped[str | None] = mapped_column(String(500), nullable=True)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AlertCursor(Base):
    """How far the alert evaluator has read each organisation's chain."""

    __tablename__ = "alert_cursors"

    org_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, default=0)

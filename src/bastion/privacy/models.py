"""Privacy's tables: the organisation's redaction key (which vault secret holds it, never
the key), data policies on agent traffic, retention settings and subject requests."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from bastion.core import revisions
from bastion.core.clock import utcnow
from bastion.core.db import Base, JSONType, UTCDateTime


class PrivacyKey(Base):
    """One per organisation, made on first use of `hash` or `tokenize`: 32 random bytes
    sealed in the vault (`secrets` at scope `privacy`), from which the hash key and the
    AES-SIV token key are derived. Crypto-shredding the organisation destroys it."""

    __tablename__ = "privacy_keys"

    org_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    secret_id: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DataPolicy(Base):
    """What to do when agent traffic carries personal data or secrets: which types, where
    (`applies_to`), and the action. The tool-call gate reads them with the run's view,
    once per revision tuple: a change bumps the organisation's authz revision."""

    __tablename__ = "privacy_policies"
    __table_args__ = (Index("ix_privacy_policies_org_id", "org_id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    # tool_arguments | tool_results | audit_metadata | webhook_payloads
    applies_to: Mapped[str] = mapped_column(String(30))
    types: Mapped[list[str]] = mapped_column(JSONType, default=list)
    action: Mapped[str] = mapped_column(String(20))  # redact | deny | require_approval
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class RetentionSettings(Base):
    """How long each data class is kept, per organisation (a missing row: the defaults).
    Audit events' period is the organisation's own `audit_retention_days`."""

    __tablename__ = "privacy_retention"

    org_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    tool_calls_days: Mapped[int] = mapped_column(Integer)
    webhook_events_days: Mapped[int] = mapped_column(Integer)
    deleted_objects_days: Mapped[int] = mapped_column(Integer)
    run_artifacts_hours: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class SubjectRequest(Base):
    """A data subject's access or erasure request. Only the subject's user id is kept
    (never the email it may have been asked by); after an erasure it names a user that
    no longer exists."""

    __tablename__ = "privacy_subject_requests"
    __table_args__ = (Index("ix_privacy_subject_requests_org_id", "org_id", "id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(10))  # access | erasure
    subject_id: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(20))  # completed | failed
    requested_by: Mapped[str] = mapped_column(String(40))
    result: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


revisions.watch(DataPolicy, counters=(revisions.AuthzRevision,))

"""The compliance domain's tables: each control's evaluated states over time, uploaded
attestations, issued reports (their digest and signature, not their content), and
access review campaigns with one item per subject."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from bastion.core.db import Base, JSONType, UTCDateTime


class ControlState(Base):
    """One stretch of a control's status: a row opens when an evaluation finds a status
    different from the previous row's (`started_at`) and every later evaluation with the
    same status moves `last_evaluated_at` on. An auditor reads when a control started
    failing and when it was fixed (the next row)."""

    __tablename__ = "compliance_control_states"
    __table_args__ = (
        Index("ix_compliance_states_control", "org_id", "framework", "control_id", "started_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    framework: Mapped[str] = mapped_column(String(20))
    control_id: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(10))  # passing | failing | manual
    checks: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_evaluated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    evaluations: Mapped[int] = mapped_column(default=1)


class Attestation(Base):
    """A person's statement that a manual control operates (who, when, what)."""

    __tablename__ = "compliance_attestations"
    __table_args__ = (
        Index("ix_compliance_attestations_control", "org_id", "framework", "control_id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    framework: Mapped[str] = mapped_column(String(20))
    control_id: Mapped[str] = mapped_column(String(40))
    statement: Mapped[str] = mapped_column(Text)
    evidence_url: Mapped[str | None] = mapped_column(String(2000), nullable=True)
    document_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    attested_by: Mapped[str] = mapped_column(String(40))
    attested_by_type: Mapped[str] = mapped_column(String(20))
    attested_at: Mapped[datetime] = mapped_column(UTCDateTime)
    valid_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Report(Base):
    """An issued report: what was signed and with which key; the content is the
    caller's to keep (it verifies on its own against the published key)."""

    __tablename__ = "compliance_reports"
    __table_args__ = (Index("ix_compliance_reports_org_id_id", "org_id", "id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    framework: Mapped[str] = mapped_column(String(20))
    format: Mapped[str] = mapped_column(String(10))
    sha256: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(String(200))
    kid: Mapped[str] = mapped_column(String(100))
    created_by: Mapped[str | None] = mapped_column(String(40), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AccessReview(Base):
    """A review campaign: reviewers keep or revoke each item before `due_at`; then the
    undecided ones get `on_due`. A recurring campaign starts its next one when it ends."""

    __tablename__ = "access_reviews"
    __table_args__ = (
        Index("ix_access_reviews_org_id_id", "org_id", "id"),
        Index("ix_access_reviews_status_due", "status", "due_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    scope: Mapped[list[str]] = mapped_column(JSONType, default=list)
    reviewers: Mapped[dict[str, list[str]]] = mapped_column(JSONType, default=dict)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    on_due: Mapped[str] = mapped_column(String(10))  # revoke | keep
    recurrence: Mapped[str | None] = mapped_column(String(20), nullable=True)
    status: Mapped[str] = mapped_column(String(20), default="open")  # open | completed
    previous_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    created_by: Mapped[str | None] = mapped_column(String(40), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    reminded_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class AccessReviewItem(Base):
    """One subject's access under review, and its decision."""

    __tablename__ = "access_review_items"
    __table_args__ = (Index("ix_access_review_items_review", "review_id", "id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    review_id: Mapped[str] = mapped_column(ForeignKey("access_reviews.id", ondelete="CASCADE"))
    # user | api_key | service_account | agent_secret | agent_connection | role_grant
    kind: Mapped[str] = mapped_column(String(20))
    subject_id: Mapped[str] = mapped_column(String(40))
    subject_name: Mapped[str] = mapped_column(String(320))
    access: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # Whose access this is (a person), so they cannot review it themselves.
    holder_ids: Mapped[list[str]] = mapped_column(JSONType, default=list)
    decision: Mapped[str | None] = mapped_column(String(10), nullable=True)
    comment: Mapped[str | None] = mapped_column(String(2000), nullable=True)
    decided_by: Mapped[str | None] = mapped_column(String(40), nullable=True)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    on_due: Mapped[bool] = mapped_column(Boolean, default=False)
    effect: Mapped[str | None] = mapped_column(String(200), nullable=True)

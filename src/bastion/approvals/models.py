from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from bastion.core import revisions
from bastion.core.clock import utcnow
from bastion.core.db import Base, JSONType, UTCDateTime


class ApprovalPolicy(Base):
    """What the gate does with matching tool calls: allow, deny or require approval by
    named approvers. `tool_digests` pins the tool definitions the policy was approved
    for: an `allow` stops applying to a tool whose definition changed since."""

    __tablename__ = "approval_policies"
    __table_args__ = (Index("ix_approval_policies_org_id_id", "org_id", "id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    match: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    decision: Mapped[str] = mapped_column(String(20))  # allow | deny | require_approval
    approvers: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    quorum: Mapped[int] = mapped_column(Integer, default=1)
    expires_in: Mapped[int] = mapped_column(Integer)
    escalate_after: Mapped[int | None] = mapped_column(Integer, nullable=True)
    escalate_to: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    allow_self_approval: Mapped[bool] = mapped_column(Boolean, default=False)
    tool_digests: Mapped[dict[str, str]] = mapped_column(JSONType, default=dict)
    created_by: Mapped[str | None] = mapped_column(String(40), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Approval(Base):
    """A pending (or decided) request for humans to approve one tool call. The
    approvers, quorum and deadlines are copied from the policy when it is requested."""

    __tablename__ = "approvals"
    __table_args__ = (
        Index("ix_approvals_org_id_status_id", "org_id", "status", "id"),
        Index("ix_approvals_status_expires_at", "status", "expires_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    run_id: Mapped[str] = mapped_column(String(40))
    call_id: Mapped[str] = mapped_column(ForeignKey("tool_calls.id", ondelete="CASCADE"))
    agent_id: Mapped[str] = mapped_column(String(40))
    tool: Mapped[str] = mapped_column(String(200))
    policy_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    requested_for: Mapped[str | None] = mapped_column(String(40), nullable=True)
    status: Mapped[str] = mapped_column(String(10))  # pending | approved | denied | expired
    quorum: Mapped[int] = mapped_column(Integer)
    approvers: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    escalate_to: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    escalate_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    escalated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    allow_self_approval: Mapped[bool] = mapped_column(Boolean, default=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    reason: Mapped[str] = mapped_column(String(300), default="")
    version: Mapped[int] = mapped_column(BigInteger, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ApprovalDecision(Base):
    """One approver's decision; one per approver per approval."""

    __tablename__ = "approval_decisions"

    approval_id: Mapped[str] = mapped_column(
        ForeignKey("approvals.id", ondelete="CASCADE"), primary_key=True
    )
    approver_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(40))
    decision: Mapped[str] = mapped_column(String(10))  # approve | deny
    comment: Mapped[str] = mapped_column(String(2000), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApprovalNotice(Base):
    """One notification of an approval's approvers, sent after the request committed.

    A `fanout` row (recipient "") is written with the request (and on escalation): the
    notifier resolves who may decide now and adds one `email` / `slack` row per person,
    each retried with backoff until sent, `MAX_ATTEMPTS` at most."""

    __tablename__ = "approval_notices"
    __table_args__ = (
        Index(
            "ux_approval_notices_target",
            "approval_id",
            "channel",
            "recipient",
            "round",
            unique=True,
        ),
        Index("ix_approval_notices_due", "sent_at", "next_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    approval_id: Mapped[str] = mapped_column(ForeignKey("approvals.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(10))  # fanout | email | slack
    recipient: Mapped[str] = mapped_column(String(40), default="")  # a user id
    round: Mapped[int] = mapped_column(Integer, default=0)  # 0 requested, 1 escalated
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    error: Mapped[str | None] = mapped_column(String(300), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SlackSettings(Base):
    """An organisation's Slack app: its workspace (`team_id`, how an interaction finds
    the organisation) and, sealed in the vault, its signing secret and bot token."""

    __tablename__ = "slack_settings"

    org_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    team_id: Mapped[str] = mapped_column(String(40), unique=True)
    signing_secret_id: Mapped[str] = mapped_column(String(40))
    bot_token_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# Approval policies are part of the data-access model (see `bastion.core.revisions`).
revisions.watch(ApprovalPolicy, counters=(revisions.AuthzRevision,))

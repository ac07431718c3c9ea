from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from bastion.core.clock import utcnow
from bastion.core.db import Base, JSONType, UTCDateTime


class Agent(Base):
    """An agent definition: who owns it, who may see and use it, the tools it declares
    (each with a digest of its definition), the systems it is connected to and the
    secrets it was given."""

    __tablename__ = "agents"
    __table_args__ = (
        Index("ix_agents_org_id_id", "org_id", "id"),
        Index("ix_agents_visibility_id", "visibility", "id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(String(2000), default="")
    owner_id: Mapped[str] = mapped_column(String(40))
    # Who last set its secrets or connections (a user or service account): the agent
    # never uses more of either than this principal may, checked at every use.
    configured_by: Mapped[str] = mapped_column(String(40), server_default="")
    visibility: Mapped[str] = mapped_column(String(10))  # private | team | org | public
    team_ids: Mapped[list[str]] = mapped_column(JSONType, default=list)
    tools: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    connections: Mapped[list[str]] = mapped_column(JSONType, default=list)
    secrets: Mapped[list[str]] = mapped_column(JSONType, default=list)
    cloned_from: Mapped[str | None] = mapped_column(String(40), nullable=True)
    version: Mapped[int] = mapped_column(BigInteger, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Run(Base):
    """One run of an agent, acting for a user; its `bat_` token is stored as a keyed
    hash and works only until `expires_at` or revocation."""

    __tablename__ = "agent_runs"
    __table_args__ = (Index("ix_agent_runs_agent_id_id", "agent_id", "id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    started_by: Mapped[str] = mapped_column(String(40))
    on_behalf_of: Mapped[str | None] = mapped_column(String(40), nullable=True)
    workflow_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    token_hash: Mapped[str] = mapped_column(String(64), info={"secret": True})
    pepper_version: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    max_tool_calls: Mapped[int] = mapped_column(Integer)
    max_pending_approvals: Mapped[int] = mapped_column(Integer)
    tool_calls: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ToolCall(Base):
    """A tool call an agent asked to make, and the gate's decision. The arguments are
    kept for the approvers to see; audit events carry only their digest."""

    __tablename__ = "tool_calls"
    __table_args__ = (Index("ix_tool_calls_run_id_id", "run_id", "id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    run_id: Mapped[str] = mapped_column(ForeignKey("agent_runs.id", ondelete="CASCADE"))
    agent_id: Mapped[str] = mapped_column(String(40))
    tool: Mapped[str] = mapped_column(String(200))
    arguments: Mapped[Any] = mapped_column(JSONType, nullable=True)
    arguments_digest: Mapped[str] = mapped_column(String(64))
    decision: Mapped[str] = mapped_column(String(10))  # allow | deny | pending
    reason: Mapped[str] = mapped_column(String(300))
    approval_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    policy_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Workflow(Base):
    """A workflow of one organisation and the agents whose runs may be bound to it.
    Keyed by (organisation, id): ids of workflows that existed before they were
    objects (free-text names on secrets and runs) stay as they were."""

    __tablename__ = "workflows"
    __table_args__ = (UniqueConstraint("org_id", "name"),)

    org_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(String(1000), default="")
    agent_ids: Mapped[list[str]] = mapped_column(JSONType, default=list)
    created_by: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

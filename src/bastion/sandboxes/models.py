"""Workspaces (an organisation's sandbox environments), the organisation's limit maxima,
and the forks runs execute in. The files themselves live with the backend; here are
what a workspace is, which base it has (its digest), and each fork's changes once its
run ended (kept `run_artifacts_hours`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from bastion.core.clock import utcnow
from bastion.core.db import Base, JSONType, UTCDateTime


class Workspace(Base):
    __tablename__ = "sandbox_workspaces"
    __table_args__ = (
        UniqueConstraint("org_id", "name", name="uq_sandbox_workspaces_org_id_name"),
        Index("ix_sandbox_workspaces_org_id_id", "org_id", "id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    limits: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    network: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # SHA-256 of the base's tar as uploaded; null until files are put.
    base_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    base_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    base_files: Mapped[int] = mapped_column(BigInteger, default=0)
    created_by: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class SandboxLimits(Base):
    """The organisation's maxima for workspace limits (absent: the instance defaults)."""

    __tablename__ = "sandbox_org_limits"

    org_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    limits: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class SandboxFork(Base):
    """A run's fork of a workspace: created at its first exec, destroyed at run end."""

    __tablename__ = "sandbox_forks"
    __table_args__ = (
        UniqueConstraint("run_id", "workspace_id", name="uq_sandbox_forks_run_id_workspace_id"),
        Index("ix_sandbox_forks_org_id_destroyed_at", "org_id", "destroyed_at"),
        Index("ix_sandbox_forks_destroyed_at", "destroyed_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    run_id: Mapped[str] = mapped_column(String(40))
    workspace_id: Mapped[str] = mapped_column(String(40))
    base_digest: Mapped[str] = mapped_column(String(64))
    limits: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    execs: Mapped[int] = mapped_column(BigInteger, default=0)
    # The changed files, kept when the fork is destroyed (until `diff_expires_at`).
    diff: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    destroyed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    diff_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

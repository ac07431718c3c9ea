"""Integrations and the connect requests in flight.

An integration's client secret and its tokens live in the vault (`bastion.secrets.sealed`,
scope type `integration`): only the sealed secrets' ids are kept here. The tokens are one
sealed JSON value (access token, refresh token), so a refresh that rotates the refresh
token stores both in one version, in one transaction. `token_version` counts refreshes
(the cache key of a run's token); `refresh_lease_until`/`refresh_lease_owner` let one
worker at a time, across workers and replicas, refresh it."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column

from bastion.core.clock import utcnow
from bastion.core.db import Base, JSONType, UTCDateTime


class Integration(Base):
    __tablename__ = "integrations"
    __table_args__ = (
        UniqueConstraint("org_id", "name"),
        Index("ix_integrations_refresh", "status", "access_expires_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    provider: Mapped[str] = mapped_column(String(20))
    client_id: Mapped[str] = mapped_column(String(500))
    client_secret_id: Mapped[str] = mapped_column(String(40))
    scopes: Mapped[list[str]] = mapped_column(JSONType, default=list)
    authorize_url: Mapped[str] = mapped_column(String(2000))
    token_url: Mapped[str] = mapped_column(String(2000))
    revoke_url: Mapped[str | None] = mapped_column(String(2000), nullable=True)
    # "pending" (never connected), "connected", "disconnected" (a refresh failed)
    status: Mapped[str] = mapped_column(String(20), default="pending")
    tokens_secret_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    token_version: Mapped[int] = mapped_column(Integer, default=0)
    access_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    refreshable: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    refresh_lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    refresh_lease_owner: Mapped[str | None] = mapped_column(String(40), nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(200), nullable=True)
    connected_by: Mapped[str | None] = mapped_column(String(40), nullable=True)
    connected_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_by: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class IntegrationRequest(Base):
    """A connect in flight (10 minutes, used once): the keyed hash of its `state` and of
    the browser cookie that started it, the user who started it and where to return. The
    PKCE verifier is derived from the state under a key of its own: nothing of it is
    stored."""

    __tablename__ = "integration_requests"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    integration_id: Mapped[str] = mapped_column(ForeignKey("integrations.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(String(40))
    state_hash: Mapped[str] = mapped_column(String(64), unique=True, info={"secret": True})
    browser_hash: Mapped[str] = mapped_column(String(64), info={"secret": True})
    pepper_version: Mapped[int] = mapped_column(Integer)
    return_to: Mapped[str] = mapped_column(String(2000))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

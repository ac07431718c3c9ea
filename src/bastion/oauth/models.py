"""OAuth tables: the clients of service accounts and the access tokens revoked before
they expire. No secret is stored: a client's secret is a keyed hash under the pepper
(`secret_hash`, `pepper_version`), as API keys are."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from bastion.core.clock import utcnow
from bastion.core.db import Base, JSONType, UTCDateTime


class OAuthClient(Base):
    """A client id and secret that obtain access tokens acting as one service account
    (`grant_type=client_credentials`). `scopes`: the most its tokens may carry (None:
    every permission of the service account's role)."""

    __tablename__ = "oauth_clients"
    __table_args__ = (
        Index("ix_oauth_clients_org_id_id", "org_id", "id"),
        Index("ix_oauth_clients_service_account_id", "service_account_id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # the client_id
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    service_account_id: Mapped[str] = mapped_column(
        ForeignKey("service_accounts.id", ondelete="CASCADE")
    )
    name: Mapped[str] = mapped_column(String(200))
    scopes: Mapped[list[str] | None] = mapped_column(JSONType, nullable=True)
    secret_hash: Mapped[str] = mapped_column(String(64), info={"secret": True})
    pepper_version: Mapped[int] = mapped_column(Integer)
    created_by: Mapped[str | None] = mapped_column(String(40), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class OAuthRevokedToken(Base):
    """An access token revoked before it expires (RFC 7009), by its `jti`. Kept until
    the token would have expired anyway; a deleted client takes its rows with it (its
    tokens stop working with the client)."""

    __tablename__ = "oauth_revoked_tokens"
    __table_args__ = (Index("ix_oauth_revoked_tokens_org_id_expires_at", "org_id", "expires_at"),)

    jti: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    client_id: Mapped[str] = mapped_column(ForeignKey("oauth_clients.id", ondelete="CASCADE"))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

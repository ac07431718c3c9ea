"""SSO: connections to identity providers, verified domains, sign-in requests in
flight, one-time codes and the store of values that may be used once."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column

from bastion.core.clock import utcnow
from bastion.core.db import Base, JSONType, UTCDateTime


class SsoConnection(Base):
    """An organisation's identity provider: OpenID Connect (issuer, client) or SAML
    (the provider's metadata). The client secret is sealed in the vault
    (`client_secret_id`); only its id is kept here. A SAML connection has its own SP
    signing key, sealed likewise (`sp_key_secret_id`), and its public certificate
    (`sp_cert_pem`, published in the SP metadata); with `idp_metadata_url`, the metadata
    last fetched from it (`idp_metadata_fetched`, at `idp_metadata_fetched_at`)."""

    __tablename__ = "sso_connections"
    __table_args__ = (Index("ix_sso_connections_org", "org_id", "id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(10))  # "oidc" | "saml"
    name: Mapped[str] = mapped_column(String(200))
    preset: Mapped[str | None] = mapped_column(String(20), nullable=True)
    issuer: Mapped[str | None] = mapped_column(String(500), nullable=True)
    client_id: Mapped[str | None] = mapped_column(String(500), nullable=True)
    client_secret_id: Mapped[str | None] = mapped_column(
        String(40), nullable=True, info={"secret": True}
    )
    scopes: Mapped[list[str]] = mapped_column(JSONType, default=list)
    idp_metadata_xml: Mapped[str | None] = mapped_column(Text, nullable=True)
    idp_metadata_url: Mapped[str | None] = mapped_column(String(2000), nullable=True)
    groups_attribute: Mapped[str | None] = mapped_column(String(200), nullable=True)
    role_mapping: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    team_mapping: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    default_role: Mapped[str] = mapped_column(String(40), default="member")
    jit: Mapped[bool] = mapped_column(Boolean, default=True)
    # SAML only.
    sp_key_secret_id: Mapped[str | None] = mapped_column(
        String(40), nullable=True, info={"secret": True}
    )
    sp_cert_pem: Mapped[str | None] = mapped_column(Text, nullable=True)
    idp_metadata_fetched: Mapped[str | None] = mapped_column(Text, nullable=True)
    idp_metadata_fetched_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    email_attribute: Mapped[str | None] = mapped_column(String(200), nullable=True)
    allow_idp_initiated: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false()
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class SsoDomain(Base):
    """A domain an organisation claims; verified once its DNS carries the TXT record.
    `verified_domain` holds the domain only while verified, and is unique: a domain is
    verified by one organisation at most."""

    __tablename__ = "sso_domains"
    __table_args__ = (UniqueConstraint("org_id", "domain"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    domain: Mapped[str] = mapped_column(String(253))
    token: Mapped[str] = mapped_column(String(64))
    verified_domain: Mapped[str | None] = mapped_column(String(253), nullable=True, unique=True)
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SsoRequest(Base):
    """A sign-in in flight (10 minutes, used once): the keyed hash of its `state`, of
    the browser-bound cookie that started it, and where to return. The PKCE verifier and
    the nonce are derived from the state under a key of their own, so none is stored."""

    __tablename__ = "sso_requests"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    connection_id: Mapped[str] = mapped_column(ForeignKey("sso_connections.id", ondelete="CASCADE"))
    state_hash: Mapped[str] = mapped_column(String(64), unique=True, info={"secret": True})
    browser_hash: Mapped[str] = mapped_column(String(64), info={"secret": True})
    pepper_version: Mapped[int] = mapped_column(Integer)
    return_to: Mapped[str] = mapped_column(String(2000))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SsoIdentity(Base):
    """Which user a provider's subject (`iss` + `sub` of a connection) signed in as
    first: later sign-ins of that subject are that user, and that user is that subject
    (an email moved to another account at the provider takes over nobody)."""

    __tablename__ = "sso_identities"
    __table_args__ = (UniqueConstraint("connection_id", "user_id"),)

    connection_id: Mapped[str] = mapped_column(
        ForeignKey("sso_connections.id", ondelete="CASCADE"), primary_key=True
    )
    subject: Mapped[str] = mapped_column(String(255), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SsoCode(Base):
    """The one-time code an SSO sign-in ends with (60 seconds), as a keyed hash."""

    __tablename__ = "sso_codes"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    connection_id: Mapped[str] = mapped_column(ForeignKey("sso_connections.id", ondelete="CASCADE"))
    code_hash: Mapped[str] = mapped_column(String(64), unique=True, info={"secret": True})
    pepper_version: Mapped[int] = mapped_column(Integer)
    # The browser that started the sign-in (its request's hash and pepper version).
    browser_hash: Mapped[str] = mapped_column(String(64), info={"secret": True})
    browser_pepper_version: Mapped[int] = mapped_column(Integer)
    amr: Mapped[list[str]] = mapped_column(JSONType, default=list)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SsoOnceUsed(Base):
    """Values accepted once (a SAML assertion id, an ID token's `jti`): the keyed hash
    of each, per purpose, kept until it could no longer be accepted anyway."""

    __tablename__ = "sso_once_used"

    purpose: Mapped[str] = mapped_column(String(40), primary_key=True)
    key_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from bastion.core import revisions
from bastion.core.clock import utcnow
from bastion.core.db import Base, JSONType, UTCDateTime


class User(Base):
    __tablename__ = "users"
    __table_args__ = (
        Index("ix_users_org_id_id", "org_id", "id"),
        # One Bastion user per Slack user in an organisation (clicks in Slack act as them).
        Index("ux_users_org_id_slack_user_id", "org_id", "slack_user_id", unique=True),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    email: Mapped[str] = mapped_column(String(320))
    email_normalized: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    role: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(20), default="active")
    password_hash: Mapped[str | None] = mapped_column(
        String(255), nullable=True, info={"secret": True}
    )
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    slack_user_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    # Latest expiry among this user's active role grants; lets authentication skip the
    # grants query for the common user who has none.
    grants_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class SetupToken(Base):
    """One-time token for an invited user to set a password (72 h)."""

    __tablename__ = "setup_tokens"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), info={"secret": True})
    pepper_version: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PasswordReset(Base):
    """A one-time password-reset link (30 minutes), stored as a keyed hash only."""

    __tablename__ = "password_resets"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), info={"secret": True})
    pepper_version: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class UserSession(Base):
    __tablename__ = "sessions"
    __table_args__ = (Index("ix_sessions_user_id", "user_id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    token_hash: Mapped[str] = mapped_column(String(64), info={"secret": True})
    pepper_version: Mapped[int] = mapped_column(Integer)
    idle_timeout: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    user_agent: Mapped[str | None] = mapped_column(String(512), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # How the person proved who they are (RFC 8176 `amr` values) and when they last
    # did (sign-in or step-up). NULL on sessions older than MFA: ["pwd"], `created_at`.
    amr: Mapped[list[str] | None] = mapped_column(JSONType, nullable=True)
    auth_time: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class MfaFactor(Base):
    """A person's second factor. TOTP: its secret is sealed in the vault (`secret_id`)
    and never shown again; `last_step` is the last time-step accepted, so a code is
    accepted once (compare-and-set in the accepting transaction). WebAuthn: the
    credential's id (base64url, unique in the instance), its COSE public key (not a
    secret), the authenticator's signature counter (compare-and-set on use), the
    transports the browser reported and the authenticator model (AAGUID)."""

    __tablename__ = "mfa_factors"
    __table_args__ = (
        Index("ix_mfa_factors_user_id", "user_id"),
        Index("ix_mfa_factors_credential_id", "credential_id", unique=True),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(200), default="")
    status: Mapped[str] = mapped_column(String(20), default="pending")  # pending | active
    secret_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    last_step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    credential_id: Mapped[str | None] = mapped_column(String(1400), nullable=True)
    public_key: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    sign_count: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    transports: Mapped[list[str] | None] = mapped_column(JSONType, nullable=True)
    aaguid: Mapped[str | None] = mapped_column(String(36), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class RecoveryCode(Base):
    """One of a person's ten recovery codes: a keyed hash (HMAC-SHA256 under the pepper,
    purpose "recovery_code"); used once."""

    __tablename__ = "mfa_recovery_codes"
    __table_args__ = (Index("ix_mfa_recovery_codes_user_id", "user_id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    code_hash: Mapped[str] = mapped_column(String(64), info={"secret": True})
    pepper_version: Mapped[int] = mapped_column(Integer)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class MfaChallenge(Base):
    """An `mfa_token` (`bsm_mfc_…`): a password was right, a factor is still owed.
    `purpose` "sign_in": redeemed once at `POST /v1/auth/mfa` for a session; "enrol":
    the bearer of the enrolment endpoints only. Five minutes, five wrong codes."""

    __tablename__ = "mfa_challenges"
    __table_args__ = (Index("ix_mfa_challenges_user_id", "user_id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    purpose: Mapped[str] = mapped_column(String(20))
    token_hash: Mapped[str] = mapped_column(String(64), info={"secret": True})
    pepper_version: Mapped[int] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebAuthnChallenge(Base):
    """A WebAuthn challenge Bastion issued: single use, `TTL` short, bound to what it
    was issued for. `purpose` "register" (a person adding a credential: `user_id`),
    "sign_in" (a second factor for the mfa token `bound_to`), "step_up" (the session
    `bound_to`), "passkey" (passwordless sign-in: nobody yet). Looked up by the SHA-256
    of the challenge, which comes back inside the signed client data."""

    __tablename__ = "mfa_webauthn_challenges"
    __table_args__ = (
        Index("ix_mfa_webauthn_challenges_challenge_hash", "challenge_hash", unique=True),
        Index("ix_mfa_webauthn_challenges_expires_at", "expires_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str | None] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), nullable=True
    )
    user_id: Mapped[str | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=True
    )
    purpose: Mapped[str] = mapped_column(String(20))
    bound_to: Mapped[str | None] = mapped_column(String(40), nullable=True)
    challenge_hash: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ServiceAccount(Base):
    __tablename__ = "service_accounts"
    __table_args__ = (Index("ix_service_accounts_org_id_id", "org_id", "id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(String(1000), default="")
    role: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(20), default="active")
    created_by: Mapped[str | None] = mapped_column(String(40), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class ApiKey(Base):
    __tablename__ = "api_keys"
    __table_args__ = (
        Index("ix_api_keys_org_id_id", "org_id", "id"),
        Index("ix_api_keys_user_id", "user_id"),
        Index("ix_api_keys_service_account_id", "service_account_id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    # The key's own role; a key owned by a user never exceeds that user's current rights.
    role: Mapped[str] = mapped_column(String(40))
    user_id: Mapped[str | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=True
    )
    service_account_id: Mapped[str | None] = mapped_column(
        ForeignKey("service_accounts.id", ondelete="CASCADE"), nullable=True
    )
    secret_hash: Mapped[str] = mapped_column(String(64), info={"secret": True})
    pepper_version: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_used_ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    rotated_to: Mapped[str | None] = mapped_column(String(40), nullable=True)
    created_by: Mapped[str | None] = mapped_column(String(40), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApiKeyNetwork(Base):
    """A network (IPv4 /24, IPv6 /48) an API key has been used from; use from a network
    not seen before is audited (`api_key.new_network`) and can raise an alert."""

    __tablename__ = "api_key_networks"

    key_id: Mapped[str] = mapped_column(
        ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True
    )
    network: Mapped[str] = mapped_column(String(64), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# What a credential may do depends on these rows (see `bastion.core.revisions`); the
# bookkeeping columns record its use and change nothing.
revisions.watch(User, ServiceAccount)
revisions.watch(ApiKey, bookkeeping={"last_used_at", "last_used_ip"})
revisions.watch(UserSession, bookkeeping={"last_seen_at"})

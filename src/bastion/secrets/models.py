from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    LargeBinary,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from bastion.core.clock import utcnow
from bastion.core.db import Base, UTCDateTime


class OrgKey(Base):
    """An organisation's data key, stored only wrapped by a root-key version."""

    __tablename__ = "org_keys"

    org_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    wrapped: Mapped[bytes] = mapped_column(LargeBinary, info={"secret": True})
    root_version: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Secret(Base):
    """A named secret at one scope: the organisation, a workflow or a run."""

    __tablename__ = "secrets"
    __table_args__ = (
        UniqueConstraint("org_id", "name", "scope_type", "scope_id"),
        Index("ix_secrets_org_id_name", "org_id", "name"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    scope_type: Mapped[str] = mapped_column(String(20))  # org | workflow | run
    scope_id: Mapped[str] = mapped_column(String(64), default="")
    description: Mapped[str] = mapped_column(String(1000), default="")
    current_version: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class SecretVersion(Base):
    """One value of a secret: AES-256-GCM under the org's data key, bound by associated
    data to org, secret and version. The data key it names cannot be deleted while the
    row exists (composite foreign key, no action on delete): destroying an older key
    after a rotation fails instead of orphaning a value written under it meanwhile."""

    __tablename__ = "secret_versions"
    __table_args__ = (
        ForeignKeyConstraint(["org_id", "key_version"], ["org_keys.org_id", "org_keys.version"]),
        Index("ix_secret_versions_org_id_key_version", "org_id", "key_version"),
    )

    secret_id: Mapped[str] = mapped_column(
        ForeignKey("secrets.id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    org_id: Mapped[str] = mapped_column(String(40))
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary, info={"secret": True})
    key_version: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class OrgEncryptionKey(Base):
    """An organisation's customer-managed key: which provider holds it, and the sealed
    configuration (credentials included) to reach it, sealed under the instance root key
    bound to the organisation. While this row exists, the organisation's `org_keys`
    rows are wrapped by that key (`root_version` = `CUSTOMER_WRAPPED`), not the root key.
    `generation` advances on every change and on "lock now": each worker re-checks it
    at least every `CMK_RECHECK_SECONDS` before using a cached data key."""

    __tablename__ = "org_encryption_keys"

    org_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    provider: Mapped[str] = mapped_column(String(30))
    config_sealed: Mapped[bytes] = mapped_column(LargeBinary, info={"secret": True})
    config_root_version: Mapped[int] = mapped_column(BigInteger)
    # A random value wrapped by the customer's key: unwrapping it is the probe.
    canary: Mapped[bytes] = mapped_column(LargeBinary)
    status: Mapped[str] = mapped_column(String(20), default="active")
    reason: Mapped[str | None] = mapped_column(String(60), default=None)
    generation: Mapped[int] = mapped_column(BigInteger, default=1)
    last_checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

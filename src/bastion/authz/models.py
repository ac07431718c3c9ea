from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from bastion.core import revisions
from bastion.core.clock import utcnow
from bastion.core.db import Base, JSONType, UTCDateTime


class Role(Base):
    """A custom role: a named set of catalogue permissions, per organisation."""

    __tablename__ = "roles"
    __table_args__ = (UniqueConstraint("org_id", "name"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(String(1000), default="")
    permissions: Mapped[list[str]] = mapped_column(JSONType, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class RoleGrant(Base):
    """Temporary elevation: counts only while `expires_at` is in the future."""

    __tablename__ = "role_grants"
    __table_args__ = (Index("ix_role_grants_user_expires", "user_id", "expires_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(40))
    reason: Mapped[str] = mapped_column(String(1000))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    granted_by: Mapped[str | None] = mapped_column(String(40), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Source(Base):
    """A data source (a drive, a wiki space, a bucket) whose documents agents may read."""

    __tablename__ = "sources"
    __table_args__ = (Index("ix_sources_org_id_id", "org_id", "id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    created_by: Mapped[str | None] = mapped_column(String(40), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Document(Base):
    """A document of a source. With `inherit` its source's ACL applies (plus its own
    entries); without, only its own entries do."""

    __tablename__ = "documents"
    __table_args__ = (
        UniqueConstraint("source_id", "external_id"),
        Index("ix_documents_org_id_id", "org_id", "id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    source_id: Mapped[str] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"))
    external_id: Mapped[str] = mapped_column(String(500))
    doc_metadata: Mapped[dict[str, Any]] = mapped_column("metadata", JSONType, default=dict)
    inherit: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class AclEntry(Base):
    """`principal` (a user, team or service account) holds `relation` on a source or a
    document until `expires_at` (checked at decision time)."""

    __tablename__ = "acl_entries"
    __table_args__ = (
        UniqueConstraint("resource_id", "principal"),
        Index("ix_acl_entries_org_id", "org_id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    resource_type: Mapped[str] = mapped_column(String(20))  # source | document
    resource_id: Mapped[str] = mapped_column(String(40))
    principal: Mapped[str] = mapped_column(String(40))
    relation: Mapped[str] = mapped_column(String(20))  # reader < editor < owner
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AuthzRule(Base):
    """A metadata rule: `effect` on `action` over `resource_type` when the CEL
    `condition` holds. Deny beats allow."""

    __tablename__ = "authz_rules"
    __table_args__ = (Index("ix_authz_rules_org_id_id", "org_id", "id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    effect: Mapped[str] = mapped_column(String(10))
    action: Mapped[str] = mapped_column(String(20))
    resource_type: Mapped[str] = mapped_column(String(20))
    condition: Mapped[str] = mapped_column(String(4000))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# Roles and grants decide what a credential may do; sources, documents, ACLs and rules
# are the data-access model (see `bastion.core.revisions`).
revisions.watch(Role, RoleGrant)
revisions.watch(Source, Document, AclEntry, AuthzRule, counters=(revisions.AuthzRevision,))

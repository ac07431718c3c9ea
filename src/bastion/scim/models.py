"""SCIM's own rows: the organisation's provisioning tokens, and what a SCIM client
stored on a user or a team that Bastion's own rows do not hold (externalId, name parts,
emails, …), kept as the client sent it and returned as such."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from bastion.core import revisions
from bastion.core.clock import utcnow
from bastion.core.db import Base, JSONType, UTCDateTime


class ScimToken(Base):
    """A SCIM bearer token (`bsp_sct_…_<secret>`): a keyed hash under the pepper, like an
    API key. It acts only on `/scim/v2` of its organisation."""

    __tablename__ = "scim_tokens"
    __table_args__ = (Index("ix_scim_tokens_org_id_id", "org_id", "id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    token_hash: Mapped[str] = mapped_column(String(64), info={"secret": True})
    pepper_version: Mapped[int] = mapped_column(Integer)
    created_by: Mapped[str | None] = mapped_column(String(40), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ScimResource(Base):
    """The SCIM representation of a Bastion user (`usr_…`) or team (`team_…`) beyond the
    fields Bastion holds itself. `resource_id` names the Bastion row; a row whose user
    or team was deleted outside SCIM is ignored, and removed when a new user takes its
    userName."""

    __tablename__ = "scim_resources"
    __table_args__ = (
        Index("ix_scim_resources_org_id_type", "org_id", "resource_type"),
        Index("ix_scim_resources_org_id_external_id", "org_id", "resource_type", "external_id"),
        Index("ix_scim_resources_org_id_user_name", "org_id", "resource_type", "user_name"),
    )

    resource_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    resource_type: Mapped[str] = mapped_column(String(20))  # "User" | "Group"
    external_id: Mapped[str | None] = mapped_column(String(512), nullable=True)
    # A User's userName in lower case (unique in the organisation; indexed for the
    # `userName eq "…"` lookups identity providers make before every create).
    user_name: Mapped[str | None] = mapped_column(String(320), nullable=True)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# Revoking a token changes what a cached credential may do: every worker reloads it.
revisions.watch(ScimToken, inserts_change_nothing=True)

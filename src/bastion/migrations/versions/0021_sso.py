"""SSO: connections, verified domains, sign-ins in flight, one-time codes, values used
once; an organisation's `sso_enforced` and `sso_break_glass`

Revision ID: 0021_sso
Revises: 0020
Create Date: 2026-12-07 08:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import bastion.core.db

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")

revision: str = "0021_sso"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMNs: a batch rebuild of `organizations` would cascade its drop on SQLite.
    op.add_column(
        "organizations",
        sa.Column("sso_enforced", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.add_column(
        "organizations",
        sa.Column("sso_break_glass", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.create_table(
        "sso_connections",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "org_id", sa.String(40), sa.ForeignKey("organizations.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("type", sa.String(10), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("preset", sa.String(20), nullable=True),
        sa.Column("issuer", sa.String(500), nullable=True),
        sa.Column("client_id", sa.String(500), nullable=True),
        sa.Column("client_secret_id", sa.String(40), nullable=True),
        sa.Column("scopes", _JSON, nullable=False),
        sa.Column("idp_metadata_xml", sa.Text(), nullable=True),
        sa.Column("idp_metadata_url", sa.String(2000), nullable=True),
        sa.Column("groups_attribute", sa.String(200), nullable=True),
        sa.Column("role_mapping", _JSON, nullable=False),
        sa.Column("team_mapping", _JSON, nullable=False),
        sa.Column("default_role", sa.String(40), nullable=False),
        sa.Column("jit", sa.Boolean(), nullable=False),
        sa.Column("created_at", bastion.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", bastion.core.db.UTCDateTime(timezone=True), nullable=False),
    )  # fmt: skip
    op.create_index("ix_sso_connections_org", "sso_connections", ["org_id", "id"])
    op.create_table(
        "sso_domains",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "org_id", sa.String(40), sa.ForeignKey("organizations.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("domain", sa.String(253), nullable=False),
        sa.Column("token", sa.String(64), nullable=False),
        sa.Column("verified_domain", sa.String(253), nullable=True, unique=True),
        sa.Column("verified_at", bastion.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", bastion.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("org_id", "domain"),
    )  # fmt: skip
    op.create_table(
        "sso_requests",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "org_id", sa.String(40), sa.ForeignKey("organizations.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "connection_id", sa.String(40),
            sa.ForeignKey("sso_connections.id", ondelete="CASCADE"), nullable=False,
        ),
        sa.Column("state_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("browser_hash", sa.String(64), nullable=False),
        sa.Column("pepper_version", sa.Integer(), nullable=False),
        sa.Column("return_to", sa.String(2000), nullable=False),
        sa.Column("expires_at", bastion.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("used_at", bastion.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", bastion.core.db.UTCDateTime(timezone=True), nullable=False),
    )  # fmt: skip
    op.create_table(
        "sso_identities",
        sa.Column(
            "connection_id", sa.String(40),
            sa.ForeignKey("sso_connections.id", ondelete="CASCADE"), primary_key=True,
        ),
        sa.Column("subject", sa.String(255), primary_key=True),
        sa.Column(
            "org_id", sa.String(40), sa.ForeignKey("organizations.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "user_id", sa.String(40), sa.ForeignKey("users.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("created_at", bastion.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("connection_id", "user_id"),
    )  # fmt: skip
    op.create_index("ix_sso_identities_user_id", "sso_identities", ["user_id"])
    op.create_table(
        "sso_codes",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "org_id", sa.String(40), sa.ForeignKey("organizations.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "user_id", sa.String(40), sa.ForeignKey("users.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "connection_id", sa.String(40),
            sa.ForeignKey("sso_connections.id", ondelete="CASCADE"), nullable=False,
        ),
        sa.Column("code_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("pepper_version", sa.Integer(), nullable=False),
        sa.Column("browser_hash", sa.String(64), nullable=False),
        sa.Column("browser_pepper_version", sa.Integer(), nullable=False),
        sa.Column("amr", _JSON, nullable=False),
        sa.Column("expires_at", bastion.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("used_at", bastion.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", bastion.core.db.UTCDateTime(timezone=True), nullable=False),
    )  # fmt: skip
    op.create_table(
        "sso_once_used",
        sa.Column("purpose", sa.String(40), primary_key=True),
        sa.Column("key_hash", sa.String(64), primary_key=True),
        sa.Column("expires_at", bastion.core.db.UTCDateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_sso_once_used_expires_at", "sso_once_used", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_sso_once_used_expires_at", table_name="sso_once_used")
    op.drop_table("sso_once_used")
    op.drop_table("sso_codes")
    op.drop_index("ix_sso_identities_user_id", table_name="sso_identities")
    op.drop_table("sso_identities")
    op.drop_table("sso_requests")
    op.drop_table("sso_domains")
    op.drop_index("ix_sso_connections_org", table_name="sso_connections")
    op.drop_table("sso_connections")
    op.drop_column("organizations", "sso_break_glass")
    op.drop_column("organizations", "sso_enforced")

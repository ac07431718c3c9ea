"""OAuth integrations: each organisation's integrations (client, endpoints, status, the
ids of its sealed client secret and tokens, the refresh lease) and the connect requests
in flight

Revision ID: 0028_integrations
Revises: 0024_saml_sp
Create Date: 2026-12-07 11:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import bastion.core.db

revision: str = "0028_integrations"
down_revision: str | None = "0027_compliance"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIME = bastion.core.db.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "integrations",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "org_id", sa.String(40), sa.ForeignKey("organizations.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("provider", sa.String(20), nullable=False),
        sa.Column("client_id", sa.String(500), nullable=False),
        sa.Column("client_secret_id", sa.String(40), nullable=False),
        sa.Column("scopes", bastion.core.db.JSONType, nullable=False),
        sa.Column("authorize_url", sa.String(2000), nullable=False),
        sa.Column("token_url", sa.String(2000), nullable=False),
        sa.Column("revoke_url", sa.String(2000), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("tokens_secret_id", sa.String(40), nullable=True),
        sa.Column("token_version", sa.Integer(), nullable=False),
        sa.Column("access_expires_at", _TIME, nullable=True),
        sa.Column("refreshable", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("refresh_lease_until", _TIME, nullable=True),
        sa.Column("refresh_lease_owner", sa.String(40), nullable=True),
        sa.Column("last_error", sa.String(200), nullable=True),
        sa.Column("connected_by", sa.String(40), nullable=True),
        sa.Column("connected_at", _TIME, nullable=True),
        sa.Column("created_by", sa.String(40), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("updated_at", _TIME, nullable=False),
        sa.UniqueConstraint("org_id", "name"),
    )  # fmt: skip
    op.create_index("ix_integrations_refresh", "integrations", ["status", "access_expires_at"])
    op.create_table(
        "integration_requests",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "org_id", sa.String(40), sa.ForeignKey("organizations.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "integration_id", sa.String(40),
            sa.ForeignKey("integrations.id", ondelete="CASCADE"), nullable=False,
        ),
        sa.Column("user_id", sa.String(40), nullable=False),
        sa.Column("state_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("browser_hash", sa.String(64), nullable=False),
        sa.Column("pepper_version", sa.Integer(), nullable=False),
        sa.Column("return_to", sa.String(2000), nullable=False),
        sa.Column("expires_at", _TIME, nullable=False),
        sa.Column("used_at", _TIME, nullable=True),
        sa.Column("created_at", _TIME, nullable=False),
    )  # fmt: skip


def downgrade() -> None:
    op.drop_table("integration_requests")
    op.drop_index("ix_integrations_refresh", table_name="integrations")
    op.drop_table("integrations")

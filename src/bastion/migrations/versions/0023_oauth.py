"""OAuth 2.0 clients of service accounts and revoked access tokens

Revision ID: 0023_oauth
Revises: 0022_scim
Create Date: 2026-12-07 08:45:00.000000

A client's secret is a keyed hash under the pepper, as an API key's is; access tokens
are JWTs signed by the instance signing keys and stored nowhere, except the `jti` of one
revoked before it expires.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import bastion.core.db

revision: str = "0023_oauth"
down_revision: str | None = "0022_scim"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "oauth_clients",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("service_account_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column(
            "scopes",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("pepper_version", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(length=40), nullable=True),
        sa.Column("created_at", bastion.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", bastion.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_oauth_clients_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["service_account_id"],
            ["service_accounts.id"],
            name=op.f("fk_oauth_clients_service_account_id_service_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oauth_clients")),
    )
    op.create_index("ix_oauth_clients_org_id_id", "oauth_clients", ["org_id", "id"])
    op.create_index("ix_oauth_clients_service_account_id", "oauth_clients", ["service_account_id"])
    op.create_table(
        "oauth_revoked_tokens",
        sa.Column("jti", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("client_id", sa.String(length=40), nullable=False),
        sa.Column("expires_at", bastion.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", bastion.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["oauth_clients.id"],
            name=op.f("fk_oauth_revoked_tokens_client_id_oauth_clients"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_oauth_revoked_tokens_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("jti", name=op.f("pk_oauth_revoked_tokens")),
    )
    op.create_index(
        "ix_oauth_revoked_tokens_org_id_expires_at",
        "oauth_revoked_tokens",
        ["org_id", "expires_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_oauth_revoked_tokens_org_id_expires_at", table_name="oauth_revoked_tokens")
    op.drop_table("oauth_revoked_tokens")
    op.drop_index("ix_oauth_clients_service_account_id", table_name="oauth_clients")
    op.drop_index("ix_oauth_clients_org_id_id", table_name="oauth_clients")
    op.drop_table("oauth_clients")

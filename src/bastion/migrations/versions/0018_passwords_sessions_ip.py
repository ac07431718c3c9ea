"""password policy, session cap and IP allowlist per organisation; password-reset links

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07 05:30:00.000000

Organisations gain their password policy (minimum length, default 12 as before; the
breached-password check, on), a cap on parallel sessions per user (none) and an IP
allowlist (empty: any address): existing organisations keep today's behaviour. A
password-reset link is a row holding only the keyed hash of its token.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import bastion.core.db

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    # Plain ADD COLUMNs (with defaults, as SQLite needs for NOT NULL): a batch rebuild
    # would drop and recreate `organizations`, and with foreign keys on, SQLite would
    # cascade that drop to every row of every organisation.
    op.add_column(
        "organizations",
        sa.Column("password_min_length", sa.Integer(), nullable=False, server_default="12"),
    )
    op.add_column(
        "organizations",
        sa.Column(
            "password_breached_check", sa.Boolean(), nullable=False, server_default=sa.true()
        ),
    )
    op.add_column("organizations", sa.Column("max_sessions_per_user", sa.Integer(), nullable=True))
    op.add_column(
        "organizations",
        sa.Column("ip_allowlist", _JSON, nullable=False, server_default="[]"),
    )
    op.create_table(
        "password_resets",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("user_id", sa.String(length=40), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("pepper_version", sa.Integer(), nullable=False),
        sa.Column("expires_at", bastion.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("used_at", bastion.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", bastion.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_password_resets_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_password_resets_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_password_resets")),
    )
    op.create_index(
        op.f("ix_password_resets_user_id"), "password_resets", ["user_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_password_resets_user_id"), table_name="password_resets")
    op.drop_table("password_resets")
    # Native DROP COLUMN on SQLite 3.35+: no table rebuild.
    op.drop_column("organizations", "ip_allowlist")
    op.drop_column("organizations", "max_sessions_per_user")
    op.drop_column("organizations", "password_breached_check")
    op.drop_column("organizations", "password_min_length")

"""audit sinks: SIEM destinations with their delivery cursor and health

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 05:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import bastion.core.db

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    json_type = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
    op.create_table(
        "audit_sinks",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("type", sa.String(length=20), nullable=False),
        sa.Column("format", sa.String(length=20), nullable=False),
        sa.Column("config", json_type, nullable=False),
        sa.Column("secret_ciphertext", sa.LargeBinary(), nullable=True),
        sa.Column("key_version", sa.BigInteger(), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("cursor", sa.BigInteger(), nullable=False),
        sa.Column("delivered", sa.BigInteger(), nullable=False),
        sa.Column("failures", sa.BigInteger(), nullable=False),
        sa.Column("next_attempt_at", bastion.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("leased_until", bastion.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_success_at", bastion.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("created_at", bastion.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_sinks")),
    )
    with op.batch_alter_table("audit_sinks", schema=None) as batch_op:
        batch_op.create_index("ix_audit_sinks_org_id_id", ["org_id", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("audit_sinks", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_sinks_org_id_id")
    op.drop_table("audit_sinks")

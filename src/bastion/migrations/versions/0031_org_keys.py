"""Customer-managed keys: an organisation's own key provider (its configuration sealed
under the root key), status and lock generation

Revision ID: 0031_org_keys
Revises: 0030_sandboxes
Create Date: 2026-12-07 14:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import bastion.core.db

revision: str = "0031_org_keys"
down_revision: str | None = "0030_sandboxes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "org_encryption_keys",
        sa.Column("org_id", sa.String(40), nullable=False),
        sa.Column("provider", sa.String(30), nullable=False),
        sa.Column("config_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("config_root_version", sa.BigInteger(), nullable=False),
        sa.Column("canary", sa.LargeBinary(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("reason", sa.String(60), nullable=True),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.Column("last_checked_at", bastion.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", bastion.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", bastion.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name="fk_org_encryption_keys_org_id_organizations",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("org_id", name="pk_org_encryption_keys"),
    )


def downgrade() -> None:
    op.drop_table("org_encryption_keys")

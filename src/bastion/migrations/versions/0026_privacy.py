"""Privacy: each organisation's redaction key (a vault secret's id)

Revision ID: 0026_privacy
Revises: 0024_saml_sp
Create Date: 2026-12-07 11:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import bastion.core.db

revision: str = "0026_privacy"
down_revision: str | None = "0025_approval_notify"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "privacy_keys",
        sa.Column("org_id", sa.String(40), nullable=False),
        sa.Column("secret_id", sa.String(40), nullable=False),
        sa.Column("created_at", bastion.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["organizations.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("org_id"),
    )


def downgrade() -> None:
    op.drop_table("privacy_keys")

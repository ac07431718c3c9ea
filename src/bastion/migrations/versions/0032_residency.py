"""Data residency: an organisation's region, fixed at creation (docs/residency.md).

A column with a default, no data rewritten: single-region installs read `default`. The
directory's tables (`bastion.core.db.regions.DIRECTORY`) live only in a multi-region
install's directory database and are created there by `bastion db upgrade`.

Revision ID: 0032_residency
Revises: 0031_org_keys
Create Date: 2026-12-07 14:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0032_residency"
down_revision: str | None = "0031_org_keys"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "organizations",
        sa.Column("region", sa.String(32), nullable=False, server_default="default"),
    )


def downgrade() -> None:
    with op.batch_alter_table("organizations") as batch:
        batch.drop_column("region")

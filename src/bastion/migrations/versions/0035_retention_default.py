"""New organisations keep audit events 90 days by default (the contract's retention
default), not 365. Only the column's server default changes: existing organisations keep
the period they have (shortening a retention period destroys evidence; it is never done
silently).

Revision ID: 0035_retention_default
Revises: 0034_mcp_credentials
Create Date: 2026-12-07 18:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0035_retention_default"
down_revision: str | None = "0034_mcp_credentials"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _default(days: int) -> None:
    with op.batch_alter_table("organizations") as batch:
        batch.alter_column(
            "audit_retention_days",
            existing_type=sa.Integer(),
            existing_nullable=False,
            server_default=str(days),
        )


def upgrade() -> None:
    _default(90)


def downgrade() -> None:
    _default(365)

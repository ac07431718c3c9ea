"""MCP server credentials from an OAuth integration: the integration whose access token
the gateway adds as a bearer header, and who bound it (whose right to hand it on is
checked at every use)

Revision ID: 0034_mcp_credentials
Revises: 0033_privacy_ops
Create Date: 2026-12-07 15:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0034_mcp_credentials"
down_revision: str | None = "0033_privacy_ops"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("mcp_servers") as batch:
        batch.add_column(sa.Column("integration", sa.String(100), nullable=True))
        batch.add_column(sa.Column("integration_by", sa.String(40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("mcp_servers") as batch:
        batch.drop_column("integration_by")
        batch.drop_column("integration")

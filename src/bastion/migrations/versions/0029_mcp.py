"""MCP servers: an organisation's upstream MCP servers (Streamable HTTP) for the gateway,
their static headers sealed in the vault

Revision ID: 0029_mcp
Revises: 0024_saml_sp
Create Date: 2026-12-07 11:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import bastion.core.db

revision: str = "0029_mcp"
down_revision: str | None = "0028_integrations"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "mcp_servers",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("org_id", sa.String(40), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("url", sa.String(2000), nullable=False),
        sa.Column(
            "header_names",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("headers_secret_id", sa.String(40), nullable=True),
        sa.Column("created_by", sa.String(40), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("created_at", bastion.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", bastion.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["organizations.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("org_id", "name", name="uq_mcp_servers_org_id_name"),
    )
    op.create_index("ix_mcp_servers_org_id_id", "mcp_servers", ["org_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_mcp_servers_org_id_id", table_name="mcp_servers")
    op.drop_table("mcp_servers")

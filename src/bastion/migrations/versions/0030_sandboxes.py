"""Sandboxes: workspaces (read-only bases by digest), the organisation's limit maxima,
and runs' forks (their diffs kept after the run)

Revision ID: 0030_sandboxes
Revises: 0029_mcp
Create Date: 2026-12-07 15:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import bastion.core.db

revision: str = "0030_sandboxes"
down_revision: str | None = "0029_mcp"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine[object]:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def _time() -> bastion.core.db.UTCDateTime:
    return bastion.core.db.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "sandbox_workspaces",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("org_id", sa.String(40), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("limits", _json(), nullable=False),
        sa.Column("network", _json(), nullable=False),
        sa.Column("base_digest", sa.String(64), nullable=True),
        sa.Column("base_bytes", sa.BigInteger(), nullable=False),
        sa.Column("base_files", sa.BigInteger(), nullable=False),
        sa.Column("created_by", sa.String(40), nullable=False),
        sa.Column("created_at", _time(), nullable=False),
        sa.Column("updated_at", _time(), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["organizations.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("org_id", "name", name="uq_sandbox_workspaces_org_id_name"),
    )
    op.create_index("ix_sandbox_workspaces_org_id_id", "sandbox_workspaces", ["org_id", "id"])
    op.create_table(
        "sandbox_org_limits",
        sa.Column("org_id", sa.String(40), nullable=False),
        sa.Column("limits", _json(), nullable=False),
        sa.Column("updated_at", _time(), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["organizations.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("org_id"),
    )
    op.create_table(
        "sandbox_forks",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("org_id", sa.String(40), nullable=False),
        sa.Column("run_id", sa.String(40), nullable=False),
        sa.Column("workspace_id", sa.String(40), nullable=False),
        sa.Column("base_digest", sa.String(64), nullable=False),
        sa.Column("limits", _json(), nullable=False),
        sa.Column("execs", sa.BigInteger(), nullable=False),
        sa.Column("diff", _json(), nullable=True),
        sa.Column("created_at", _time(), nullable=False),
        sa.Column("destroyed_at", _time(), nullable=True),
        sa.Column("diff_expires_at", _time(), nullable=True),
        sa.ForeignKeyConstraint(["org_id"], ["organizations.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("run_id", "workspace_id", name="uq_sandbox_forks_run_id_workspace_id"),
    )
    op.create_index(
        "ix_sandbox_forks_org_id_destroyed_at", "sandbox_forks", ["org_id", "destroyed_at"]
    )
    op.create_index("ix_sandbox_forks_destroyed_at", "sandbox_forks", ["destroyed_at"])


def downgrade() -> None:
    op.drop_index("ix_sandbox_forks_destroyed_at", table_name="sandbox_forks")
    op.drop_index("ix_sandbox_forks_org_id_destroyed_at", table_name="sandbox_forks")
    op.drop_table("sandbox_forks")
    op.drop_table("sandbox_org_limits")
    op.drop_index("ix_sandbox_workspaces_org_id_id", table_name="sandbox_workspaces")
    op.drop_table("sandbox_workspaces")

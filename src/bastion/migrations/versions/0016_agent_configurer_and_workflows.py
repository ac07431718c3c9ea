"""agents remember who configured them; workflows become objects

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06 23:59:00.000000

An agent's secrets and connections are bounded by the current rights of whoever last
set them (`agents.configured_by`; existing agents: their owner). A run's workflow
selects that workflow's secret values, so binding one is a right: workflows are
objects that admit a list of agents. Workflows that existed only as free text (on
workflow-scoped secrets and on runs) become workflow objects with the same id and
name, admitting no agent until an administrator lists some (fail closed).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import bastion.core.db
from bastion.core.clock import utcnow

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    # A plain ADD COLUMN (with a default, as SQLite needs for NOT NULL): a batch
    # rebuild would drop and recreate `agents`, and with foreign keys on, SQLite would
    # cascade that drop to every run and tool call.
    op.add_column(
        "agents",
        sa.Column("configured_by", sa.String(length=40), nullable=False, server_default=""),
    )
    op.execute("UPDATE agents SET configured_by = owner_id")

    workflows = op.create_table(
        "workflows",
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.String(length=1000), nullable=False),
        sa.Column("agent_ids", _JSON, nullable=False),
        sa.Column("created_by", sa.String(length=40), nullable=False),
        sa.Column("created_at", bastion.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", bastion.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_workflows_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("org_id", "id", name=op.f("pk_workflows")),
        sa.UniqueConstraint("org_id", "name", name=op.f("uq_workflows_org_id_name")),
    )
    bind = op.get_bind()
    named = bind.execute(
        sa.text(
            "SELECT DISTINCT org_id, scope_id FROM secrets"
            " WHERE scope_type = 'workflow' AND scope_id <> ''"
            " UNION SELECT DISTINCT org_id, workflow_id FROM agent_runs"
            " WHERE workflow_id IS NOT NULL AND workflow_id <> ''"
        )
    ).all()
    if named:
        now = utcnow()
        op.bulk_insert(
            workflows,
            [
                {
                    "org_id": org_id,
                    "id": workflow_id,
                    "name": workflow_id,
                    "description": "",
                    "agent_ids": [],
                    "created_by": "migration",
                    "created_at": now,
                    "updated_at": now,
                }
                for org_id, workflow_id in named
            ],
        )


def downgrade() -> None:
    op.drop_table("workflows")
    op.drop_column("agents", "configured_by")  # native on SQLite 3.35+: no table rebuild

"""audit search indexes

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 05:55:55.211383

Built CONCURRENTLY on PostgreSQL (`bastion.migrations.online`).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from bastion.migrations import online

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    online.create_index(
        "ix_audit_events_chain_actor_seq", "audit_events", ["chain", "actor_id", "seq"]
    )
    online.create_index(
        "ix_audit_events_chain_resource_seq", "audit_events", ["chain", "resource_id", "seq"]
    )
    online.create_index("ix_audit_events_chain_time", "audit_events", ["chain", "time"])


def downgrade() -> None:
    op.drop_index("ix_audit_events_chain_time", table_name="audit_events")
    op.drop_index("ix_audit_events_chain_resource_seq", table_name="audit_events")
    op.drop_index("ix_audit_events_chain_actor_seq", table_name="audit_events")

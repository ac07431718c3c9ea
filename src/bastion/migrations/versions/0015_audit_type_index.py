"""audit events: one (chain, type, seq) index in place of two org_id indexes

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02 19:10:00.000000

Every query of audit events names its chain, never `org_id`: the indexes on
(org_id, id) and (org_id, type, id) were kept up on every append and used by nothing.
Search by type (and the alert rules' counts of one type in a window) now walks
(chain, type, seq) from the newest event, however rare the type: before, a rare type
was found by walking the whole chain backwards.

On PostgreSQL the indexes are dropped and built CONCURRENTLY
(`bastion.migrations.online`): a large audit table keeps taking appends meanwhile.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from bastion.migrations import online

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    online.drop_index("ix_audit_events_org_type_id", "audit_events")
    online.drop_index("ix_audit_events_org_id_id", "audit_events")
    online.create_index("ix_audit_events_chain_type_seq", "audit_events", ["chain", "type", "seq"])


def downgrade() -> None:
    op.drop_index("ix_audit_events_chain_type_seq", table_name="audit_events")
    op.create_index("ix_audit_events_org_id_id", "audit_events", ["org_id", "id"], unique=False)
    op.create_index(
        "ix_audit_events_org_type_id", "audit_events", ["org_id", "type", "id"], unique=False
    )

"""audit events: one (chain, type, seq) index in place of two org_id indexes

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02 19:10:00.000000

Every query of audit events names its chain, never `org_id`: the indexes on
(org_id, id) and (org_id, type, id) were kept up on every append and used by nothing.
Search by type (and the alert rules' counts of one type in a window) now walks
(chain, type, seq) from the newest event, however rare the type: before, a rare type
was found by walking the whole chain backwards.

On PostgreSQL the indexes are dropped and built CONCURRENTLY, outside the migration's
transaction: an audit table of millions of rows keeps taking appends (every audited
change in the product) while the index builds, instead of every write waiting for it.
A concurrent build that fails leaves an INVALID index behind; running the upgrade
again drops it and builds it anew.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        op.drop_index("ix_audit_events_org_type_id", table_name="audit_events")
        op.drop_index("ix_audit_events_org_id_id", table_name="audit_events")
        op.create_index("ix_audit_events_chain_type_seq", "audit_events", ["chain", "type", "seq"])
        return
    with op.get_context().autocommit_block():
        for name in (
            "ix_audit_events_org_type_id",
            "ix_audit_events_org_id_id",
            "ix_audit_events_chain_type_seq",  # a failed concurrent build's INVALID index
        ):
            op.drop_index(
                name, table_name="audit_events", postgresql_concurrently=True, if_exists=True
            )
        op.create_index(
            "ix_audit_events_chain_type_seq",
            "audit_events",
            ["chain", "type", "seq"],
            postgresql_concurrently=True,
        )


def downgrade() -> None:
    op.drop_index("ix_audit_events_chain_type_seq", table_name="audit_events")
    op.create_index("ix_audit_events_org_id_id", "audit_events", ["org_id", "id"], unique=False)
    op.create_index(
        "ix_audit_events_org_type_id", "audit_events", ["org_id", "type", "id"], unique=False
    )

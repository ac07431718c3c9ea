"""Privacy operations: data policies, retention settings, subject requests

Revision ID: 0033_privacy_ops
Revises: 0032_residency
Create Date: 2026-12-07 14:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import bastion.core.db

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")

revision: str = "0033_privacy_ops"
down_revision: str | None = "0032_residency"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "privacy_policies",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("org_id", sa.String(40), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("applies_to", sa.String(30), nullable=False),
        sa.Column("types", _JSON, nullable=False),
        sa.Column("action", sa.String(20), nullable=False),
        sa.Column("created_at", bastion.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", bastion.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["organizations.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_privacy_policies_org_id", "privacy_policies", ["org_id"])
    op.create_table(
        "privacy_retention",
        sa.Column("org_id", sa.String(40), nullable=False),
        sa.Column("tool_calls_days", sa.Integer(), nullable=False),
        sa.Column("webhook_events_days", sa.Integer(), nullable=False),
        sa.Column("deleted_objects_days", sa.Integer(), nullable=False),
        sa.Column("run_artifacts_hours", sa.Integer(), nullable=False),
        sa.Column("updated_at", bastion.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["organizations.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("org_id"),
    )
    op.create_table(
        "privacy_subject_requests",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("org_id", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("subject_id", sa.String(40), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("requested_by", sa.String(40), nullable=False),
        sa.Column("result", _JSON, nullable=False),
        sa.Column("created_at", bastion.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("completed_at", bastion.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["org_id"], ["organizations.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_privacy_subject_requests_org_id", "privacy_subject_requests", ["org_id", "id"]
    )


def downgrade() -> None:
    op.drop_index("ix_privacy_subject_requests_org_id", table_name="privacy_subject_requests")
    op.drop_table("privacy_subject_requests")
    op.drop_table("privacy_retention")
    op.drop_index("ix_privacy_policies_org_id", table_name="privacy_policies")
    op.drop_table("privacy_policies")

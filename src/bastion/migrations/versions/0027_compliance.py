"""Compliance center: each control's evaluated states over time, attestations for manual
controls, issued reports (digest and signature), access review campaigns and their items

Revision ID: 0027_compliance
Revises: 0024_saml_sp
Create Date: 2026-12-07 11:11:43.652239
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import bastion.core.db

revision: str = "0027_compliance"
down_revision: str | None = "0026_privacy"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "access_reviews",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("scope", _JSON, nullable=False),
        sa.Column("reviewers", _JSON, nullable=False),
        sa.Column("due_at", bastion.core.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("on_due", sa.String(length=10), nullable=False),
        sa.Column("recurrence", sa.String(length=20), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("previous_id", sa.String(length=40), nullable=True),
        sa.Column("created_by", sa.String(length=40), nullable=True),
        sa.Column("created_at", bastion.core.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("completed_at", bastion.core.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("reminded_at", bastion.core.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_access_reviews_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_access_reviews")),
    )
    with op.batch_alter_table("access_reviews", schema=None) as batch_op:
        batch_op.create_index("ix_access_reviews_org_id_id", ["org_id", "id"], unique=False)
        batch_op.create_index("ix_access_reviews_status_due", ["status", "due_at"], unique=False)

    op.create_table(
        "compliance_attestations",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("framework", sa.String(length=20), nullable=False),
        sa.Column("control_id", sa.String(length=40), nullable=False),
        sa.Column("statement", sa.Text(), nullable=False),
        sa.Column("evidence_url", sa.String(length=2000), nullable=True),
        sa.Column("document_sha256", sa.String(length=64), nullable=True),
        sa.Column("attested_by", sa.String(length=40), nullable=False),
        sa.Column("attested_by_type", sa.String(length=20), nullable=False),
        sa.Column("attested_at", bastion.core.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("valid_until", bastion.core.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_compliance_attestations_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_compliance_attestations")),
    )
    with op.batch_alter_table("compliance_attestations", schema=None) as batch_op:
        batch_op.create_index(
            "ix_compliance_attestations_control",
            ["org_id", "framework", "control_id"],
            unique=False,
        )

    op.create_table(
        "compliance_control_states",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("framework", sa.String(length=20), nullable=False),
        sa.Column("control_id", sa.String(length=40), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("checks", _JSON, nullable=False),
        sa.Column("started_at", bastion.core.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column(
            "last_evaluated_at", bastion.core.db.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column("evaluations", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_compliance_control_states_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_compliance_control_states")),
    )
    with op.batch_alter_table("compliance_control_states", schema=None) as batch_op:
        batch_op.create_index(
            "ix_compliance_states_control",
            ["org_id", "framework", "control_id", "started_at"],
            unique=False,
        )

    op.create_table(
        "compliance_reports",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("framework", sa.String(length=20), nullable=False),
        sa.Column("format", sa.String(length=10), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("signature", sa.String(length=200), nullable=False),
        sa.Column("kid", sa.String(length=100), nullable=False),
        sa.Column("created_by", sa.String(length=40), nullable=True),
        sa.Column("created_at", bastion.core.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_compliance_reports_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_compliance_reports")),
    )
    with op.batch_alter_table("compliance_reports", schema=None) as batch_op:
        batch_op.create_index("ix_compliance_reports_org_id_id", ["org_id", "id"], unique=False)

    op.create_table(
        "access_review_items",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("review_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("subject_id", sa.String(length=40), nullable=False),
        sa.Column("subject_name", sa.String(length=320), nullable=False),
        sa.Column("access", _JSON, nullable=False),
        sa.Column("holder_ids", _JSON, nullable=False),
        sa.Column("decision", sa.String(length=10), nullable=True),
        sa.Column("comment", sa.String(length=2000), nullable=True),
        sa.Column("decided_by", sa.String(length=40), nullable=True),
        sa.Column("decided_at", bastion.core.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("on_due", sa.Boolean(), nullable=False),
        sa.Column("effect", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_access_review_items_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["review_id"],
            ["access_reviews.id"],
            name=op.f("fk_access_review_items_review_id_access_reviews"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_access_review_items")),
    )
    with op.batch_alter_table("access_review_items", schema=None) as batch_op:
        batch_op.create_index("ix_access_review_items_review", ["review_id", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("access_review_items", schema=None) as batch_op:
        batch_op.drop_index("ix_access_review_items_review")

    op.drop_table("access_review_items")
    with op.batch_alter_table("compliance_reports", schema=None) as batch_op:
        batch_op.drop_index("ix_compliance_reports_org_id_id")

    op.drop_table("compliance_reports")
    with op.batch_alter_table("compliance_control_states", schema=None) as batch_op:
        batch_op.drop_index("ix_compliance_states_control")

    op.drop_table("compliance_control_states")
    with op.batch_alter_table("compliance_attestations", schema=None) as batch_op:
        batch_op.drop_index("ix_compliance_attestations_control")

    op.drop_table("compliance_attestations")
    with op.batch_alter_table("access_reviews", schema=None) as batch_op:
        batch_op.drop_index("ix_access_reviews_status_due")
        batch_op.drop_index("ix_access_reviews_org_id_id")

    op.drop_table("access_reviews")

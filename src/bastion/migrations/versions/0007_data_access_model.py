"""data access model

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 05:31:05.554590
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import bastion.core.db

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "authz_revisions",
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("org_id", name=op.f("pk_authz_revisions")),
    )
    op.create_table(
        "acl_entries",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("resource_type", sa.String(length=20), nullable=False),
        sa.Column("resource_id", sa.String(length=40), nullable=False),
        sa.Column("principal", sa.String(length=40), nullable=False),
        sa.Column("relation", sa.String(length=20), nullable=False),
        sa.Column("expires_at", bastion.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", bastion.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_acl_entries_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_acl_entries")),
        sa.UniqueConstraint(
            "resource_id", "principal", name=op.f("uq_acl_entries_resource_id_principal")
        ),
    )
    with op.batch_alter_table("acl_entries", schema=None) as batch_op:
        batch_op.create_index("ix_acl_entries_org_id", ["org_id"], unique=False)

    op.create_table(
        "authz_rules",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("effect", sa.String(length=10), nullable=False),
        sa.Column("action", sa.String(length=20), nullable=False),
        sa.Column("resource_type", sa.String(length=20), nullable=False),
        sa.Column("condition", sa.String(length=4000), nullable=False),
        sa.Column("created_at", bastion.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_authz_rules_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_authz_rules")),
    )
    with op.batch_alter_table("authz_rules", schema=None) as batch_op:
        batch_op.create_index("ix_authz_rules_org_id_id", ["org_id", "id"], unique=False)

    op.create_table(
        "sources",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_by", sa.String(length=40), nullable=True),
        sa.Column("created_at", bastion.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_sources_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sources")),
    )
    with op.batch_alter_table("sources", schema=None) as batch_op:
        batch_op.create_index("ix_sources_org_id_id", ["org_id", "id"], unique=False)

    op.create_table(
        "documents",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("source_id", sa.String(length=40), nullable=False),
        sa.Column("external_id", sa.String(length=500), nullable=False),
        sa.Column(
            "metadata",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("inherit", sa.Boolean(), nullable=False),
        sa.Column("created_at", bastion.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", bastion.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_documents_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["source_id"],
            ["sources.id"],
            name=op.f("fk_documents_source_id_sources"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_documents")),
        sa.UniqueConstraint(
            "source_id", "external_id", name=op.f("uq_documents_source_id_external_id")
        ),
    )
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.create_index("ix_documents_org_id_id", ["org_id", "id"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.drop_index("ix_documents_org_id_id")

    op.drop_table("documents")
    with op.batch_alter_table("sources", schema=None) as batch_op:
        batch_op.drop_index("ix_sources_org_id_id")

    op.drop_table("sources")
    with op.batch_alter_table("authz_rules", schema=None) as batch_op:
        batch_op.drop_index("ix_authz_rules_org_id_id")

    op.drop_table("authz_rules")
    with op.batch_alter_table("acl_entries", schema=None) as batch_op:
        batch_op.drop_index("ix_acl_entries_org_id")

    op.drop_table("acl_entries")
    op.drop_table("authz_revisions")

"""scim: provisioning tokens and the SCIM attributes of users and teams

Revision ID: 0022_scim
Revises: 0021_sso
Create Date: 2026-12-07 08:30:00.000000

`scim_tokens` holds each organisation's SCIM bearer tokens as keyed hashes (like API
keys). `scim_resources` holds what a SCIM client stored on a user or a team beyond the
fields Bastion keeps itself (externalId, name parts, emails, …).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import bastion.core.db

revision: str = "0022_scim"
down_revision: str | None = "0021_sso"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
_TIME = bastion.core.db.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "scim_tokens",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("pepper_version", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(length=40), nullable=True),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("revoked_at", _TIME, nullable=True),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_scim_tokens_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scim_tokens")),
    )
    op.create_index("ix_scim_tokens_org_id_id", "scim_tokens", ["org_id", "id"], unique=False)
    op.create_table(
        "scim_resources",
        sa.Column("resource_id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("resource_type", sa.String(length=20), nullable=False),
        sa.Column("external_id", sa.String(length=512), nullable=True),
        sa.Column("user_name", sa.String(length=320), nullable=True),
        sa.Column("attributes", _JSON, nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("updated_at", _TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_scim_resources_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("resource_id", name=op.f("pk_scim_resources")),
    )
    op.create_index("ix_scim_resources_org_id_type", "scim_resources", ["org_id", "resource_type"])
    op.create_index(
        "ix_scim_resources_org_id_user_name",
        "scim_resources",
        ["org_id", "resource_type", "user_name"],
    )
    op.create_index(
        "ix_scim_resources_org_id_external_id",
        "scim_resources",
        ["org_id", "resource_type", "external_id"],
    )


def downgrade() -> None:
    op.drop_index("ix_scim_resources_org_id_external_id", table_name="scim_resources")
    op.drop_index("ix_scim_resources_org_id_user_name", table_name="scim_resources")
    op.drop_index("ix_scim_resources_org_id_type", table_name="scim_resources")
    op.drop_table("scim_resources")
    op.drop_index("ix_scim_tokens_org_id_id", table_name="scim_tokens")
    op.drop_table("scim_tokens")

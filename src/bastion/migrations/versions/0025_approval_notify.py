"""Approvers notified where they are: each approval's notices (fan-out, email, Slack)
with their retries, each organisation's Slack app (sealed signing secret and bot
token), and the Slack user linked to each user

Revision ID: 0025_approval_notify
Revises: 0024_saml_sp
Create Date: 2026-12-07 11:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import bastion.core.db

revision: str = "0025_approval_notify"
down_revision: str | None = "0024_saml_sp"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "approval_notices",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("approval_id", sa.String(length=40), nullable=False),
        sa.Column("channel", sa.String(length=10), nullable=False),
        sa.Column("recipient", sa.String(length=40), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_at", bastion.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("sent_at", bastion.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("error", sa.String(length=300), nullable=True),
        sa.Column("created_at", bastion.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["approval_id"], ["approvals.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["org_id"], ["organizations.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ux_approval_notices_target",
        "approval_notices",
        ["approval_id", "channel", "recipient", "round"],
        unique=True,
    )
    op.create_index("ix_approval_notices_due", "approval_notices", ["sent_at", "next_at"])
    op.create_table(
        "slack_settings",
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("team_id", sa.String(length=40), nullable=False),
        sa.Column("signing_secret_id", sa.String(length=40), nullable=False),
        sa.Column("bot_token_id", sa.String(length=40), nullable=True),
        sa.Column("updated_at", bastion.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["organizations.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("org_id"),
        sa.UniqueConstraint("team_id"),
    )
    # Plain ADD COLUMN (a batch rebuild of users would cascade their sessions and keys).
    op.add_column("users", sa.Column("slack_user_id", sa.String(length=40), nullable=True))
    op.create_index(
        "ux_users_org_id_slack_user_id", "users", ["org_id", "slack_user_id"], unique=True
    )


def downgrade() -> None:
    op.drop_index("ux_users_org_id_slack_user_id", table_name="users")
    op.drop_column("users", "slack_user_id")
    op.drop_table("slack_settings")
    op.drop_index("ix_approval_notices_due", table_name="approval_notices")
    op.drop_index("ux_approval_notices_target", table_name="approval_notices")
    op.drop_table("approval_notices")

"""an organisation may refuse admin-role API keys the actions that need step-up

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07 07:05:00.000000

API keys are not people, so step-up does not apply to them; an organisation may now
refuse admin-role keys those actions instead (off for existing organisations: today's
behaviour).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A plain ADD COLUMN: a batch rebuild of `organizations` would cascade its drop to
    # every row of every organisation on SQLite.
    op.add_column(
        "organizations",
        sa.Column(
            "step_up_refuses_admin_keys", sa.Boolean(), nullable=False, server_default=sa.false()
        ),
    )


def downgrade() -> None:
    op.drop_column("organizations", "step_up_refuses_admin_keys")

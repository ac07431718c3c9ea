"""mfa: factors, recovery codes, mfa tokens; session amr and auth_time; org MFA policy

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 05:30:00.000000

A person's second factors (`mfa_factors`, TOTP secrets sealed in the vault), their
recovery codes (keyed hashes, `mfa_recovery_codes`) and the short-lived `mfa_token`s
between a right password and a verified factor (`mfa_challenges`). Sessions record how
the person proved who they are (`amr`) and when they last did (`auth_time`, for
step-up); existing sessions keep NULL, read as ["pwd"] and their `created_at`.
Organisations gain their MFA policy, allowed methods and step-up window.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import bastion.core.db

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
_TIME = bastion.core.db.UTCDateTime(timezone=True)


def _owned(table: str, *columns: sa.Column[object]) -> None:
    """A table of rows that belong to one user of one organisation (both cascade)."""
    op.create_table(
        table,
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("user_id", sa.String(length=40), nullable=False),
        *columns,
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f(f"fk_{table}_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f(f"fk_{table}_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{table}")),
    )
    op.create_index(f"ix_{table}_user_id", table, ["user_id"], unique=False)


def upgrade() -> None:
    # Plain ADD COLUMNs: a batch rebuild of `organizations` or `sessions` would drop and
    # recreate them, and with foreign keys on SQLite would cascade that drop.
    op.add_column(
        "organizations",
        sa.Column("mfa_policy", sa.String(length=20), nullable=False, server_default="optional"),
    )
    op.add_column("organizations", sa.Column("mfa_methods", _JSON, nullable=True))
    op.add_column(
        "organizations",
        sa.Column("step_up_max_age", sa.Integer(), nullable=False, server_default="600"),
    )
    op.add_column("sessions", sa.Column("amr", _JSON, nullable=True))
    op.add_column("sessions", sa.Column("auth_time", _TIME, nullable=True))

    _owned(
        "mfa_factors",
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("secret_id", sa.String(length=40), nullable=True),
        sa.Column("last_step", sa.Integer(), nullable=True),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("confirmed_at", _TIME, nullable=True),
        sa.Column("last_used_at", _TIME, nullable=True),
    )
    _owned(
        "mfa_recovery_codes",
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("pepper_version", sa.Integer(), nullable=False),
        sa.Column("used_at", _TIME, nullable=True),
        sa.Column("created_at", _TIME, nullable=False),
    )
    _owned(
        "mfa_challenges",
        sa.Column("purpose", sa.String(length=20), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("pepper_version", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("expires_at", _TIME, nullable=False),
        sa.Column("used_at", _TIME, nullable=True),
        sa.Column("created_at", _TIME, nullable=False),
    )


def downgrade() -> None:
    for table in ("mfa_challenges", "mfa_recovery_codes", "mfa_factors"):
        op.drop_index(f"ix_{table}_user_id", table_name=table)
        op.drop_table(table)
    # Native DROP COLUMN (SQLite 3.35+): no table rebuild.
    op.drop_column("sessions", "auth_time")
    op.drop_column("sessions", "amr")
    op.drop_column("organizations", "step_up_max_age")
    op.drop_column("organizations", "mfa_methods")
    op.drop_column("organizations", "mfa_policy")

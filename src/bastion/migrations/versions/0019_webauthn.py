"""webauthn: credentials on mfa_factors; single-use WebAuthn challenges

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07 06:00:00.000000

A WebAuthn factor (a passkey or a security key) is a row of `mfa_factors` with its
credential id (unique in the instance: a credential belongs to one person), COSE public
key, signature counter, transports and AAGUID. `mfa_webauthn_challenges` holds the
challenges Bastion issued (their SHA-256 only), each used once within minutes and bound
to the person, mfa token or session it was issued for; a passwordless sign-in's
challenge is bound to nobody yet, so its organisation and user are NULL.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import bastion.core.db

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
_TIME = bastion.core.db.UTCDateTime(timezone=True)
_TABLE = "mfa_webauthn_challenges"


def upgrade() -> None:
    # Plain ADD COLUMNs: a batch rebuild of `mfa_factors` on SQLite would drop and
    # recreate it (no table references it today, but the rule keeps rebuilds away from
    # every table under a cascade).
    op.add_column("mfa_factors", sa.Column("credential_id", sa.String(length=1400), nullable=True))
    op.add_column("mfa_factors", sa.Column("public_key", sa.LargeBinary(), nullable=True))
    op.add_column("mfa_factors", sa.Column("sign_count", sa.BigInteger(), nullable=True))
    op.add_column("mfa_factors", sa.Column("transports", _JSON, nullable=True))
    op.add_column("mfa_factors", sa.Column("aaguid", sa.String(length=36), nullable=True))
    op.create_index("ix_mfa_factors_credential_id", "mfa_factors", ["credential_id"], unique=True)

    op.create_table(
        _TABLE,
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=True),
        sa.Column("user_id", sa.String(length=40), nullable=True),
        sa.Column("purpose", sa.String(length=20), nullable=False),
        sa.Column("bound_to", sa.String(length=40), nullable=True),
        sa.Column("challenge_hash", sa.String(length=64), nullable=False),
        sa.Column("expires_at", _TIME, nullable=False),
        sa.Column("used_at", _TIME, nullable=True),
        sa.Column("created_at", _TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f(f"fk_{_TABLE}_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f(f"fk_{_TABLE}_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{_TABLE}")),
    )
    op.create_index(f"ix_{_TABLE}_challenge_hash", _TABLE, ["challenge_hash"], unique=True)
    op.create_index(f"ix_{_TABLE}_expires_at", _TABLE, ["expires_at"], unique=False)


def downgrade() -> None:
    op.drop_index(f"ix_{_TABLE}_expires_at", table_name=_TABLE)
    op.drop_index(f"ix_{_TABLE}_challenge_hash", table_name=_TABLE)
    op.drop_table(_TABLE)
    op.drop_index("ix_mfa_factors_credential_id", table_name="mfa_factors")
    # Native DROP COLUMN (SQLite 3.35+): no table rebuild.
    for column in ("aaguid", "transports", "sign_count", "public_key", "credential_id"):
        op.drop_column("mfa_factors", column)

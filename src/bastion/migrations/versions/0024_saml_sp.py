"""SAML service provider: each SAML connection's sealed SP key and public certificate,
the IdP metadata fetched from its URL (and when), the e-mail attribute, and whether
IdP-initiated sign-in is allowed

Revision ID: 0024_saml_sp
Revises: 0023_oauth
Create Date: 2026-12-07 09:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import bastion.core.db

revision: str = "0024_saml_sp"
down_revision: str | None = "0023_oauth"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLE = "sso_connections"


def upgrade() -> None:
    # Plain ADD COLUMNs (a batch rebuild would cascade the requests' and codes' rows).
    op.add_column(_TABLE, sa.Column("sp_key_secret_id", sa.String(40), nullable=True))
    op.add_column(_TABLE, sa.Column("sp_cert_pem", sa.Text(), nullable=True))
    op.add_column(_TABLE, sa.Column("idp_metadata_fetched", sa.Text(), nullable=True))
    op.add_column(
        _TABLE,
        sa.Column(
            "idp_metadata_fetched_at", bastion.core.db.UTCDateTime(timezone=True), nullable=True
        ),
    )
    op.add_column(_TABLE, sa.Column("email_attribute", sa.String(200), nullable=True))
    op.add_column(
        _TABLE,
        sa.Column("allow_idp_initiated", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    for column in (
        "allow_idp_initiated",
        "email_attribute",
        "idp_metadata_fetched_at",
        "idp_metadata_fetched",
        "sp_cert_pem",
        "sp_key_secret_id",
    ):
        op.drop_column(_TABLE, column)

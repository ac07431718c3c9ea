"""secret versions hold their data key: composite foreign key to org_keys

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03 09:00:00.000000

`secret_versions` already carries `org_id` (NOT NULL, written with every row since
0010, the same organisation as its secret's). This adds the foreign key
(org_id, key_version) -> org_keys(org_id, version), no action on delete, so a data key
cannot be destroyed while a row still uses it, and an index on the same columns (the
key's deletion looks the rows up by it, and so does re-encryption).

Rows whose data key no longer exists are deleted first: they belong to organisations
crypto-shredded before this revision and can never be decrypted again.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "DELETE FROM secret_versions WHERE NOT EXISTS (SELECT 1 FROM org_keys"
        " WHERE org_keys.org_id = secret_versions.org_id"
        " AND org_keys.version = secret_versions.key_version)"
    )
    with op.batch_alter_table("secret_versions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_secret_versions_org_id_key_version", ["org_id", "key_version"], unique=False
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_secret_versions_org_id_org_keys"),
            "org_keys",
            ["org_id", "key_version"],
            ["org_id", "version"],
        )


def downgrade() -> None:
    with op.batch_alter_table("secret_versions", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_secret_versions_org_id_org_keys"), type_="foreignkey"
        )
        batch_op.drop_index("ix_secret_versions_org_id_key_version")

"""Index changes on large tables that do not stop writes while they run.

On PostgreSQL an index is built or dropped CONCURRENTLY, outside the migration's
transaction: the table keeps taking writes (for the audit log, every audited change
in the product) while it builds. A concurrent build that fails leaves an INVALID index
behind; building again drops that one first (a valid index of the name is kept).
Elsewhere (SQLite) these are the plain operations.

Running outside the transaction means the revisions applied before one of these are
committed when it starts: an upgrade that fails at or after it stops at the last
committed revision (run `bastion migrate` again), not back at where it began.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import context, op
from sqlalchemy import text


def _postgres() -> bool:
    return bool(op.get_bind().dialect.name == "postgresql")


def create_index(name: str, table: str, columns: Sequence[str]) -> None:
    if not _postgres():
        op.create_index(name, table, list(columns))
        return
    with op.get_context().autocommit_block():
        if context.is_offline_mode():  # a script: no catalog to ask, build unless present
            op.create_index(
                name, table, list(columns), postgresql_concurrently=True, if_not_exists=True
            )
            return
        valid = op.get_bind().scalar(
            text("SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                 " WHERE c.relname = :name AND i.indrelid = CAST(:table AS regclass)"),
            {"name": name, "table": table},
        )  # fmt: skip
        if valid:
            return
        if valid is not None:  # INVALID: what a failed concurrent build leaves
            op.drop_index(name, table_name=table, postgresql_concurrently=True)
        op.create_index(name, table, list(columns), postgresql_concurrently=True)


def drop_index(name: str, table: str) -> None:
    if not _postgres():
        op.drop_index(name, table_name=table)
        return
    with op.get_context().autocommit_block():
        op.drop_index(name, table_name=table, postgresql_concurrently=True, if_exists=True)

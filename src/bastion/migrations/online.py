"""Index changes on large tables that do not stop writes while they run.

On PostgreSQL an index is built or dropped CONCURRENTLY, outside the migration's
transaction: the table keeps taking writes (for the audit log, every audited change
in the product) while it builds. A concurrent build that fails leaves an INVALID index
behind; building again drops it first. Elsewhere (SQLite) these are the plain
operations.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op


def _postgres() -> bool:
    return bool(op.get_bind().dialect.name == "postgresql")


def create_index(name: str, table: str, columns: Sequence[str]) -> None:
    if not _postgres():
        op.create_index(name, table, list(columns))
        return
    with op.get_context().autocommit_block():
        op.drop_index(name, table_name=table, postgresql_concurrently=True, if_exists=True)
        op.create_index(name, table, list(columns), postgresql_concurrently=True)


def drop_index(name: str, table: str) -> None:
    if not _postgres():
        op.drop_index(name, table_name=table)
        return
    with op.get_context().autocommit_block():
        op.drop_index(name, table_name=table, postgresql_concurrently=True, if_exists=True)

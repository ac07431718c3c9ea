"""audit event times never decrease along a chain

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02 14:30:00.000000

From this revision on, `record` stamps an event no earlier than the event before it in
its chain (`audit_heads.time`, the newest event's time), so a time range is a seq range
and search finds it with two index probes instead of walking the chain.

Existing events keep their times (they are hashed). This revision records, per chain,
the last event earlier than its predecessor (`unordered_seq`, 0 when the chain is in
order) and the latest time up to it (`unordered_time`): search translates a time range
only when it starts after that time, so nothing is ever missed. All workers must run
this revision's code once it is applied (an older worker would not keep the order).

On PostgreSQL 14 and later it also adds statistics on the text that search's `q`
filter matches (metadata and reason, lower-cased), so the planner knows how common a
word is: without them it guesses from the word's length and, for a long word, scans
the whole table instead of walking the newest events until a page is full.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import bastion.core.db

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TEXT_STATISTICS = "audit_events_search_text"
# `service.filtered`'s text for `q`, as SQLAlchemy writes it (the planner matches the
# expression, so it must stay the same).
SEARCH_TEXT = "lower(CAST(metadata AS VARCHAR)) || ' ' || lower(coalesce(reason, ''))"


def _postgres_14() -> bool:
    bind = op.get_bind()
    return bind.dialect.name == "postgresql" and (bind.dialect.server_version_info or ()) >= (14,)


def upgrade() -> None:
    with op.batch_alter_table("audit_heads", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("time", bastion.core.db.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("unordered_seq", sa.BigInteger(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column("unordered_time", bastion.core.db.UTCDateTime(timezone=True), nullable=True)
        )
    op.execute(
        "UPDATE audit_heads SET time = (SELECT e.time FROM audit_events e"
        " WHERE e.chain = audit_heads.chain AND e.seq = audit_heads.seq)"
    )
    op.execute(
        "UPDATE audit_heads SET unordered_seq = COALESCE((SELECT max(x.seq) FROM"
        " (SELECT e.seq, e.time, lag(e.time) OVER (ORDER BY e.seq) AS before"
        "  FROM audit_events e WHERE e.chain = audit_heads.chain) x"
        " WHERE x.time < x.before), 0)"
    )
    op.execute(
        "UPDATE audit_heads SET unordered_time = (SELECT max(e.time) FROM audit_events e"
        " WHERE e.chain = audit_heads.chain AND e.seq <= audit_heads.unordered_seq)"
        " WHERE unordered_seq > 0"
    )
    if _postgres_14():
        op.execute(f"CREATE STATISTICS {TEXT_STATISTICS} ON ({SEARCH_TEXT}) FROM audit_events")
        op.execute("ANALYZE audit_events")


def downgrade() -> None:
    if _postgres_14():
        op.execute(f"DROP STATISTICS IF EXISTS {TEXT_STATISTICS}")
    with op.batch_alter_table("audit_heads", schema=None) as batch_op:
        batch_op.drop_column("unordered_time")
        batch_op.drop_column("unordered_seq")
        batch_op.drop_column("time")

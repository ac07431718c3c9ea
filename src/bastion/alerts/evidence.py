"""The alerts domain's read-only facts for compliance evidence (`bastion.compliance`):
which kinds of enabled alert rules the organisation has, and how many of each."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.alerts.models import AlertRule


def enabled_rule_kinds(db: Session, org_id: str) -> dict[str, int]:
    kinds = db.execute(
        select(AlertRule.kind).where(AlertRule.org_id == org_id, AlertRule.enabled.is_(True))
    ).scalars()
    return dict(Counter(kinds))


def rule_channels(db: Session, org_id: str) -> list[str]:
    """The channel types (webhook, slack, email) the enabled rules notify through."""
    rows = db.execute(
        select(AlertRule.channels).where(AlertRule.org_id == org_id, AlertRule.enabled.is_(True))
    ).scalars()
    return sorted({str(c.get("type")) for channels in rows for c in channels or []})

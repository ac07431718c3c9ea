"""Tenancy's read-only facts for compliance (`bastion.compliance`): which
organisations are active, for the background evaluation of their controls."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.tenancy.models import Organization


def active_org_ids(db: Session) -> list[str]:
    stmt = select(Organization.id).where(Organization.status == "active").order_by(Organization.id)
    return list(db.execute(stmt).scalars())

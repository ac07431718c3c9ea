"""Identity's facts for authorization's index, registered with `bastion.authz.facts`
when this package is imported (authz sits below identity and never reads its tables).

The same queries the index always ran: one per table, the same columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.authz.facts import RoleStatus, register_principal_facts
from bastion.core.clock import as_utc
from bastion.core.ids import has_prefix
from bastion.identity.models import ApiKey, ServiceAccount, User


class _Principals:
    """Users, service accounts and API keys as `bastion.authz.facts.PrincipalFacts`."""

    def roles(
        self, db: Session, org_id: str
    ) -> tuple[dict[str, RoleStatus], dict[str, RoleStatus]]:
        users = {
            u: (role, status)
            for u, role, status in db.execute(
                select(User.id, User.role, User.status).where(User.org_id == org_id)
            )
        }
        accounts = {
            a: (role, status)
            for a, role, status in db.execute(
                select(ServiceAccount.id, ServiceAccount.role, ServiceAccount.status).where(
                    ServiceAccount.org_id == org_id
                )
            )
        }
        return users, accounts

    def key_roles(
        self, db: Session, org_id: str, key_ids: Sequence[str]
    ) -> dict[str, tuple[str, datetime | None]]:
        found: dict[str, tuple[str, datetime | None]] = {}
        for key_id, role, revoked, expires in db.execute(
            select(ApiKey.id, ApiKey.role, ApiKey.revoked_at, ApiKey.expires_at).where(
                ApiKey.org_id == org_id, ApiKey.id.in_(key_ids)
            )
        ):
            ends = [as_utc(t) for t in (revoked, expires) if t is not None]
            found[key_id] = (role, min(ends) if ends else None)
        return found

    def exists(self, db: Session, org_id: str, principal_id: str) -> bool:
        row: User | ServiceAccount | None = None
        if has_prefix(principal_id, "usr"):
            row = db.get(User, principal_id)
        elif has_prefix(principal_id, "sa"):
            row = db.get(ServiceAccount, principal_id)
        return row is not None and row.org_id == org_id


register_principal_facts(_Principals())

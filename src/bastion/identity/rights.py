"""What a principal, named by its id, may do right now: for rights one principal hands
on to another (an agent configured by someone, a run started by someone), checked
again whenever they are used, so that losing a right stops everything it was handed to.

Ids: a user (`usr_…`): their role and the grants in force; a service account (`sa_…`):
its role; an API key (`key_…`): its role cut to its owner's current rights (a key of
nobody's, made by an operator: its role), nothing once revoked or expired. Anything
else, anyone inactive or of another organisation: no rights at all (default deny)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from bastion.authz import service as authz
from bastion.core.clock import utcnow
from bastion.core.ids import has_prefix
from bastion.core.permissions import Permission
from bastion.identity.models import ApiKey, ServiceAccount, User

NONE: frozenset[Permission] = frozenset()


def current_permissions(
    db: Session, org_id: str, principal_id: str | None
) -> frozenset[Permission]:
    if not principal_id:
        return NONE
    if has_prefix(principal_id, "usr"):
        return _user(db, org_id, principal_id)
    if has_prefix(principal_id, "sa"):
        return _account(db, org_id, principal_id)
    if has_prefix(principal_id, "key"):
        return _key(db, org_id, principal_id)
    return NONE


def _user(db: Session, org_id: str, user_id: str) -> frozenset[Permission]:
    user = db.get(User, user_id)
    if user is None or user.org_id != org_id or user.status != "active":
        return NONE
    return authz.user_permissions(db, org_id, user.role, user.id, user.grants_until)


def _account(db: Session, org_id: str, account_id: str) -> frozenset[Permission]:
    account = db.get(ServiceAccount, account_id)
    if account is None or account.org_id != org_id or account.status != "active":
        return NONE
    return authz.permissions_of_role(db, org_id, account.role)


def _key(db: Session, org_id: str, key_id: str) -> frozenset[Permission]:
    key = db.get(ApiKey, key_id)
    now = utcnow()
    if (
        key is None
        or key.org_id != org_id
        or (key.revoked_at is not None and key.revoked_at <= now)
        or (key.expires_at is not None and key.expires_at <= now)
    ):
        return NONE
    perms = authz.permissions_of_role(db, org_id, key.role)
    if key.user_id is not None:
        return perms & _user(db, org_id, key.user_id)
    if key.service_account_id is not None:
        return perms & _account(db, org_id, key.service_account_id)
    return perms  # an operator's key of nobody's (`bastion apikey create`): its role

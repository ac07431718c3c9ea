"""API keys (`bsk_…`) and the service accounts that may own them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.audit import service as audit
from bastion.authz import service as authz
from bastion.core.clock import utcnow
from bastion.core.context import Actor
from bastion.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from bastion.core.events import EventType
from bastion.core.ids import has_prefix, new_id
from bastion.core.pagination import Page, newest_first
from bastion.core.permissions import Permission
from bastion.core.principal import Principal
from bastion.identity.models import ApiKey, ServiceAccount
from bastion.identity.tokens import TokenHasher, TokenKind

MAX_OVERLAP_SECONDS = 7 * 24 * 3600


@dataclass(frozen=True)
class IssuedKey:
    key: ApiKey
    token: str  # shown once

    def __repr__(self) -> str:
        return f"IssuedKey(key={self.key.id})"


def display_prefix(key: ApiKey) -> str:
    return f"{TokenKind.API_KEY.value}_{key.id}"


def key_status(key: ApiKey, now: datetime) -> str:
    if key.revoked_at is not None and key.revoked_at <= now:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= now:
        return "expired"
    return "active"


def _owner_of(principal: Principal | None) -> tuple[str | None, str | None]:
    """A key made by a user belongs to that user; by a service account, to it."""
    if principal is None:
        return None, None
    if principal.principal_type == "service_account":
        return None, principal.id
    return principal.user_id, None


def create_key(
    db: Session,
    actor: Actor,
    org_id: str,
    *,
    name: str,
    role: str | None,
    expires_at: datetime | None,
    hasher: TokenHasher,
    principal: Principal | None = None,
    service_account_id: str | None = None,
) -> IssuedKey:
    """`principal` is None only for instance bootstrap (`bastion apikey create`)."""
    if principal is not None:
        principal.require_org(org_id)
        principal.require(Permission.APIKEYS_MANAGE)
    user_id, sa_id = _owner_of(principal)
    if service_account_id is not None:
        if principal is not None:  # a key of an account acts as the account
            principal.require(Permission.SERVICE_ACCOUNTS_MANAGE)
        account = _find_account(db, org_id, service_account_id, field="service_account_id")
        user_id, sa_id = None, account.id
        role = role or account.role
    if role is None:
        raise InvalidInput.field("role", "is required")
    stored_role = authz.resolve_role(db, org_id, role)
    if principal is not None:
        if stored_role == "admin":  # a person handing out admin rights: step-up
            principal.require_recent_auth("api_key.create_admin")
        granted = authz.permissions_of_role(db, org_id, stored_role)
        authz.ensure_can_confer(principal, granted, until=expires_at)
    if expires_at is not None and expires_at <= utcnow():
        raise InvalidInput.field("expires_at", "must be in the future")
    key_id = new_id("key")
    token, digest, version = hasher.issue(TokenKind.API_KEY, key_id)
    key = ApiKey(
        id=key_id,
        org_id=org_id,
        name=name,
        role=stored_role,
        user_id=user_id,
        service_account_id=sa_id,
        secret_hash=digest,
        pepper_version=version,
        expires_at=expires_at,
        created_by=principal.id if principal else None,
    )
    db.add(key)
    db.flush()
    audit.record(
        db,
        type=EventType.API_KEY_CREATED,
        actor=actor,
        org_id=org_id,
        resource=("api_key", key_id),
        metadata={
            "name": name,
            "role": stored_role,
            "service_account_id": sa_id,
            "expires_at": expires_at.isoformat() if expires_at else None,
        },
    )
    return IssuedKey(key, token)


def _find_key(db: Session, org_id: str, key_id: str) -> ApiKey:
    if not has_prefix(key_id, "key"):
        raise NotFound("API key not found")
    key = db.execute(
        select(ApiKey).where(ApiKey.org_id == org_id, ApiKey.id == key_id)
    ).scalar_one_or_none()
    if key is None:
        raise NotFound("API key not found")
    return key


def get_key(db: Session, principal: Principal, org_id: str, key_id: str) -> ApiKey:
    principal.require_org(org_id)
    principal.require(Permission.APIKEYS_READ)
    return _find_key(db, org_id, key_id)


def list_keys(
    db: Session, principal: Principal, org_id: str, *, limit: int, cursor: str | None
) -> Page[ApiKey]:
    principal.require_org(org_id)
    principal.require(Permission.APIKEYS_READ)
    stmt = select(ApiKey).where(ApiKey.org_id == org_id)
    return newest_first(db, stmt, ApiKey.id, limit=limit, cursor=cursor)


def rotate_key(
    db: Session,
    principal: Principal,
    org_id: str,
    key_id: str,
    *,
    overlap_seconds: int,
    hasher: TokenHasher,
) -> IssuedKey:
    """Issue a successor with the same name, role, owner and expiry; the old key keeps
    working for `overlap_seconds` (0: it stops now)."""
    principal.require_org(org_id)
    principal.require(Permission.APIKEYS_MANAGE)
    if not 0 <= overlap_seconds <= MAX_OVERLAP_SECONDS:
        raise InvalidInput.field("overlap_seconds", f"must be between 0 and {MAX_OVERLAP_SECONDS}")
    audit.lock_chain(db, org_id)  # first: a revoke or rotation of the key at once waits
    old = _find_key(db, org_id, key_id)
    now = utcnow()
    if key_status(old, now) != "active" or old.rotated_to is not None:
        raise Conflict("only an active key that was not rotated already can be rotated")
    _require_may_hold(principal, old)
    if old.role == "admin":
        principal.require_recent_auth("api_key.rotate_admin")
    # The successor is handed to the caller, with the old key's role and expiry.
    granted = authz.permissions_of_role(db, org_id, old.role)
    authz.ensure_can_confer(principal, granted, until=old.expires_at)
    new_key_id = new_id("key")
    token, digest, version = hasher.issue(TokenKind.API_KEY, new_key_id)
    new = ApiKey(
        id=new_key_id,
        org_id=org_id,
        name=old.name,
        role=old.role,
        user_id=old.user_id,
        service_account_id=old.service_account_id,
        secret_hash=digest,
        pepper_version=version,
        expires_at=old.expires_at,
        created_by=principal.id,
    )
    db.add(new)
    old.rotated_to = new_key_id
    old.revoked_at = now + timedelta(seconds=overlap_seconds)
    db.flush()
    audit.record(
        db,
        type=EventType.API_KEY_ROTATED,
        actor=principal.actor,
        org_id=org_id,
        resource=("api_key", old.id),
        metadata={"new_key_id": new_key_id, "overlap_seconds": overlap_seconds},
    )
    return IssuedKey(new, token)


def person_behind(db: Session, org_id: str, principal_id: str) -> str | None:
    """The person a principal id acts as: a user themselves, a person's API key its
    owner (revoked or not: what it did was theirs). A service account, its keys and
    anything unknown stand for no person."""
    if has_prefix(principal_id, "usr"):
        return principal_id
    if has_prefix(principal_id, "key"):
        key = db.get(ApiKey, principal_id)
        if key is not None and key.org_id == org_id:
            return key.user_id
    return None


def _require_may_hold(principal: Principal, key: ApiKey) -> None:
    """A rotation hands the caller a key that acts as the old key's owner: a person's key
    only to that person, a service account's only to who manages service accounts."""
    if key.user_id is not None and key.user_id != principal.user_id:
        raise Forbidden(
            "only its owner may rotate a person's key (it would act as them); revoke it instead",
            permission=str(Permission.APIKEYS_MANAGE),
        )
    if key.service_account_id is not None:
        principal.require(Permission.SERVICE_ACCOUNTS_MANAGE)


def revoke_key(db: Session, principal: Principal, org_id: str, key_id: str) -> None:
    principal.require_org(org_id)
    principal.require(Permission.APIKEYS_MANAGE)
    audit.lock_chain(db, org_id)  # first: a rotation of the key at once waits
    key = _find_key(db, org_id, key_id)
    now = utcnow()
    if key.revoked_at is None or key.revoked_at > now:
        key.revoked_at = now
        audit.record(
            db,
            type=EventType.API_KEY_REVOKED,
            actor=principal.actor,
            org_id=org_id,
            resource=("api_key", key.id),
            metadata={"name": key.name},
        )


# --- service accounts ------------------------------------------------------------------


def _find_account(
    db: Session, org_id: str, account_id: str, field: str | None = None
) -> ServiceAccount:
    account = None
    if has_prefix(account_id, "sa"):
        account = db.execute(
            select(ServiceAccount).where(
                ServiceAccount.org_id == org_id, ServiceAccount.id == account_id
            )
        ).scalar_one_or_none()
    if account is None:
        if field:
            raise InvalidInput.field(field, "no such service account in this organization")
        raise NotFound("service account not found")
    return account


def create_account(
    db: Session, principal: Principal, org_id: str, *, name: str, role: str, description: str
) -> ServiceAccount:
    principal.require_org(org_id)
    principal.require(Permission.SERVICE_ACCOUNTS_MANAGE)
    stored = authz.resolve_role(db, org_id, role)
    authz.ensure_can_confer(principal, authz.permissions_of_role(db, org_id, stored), until=None)
    account = ServiceAccount(
        id=new_id("sa"),
        org_id=org_id,
        name=name,
        description=description,
        role=stored,
        created_by=principal.id,
    )
    db.add(account)
    db.flush()
    audit.record(
        db,
        type=EventType.SERVICE_ACCOUNT_CREATED,
        actor=principal.actor,
        org_id=org_id,
        resource=("service_account", account.id),
        metadata={"name": name, "role": stored},
    )
    return account


def get_account(db: Session, principal: Principal, org_id: str, account_id: str) -> ServiceAccount:
    principal.require_org(org_id)
    principal.require(Permission.SERVICE_ACCOUNTS_READ)
    return _find_account(db, org_id, account_id)


def list_accounts(
    db: Session, principal: Principal, org_id: str, *, limit: int, cursor: str | None
) -> Page[ServiceAccount]:
    principal.require_org(org_id)
    principal.require(Permission.SERVICE_ACCOUNTS_READ)
    stmt = select(ServiceAccount).where(ServiceAccount.org_id == org_id)
    return newest_first(db, stmt, ServiceAccount.id, limit=limit, cursor=cursor)


def update_account(
    db: Session,
    principal: Principal,
    org_id: str,
    account_id: str,
    *,
    name: str | None,
    description: str | None,
    role: str | None,
    status: str | None,
) -> ServiceAccount:
    principal.require_org(org_id)
    principal.require(Permission.SERVICE_ACCOUNTS_MANAGE)
    account = _find_account(db, org_id, account_id)
    held = authz.permissions_of_role(db, org_id, account.role)
    authz.ensure_outranks(principal, held, "this service account")
    changes: dict[str, object] = {}
    if name is not None:
        account.name, changes["name"] = name, name
    if description is not None:
        account.description, changes["description"] = description, description
    if role is not None:
        stored = authz.resolve_role(db, org_id, role)
        granted = authz.permissions_of_role(db, org_id, stored)
        authz.ensure_can_confer(principal, granted, until=None)
        account.role, changes["role"] = stored, stored
    if status is not None:
        if status not in ("active", "suspended"):
            raise InvalidInput.field("status", "must be 'active' or 'suspended'")
        account.status, changes["status"] = status, status
    account.updated_at = utcnow()
    db.flush()
    audit.record(
        db,
        type=EventType.SERVICE_ACCOUNT_UPDATED,
        actor=principal.actor,
        org_id=org_id,
        resource=("service_account", account.id),
        metadata=changes,
    )
    return account


def delete_account(db: Session, principal: Principal, org_id: str, account_id: str) -> None:
    principal.require_org(org_id)
    principal.require(Permission.SERVICE_ACCOUNTS_MANAGE)
    account = _find_account(db, org_id, account_id)
    held = authz.permissions_of_role(db, org_id, account.role)
    authz.ensure_outranks(principal, held, "this service account")
    db.delete(account)  # its keys go with it (ON DELETE CASCADE)
    db.flush()
    audit.record(
        db,
        type=EventType.SERVICE_ACCOUNT_DELETED,
        actor=principal.actor,
        org_id=org_id,
        resource=("service_account", account_id),
        metadata={"name": account.name},
    )

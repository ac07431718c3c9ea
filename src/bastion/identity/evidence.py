"""Identity's read-only facts for compliance evidence and access reviews
(`bastion.compliance`, which sits above identity and never reads its tables): the
organisation's people, API keys and service accounts as plain values, and the two
changes an access review's "revoke" makes (suspend a person, revoke a key, suspend a
service account), each audited in the caller's transaction with the reviewer as actor.
No secret column is ever read here."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.audit import service as audit
from bastion.core.clock import as_utc, utcnow
from bastion.core.context import Actor
from bastion.core.errors import NotFound
from bastion.core.events import EventType
from bastion.identity.models import ApiKey, MfaFactor, ServiceAccount, User
from bastion.identity.service import _keep_an_admin, _set_status


@dataclass(frozen=True)
class PersonFact:
    id: str
    email: str
    name: str
    role: str
    status: str
    has_mfa: bool
    last_login_at: datetime | None
    created_at: datetime


@dataclass(frozen=True)
class KeyFact:
    id: str
    name: str
    role: str
    user_id: str | None
    service_account_id: str | None
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None


@dataclass(frozen=True)
class AccountFact:
    id: str
    name: str
    role: str
    status: str
    created_at: datetime


def _opt(value: datetime | None) -> datetime | None:
    return as_utc(value) if value is not None else None


def people(db: Session, org_id: str) -> list[PersonFact]:
    """Every user of the organisation, with whether they hold a confirmed factor."""
    with_mfa = set(
        db.execute(
            select(MfaFactor.user_id).where(
                MfaFactor.org_id == org_id, MfaFactor.status == "active"
            )
        ).scalars()
    )
    rows = db.execute(select(User).where(User.org_id == org_id).order_by(User.id)).scalars()
    return [
        PersonFact(
            u.id,
            u.email,
            u.name,
            u.role,
            u.status,
            u.id in with_mfa,
            _opt(u.last_login_at),
            as_utc(u.created_at),
        )
        for u in rows
    ]


def live_keys(db: Session, org_id: str) -> list[KeyFact]:
    """API keys not revoked and not expired (rotated keys in their overlap included)."""
    now = utcnow()
    rows = db.execute(
        select(ApiKey)
        .where(ApiKey.org_id == org_id, ApiKey.revoked_at.is_(None))
        .order_by(ApiKey.id)
    ).scalars()
    return [
        KeyFact(
            k.id,
            k.name,
            k.role,
            k.user_id,
            k.service_account_id,
            as_utc(k.created_at),
            _opt(k.expires_at),
            _opt(k.last_used_at),
        )
        for k in rows
        if k.expires_at is None or as_utc(k.expires_at) > now
    ]


def service_accounts(db: Session, org_id: str) -> list[AccountFact]:
    rows = db.execute(
        select(ServiceAccount).where(ServiceAccount.org_id == org_id).order_by(ServiceAccount.id)
    ).scalars()
    return [AccountFact(a.id, a.name, a.role, a.status, as_utc(a.created_at)) for a in rows]


def suspend_person(db: Session, actor: Actor, org_id: str, user_id: str, reason: str) -> bool:
    """Suspend a user now (their sessions end; their keys stop working); False when
    already suspended. Refused (409) when it would leave no active admin."""
    audit.lock_chain(db, org_id)
    user = db.execute(
        select(User).where(User.org_id == org_id, User.id == user_id)
    ).scalar_one_or_none()
    if user is None:
        raise NotFound("user not found")
    if user.status != "active":
        return False
    if user.role == "admin":
        _keep_an_admin(db, org_id, user)
    changes: dict[str, object] = {"reason": reason}
    _set_status(db, user, "suspended", changes)
    user.updated_at = utcnow()
    db.flush()
    audit.record(
        db,
        type=EventType.USER_UPDATED,
        actor=actor,
        org_id=org_id,
        resource=("user", user.id),
        metadata=changes,
    )
    return True


def revoke_key(db: Session, actor: Actor, org_id: str, key_id: str, reason: str) -> bool:
    """Revoke an API key now; False when it already was."""
    audit.lock_chain(db, org_id)
    key = db.execute(
        select(ApiKey).where(ApiKey.org_id == org_id, ApiKey.id == key_id)
    ).scalar_one_or_none()
    if key is None:
        raise NotFound("API key not found")
    now = utcnow()
    if key.revoked_at is not None and as_utc(key.revoked_at) <= now:
        return False
    key.revoked_at = now
    audit.record(
        db,
        type=EventType.API_KEY_REVOKED,
        actor=actor,
        org_id=org_id,
        resource=("api_key", key.id),
        metadata={"name": key.name, "reason": reason},
    )
    return True


def suspend_account(db: Session, actor: Actor, org_id: str, account_id: str, reason: str) -> bool:
    """Suspend a service account now (its keys and tokens stop working)."""
    account = db.execute(
        select(ServiceAccount).where(
            ServiceAccount.org_id == org_id, ServiceAccount.id == account_id
        )
    ).scalar_one_or_none()
    if account is None:
        raise NotFound("service account not found")
    if account.status == "suspended":
        return False
    account.status = "suspended"
    account.updated_at = utcnow()
    db.flush()
    audit.record(
        db,
        type=EventType.SERVICE_ACCOUNT_UPDATED,
        actor=actor,
        org_id=org_id,
        resource=("service_account", account.id),
        metadata={"status": "suspended", "reason": reason},
    )
    return True

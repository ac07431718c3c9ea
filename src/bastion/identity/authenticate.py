"""Bearer credential → Principal. The hot path of every request.

One indexed query per request joins the credential with its owner and organisation, so
suspension, deletion, revocation, logout and expiry take effect on the very next request
on every worker, with no cache to invalidate. What is cached is derived and keyed by
version (pepper-derived HMAC keys, parsed custom-role permissions). Writes the hot path
needs (`last_used_at`, `last_seen_at`) are coarse (at most once per minute per
credential) and done after the response's transaction, never blocking it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bastion.audit.events import EventType, Outcome
from bastion.authz import service as authz
from bastion.authz.permissions import CredentialKind
from bastion.authz.principal import Principal
from bastion.core.clock import utcnow
from bastion.core.context import Actor
from bastion.core.errors import Unauthenticated
from bastion.identity.models import ApiKey, ServiceAccount, User, UserSession
from bastion.identity.tokens import TokenHasher, TokenKind, parse
from bastion.tenancy.models import Organization

TOUCH_INTERVAL_SECONDS = 60

Touch = Callable[[Session], None]


@dataclass(frozen=True)
class Authenticated:
    principal: Principal
    touch: Touch | None  # a coarse bookkeeping write to run after the request commits


_SESSION_QUERY = (
    select(
        UserSession.token_hash,
        UserSession.pepper_version,
        UserSession.expires_at,
        UserSession.last_seen_at,
        UserSession.idle_timeout,
        UserSession.revoked_at,
        User.id,
        User.org_id,
        User.role,
        User.status,
        User.grants_until,
        Organization.status,
    )
    .join(User, User.id == UserSession.user_id)
    .join(Organization, Organization.id == User.org_id)
)

_KEY_QUERY = (
    select(
        ApiKey.secret_hash,
        ApiKey.pepper_version,
        ApiKey.expires_at,
        ApiKey.revoked_at,
        ApiKey.last_used_at,
        ApiKey.org_id,
        ApiKey.role,
        ApiKey.user_id,
        ApiKey.service_account_id,
        User.status,
        User.role,
        User.grants_until,
        ServiceAccount.status,
        ServiceAccount.role,
        Organization.status,
    )
    .outerjoin(User, User.id == ApiKey.user_id)
    .outerjoin(ServiceAccount, ServiceAccount.id == ApiKey.service_account_id)
    .join(Organization, Organization.id == ApiKey.org_id)
)


def _rejected(
    actor: Actor, reason: str, org_id: str | None = None, resource: tuple[str, str] | None = None
) -> Unauthenticated:
    return Unauthenticated("credential is missing, invalid, revoked or expired").with_audit(
        type=EventType.AUTH_CREDENTIAL_REJECTED,
        actor=actor,
        org_id=org_id,
        outcome=Outcome.FAILURE,
        reason=reason,
        resource=resource,
    )


def authenticate(
    db: Session, token: str | None, actor: Actor, hasher: TokenHasher
) -> Authenticated:
    if not token:
        raise Unauthenticated("a bearer credential is required")
    parsed = parse(token)
    if parsed is None or parsed.kind not in (TokenKind.API_KEY, TokenKind.SESSION):
        # Unknown credential kinds are refused (fail closed); agent run tokens are
        # accepted only by run endpoints.
        raise _rejected(actor, "unknown_credential_kind")
    if parsed.kind is TokenKind.SESSION:
        return _session(db, parsed.row_id, parsed.secret, actor, hasher)
    return _api_key(db, parsed.row_id, parsed.secret, actor, hasher)


def _session(
    db: Session, session_id: str, secret: str, actor: Actor, hasher: TokenHasher
) -> Authenticated:
    row = db.execute(_SESSION_QUERY.where(UserSession.id == session_id)).first()
    now = utcnow()
    if row is None or not hasher.matches(TokenKind.SESSION, secret, row[1], row[0]):
        raise _rejected(actor, "unknown_or_wrong_secret")
    (
        _,
        _,
        expires_at,
        last_seen,
        idle,
        revoked_at,
        user_id,
        org_id,
        role,
        status,
        grants_until,
        org_status,
    ) = row
    if revoked_at is not None:
        raise _rejected(actor, "session_revoked", org_id, ("session", session_id))
    if expires_at <= now or (now - last_seen).total_seconds() > idle:
        raise _rejected(actor, "session_expired", org_id, ("session", session_id))
    if status != "active" or org_status != "active":
        raise _rejected(actor, "user_inactive", org_id, ("session", session_id))
    perms = authz.user_permissions(db, org_id, role, user_id, grants_until)
    principal = Principal(
        principal_type="user",
        id=user_id,
        org_id=org_id,
        role=role,
        credential=CredentialKind.SESSION,
        role_permissions=perms,
        user_id=user_id,
        session_id=session_id,
        credential_id=session_id,
        actor=Actor("user", user_id, actor.ip, actor.user_agent, actor.request_id),
    )
    touch = None
    if (now - last_seen).total_seconds() >= min(TOUCH_INTERVAL_SECONDS, idle / 10):
        touch = _touch_session(session_id, now)
    return Authenticated(principal, touch)


def _api_key(
    db: Session, key_id: str, secret: str, actor: Actor, hasher: TokenHasher
) -> Authenticated:
    row = db.execute(_KEY_QUERY.where(ApiKey.id == key_id)).first()
    now = utcnow()
    if row is None or not hasher.matches(TokenKind.API_KEY, secret, row[1], row[0]):
        raise _rejected(actor, "unknown_or_wrong_secret")
    (
        _,
        _,
        expires_at,
        revoked_at,
        last_used,
        org_id,
        role,
        user_id,
        sa_id,
        user_status,
        user_role,
        grants_until,
        sa_status,
        sa_role,
        org_status,
    ) = row
    resource = ("api_key", key_id)
    if revoked_at is not None and revoked_at <= now:
        raise _rejected(actor, "key_revoked", org_id, resource)
    if expires_at is not None and expires_at <= now:
        raise _rejected(actor, "key_expired", org_id, resource)
    if org_status != "active":
        raise _rejected(actor, "org_inactive", org_id, resource)
    perms = authz.permissions_of_role(db, org_id, role)
    principal_type, principal_id = "api_key", key_id
    if user_id is not None:
        if user_status != "active":
            raise _rejected(actor, "owner_inactive", org_id, resource)
        # A key never holds more than its owner holds right now.
        perms = perms & authz.user_permissions(db, org_id, user_role, user_id, grants_until)
    elif sa_id is not None:
        if sa_status != "active":
            raise _rejected(actor, "owner_inactive", org_id, resource)
        perms = perms & authz.permissions_of_role(db, org_id, sa_role)
        principal_type, principal_id = "service_account", sa_id
    principal = Principal(
        principal_type=principal_type,
        id=principal_id,
        org_id=org_id,
        role=role,
        credential=CredentialKind.API_KEY,
        role_permissions=perms,
        user_id=user_id,
        credential_id=key_id,
        actor=Actor(principal_type, principal_id, actor.ip, actor.user_agent, actor.request_id),
    )
    touch = None
    if last_used is None or (now - last_used).total_seconds() >= TOUCH_INTERVAL_SECONDS:
        touch = _touch_key(key_id, now, actor.ip)
    return Authenticated(principal, touch)


def _touch_session(session_id: str, now: datetime) -> Touch:
    def run(db: Session) -> None:
        db.execute(update(UserSession).where(UserSession.id == session_id).values(last_seen_at=now))

    return run


def _touch_key(key_id: str, now: datetime, ip: str | None) -> Touch:
    def run(db: Session) -> None:
        db.execute(
            update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=now, last_used_ip=ip)
        )

    return run

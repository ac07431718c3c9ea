"""Sign-in, sessions (idle and absolute timeouts), sign-out and session revocation."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from limits import RateLimitItem
from sqlalchemy import ColumnElement, select, update
from sqlalchemy.orm import Session

from bastion.audit import service as audit
from bastion.authz import service as authz
from bastion.core import mfa
from bastion.core.clock import utcnow
from bastion.core.config import Settings
from bastion.core.context import Actor
from bastion.core.db import org_scoped
from bastion.core.errors import NotFound, TooManyRequests, Unauthenticated
from bastion.core.events import EventType, Outcome
from bastion.core.ids import has_prefix, new_id
from bastion.core.pagination import Page, decode_id_cursor, page_of
from bastion.core.permissions import Permission
from bastion.core.principal import Principal
from bastion.core.ratelimit import RateLimiter, per_window
from bastion.identity import passwords, signin_policy
from bastion.identity.errors import SsoRequired
from bastion.identity.mfa import challenges
from bastion.identity.models import User, UserSession
from bastion.identity.networks import parse_allowlist, refuse_outside
from bastion.identity.service import normalize_email, require_user_in_org
from bastion.identity.tokens import TokenHasher, TokenKind
from bastion.tenancy import service as tenancy


@dataclass(frozen=True)
class LoginResult:
    token: str
    expires_at: datetime
    user_id: str
    session_id: str

    def __repr__(self) -> str:
        return f"LoginResult(user_id={self.user_id}, session_id={self.session_id})"


@dataclass(frozen=True)
class MfaOwed:
    """A right password, and a factor still owed: no session yet (see `mfa.challenges`)."""

    mfa_token: str
    purpose: str  # "sign_in": answer with one of `methods`; "enrol": enrol a factor first
    methods: tuple[str, ...]
    user_id: str

    def __repr__(self) -> str:
        return f"MfaOwed(user_id={self.user_id}, purpose={self.purpose})"


# How far back a successful sign-in makes an address familiar to an account.
FAMILIAR_DAYS = 30


def _tiers(amount: int, window: int) -> list[RateLimitItem]:
    """Progressive limits: `amount` failures per window, twice that per four windows,
    four times per sixteen; each failure beyond a tier waits out a longer window."""
    return [per_window(amount * 2**i, window * 4**i) for i in range(3)]


def _familiar(db: Session, user: User | None, ip: str | None) -> bool:
    """The user signed in from this address within `FAMILIAR_DAYS` (a session began there)."""
    if user is None or not ip:
        return False
    since = utcnow() - timedelta(days=FAMILIAR_DAYS)
    stmt = select(UserSession.id).where(
        UserSession.user_id == user.id, UserSession.ip == ip, UserSession.created_at > since
    )
    return db.execute(stmt.limit(1)).first() is not None


def _throttles(
    settings: Settings, email: str, ip: str | None, familiar: bool
) -> tuple[list[tuple[RateLimitItem, str]], list[tuple[RateLimitItem, str]]]:
    """(limits that refuse this attempt when exhausted, counters a failure adds to).

    - the account from this address (`pair`): always, progressive; one address guessing
      one account is stopped there;
    - the account from anywhere (`account`) and the address across accounts (`address`):
      only from an address the account has not signed in from lately. A run of failures
      on many accounts from one address (credential stuffing) or on one account from
      many addresses is refused, yet the users who sign in from that shared address
      (an office NAT) are not locked out by someone else's failures, nor a user at home
      by a distributed attack on their account (the "familiar location" of smart lockout).
    """
    n, window = settings.login_failures_per_account, settings.login_failure_window
    pair = [(item, f"login:pair:{email}|{ip or '-'}") for item in _tiers(n, window)]
    account = [(item, f"login:acct:{email}") for item in _tiers(n, window)]
    address = [(per_window(settings.login_failures_per_ip, window), f"login:ip:{ip}")] if ip else []
    counted = pair + account + address
    return (pair if familiar else counted), counted


def _scope(key: str) -> str:
    return {"pair": "account_address", "acct": "account", "ip": "address"}[key.split(":")[1]]


def login(
    db: Session,
    actor: Actor,
    *,
    email: str,
    password: str,
    hasher: TokenHasher,
    limiter: RateLimiter,
    settings: Settings,
) -> LoginResult | MfaOwed:
    normalized = normalize_email(email)
    user = db.execute(select(User).where(User.email_normalized == normalized)).scalar_one_or_none()
    org_id = user.org_id if user else None
    familiar = _familiar(db, user, actor.ip)
    enforced, counted = _throttles(settings, normalized, actor.ip, familiar)
    for item, key in enforced:
        quota = limiter.throttle_state(item, key)
        if quota.exhausted:
            raise TooManyRequests(
                "too many failed sign-in attempts; try again later", retry_after=quota.reset_after
            ).with_audit(
                type=EventType.AUTH_LOGIN_THROTTLED,
                actor=actor,
                org_id=org_id,
                outcome=Outcome.DENIED,
                resource=("user", user.id) if user else None,
                metadata={"scope": _scope(key), "familiar_address": familiar},
            )
    sso = _sso_enforced(db, normalized, user)
    if sso is not None and not (sso.break_glass and user is not None and user.role == "admin"):
        raise SsoRequired(signin_policy.start_url(settings.public_url, normalized)).with_audit(
            type=EventType.AUTH_LOGIN_FAILED,
            actor=actor,
            org_id=sso.org_id,
            outcome=Outcome.FAILURE,
            resource=("user", user.id) if user else None,
            reason="sso_required",
        )
    ok, new_hash = passwords.verify_password(user.password_hash if user else None, password)
    if not ok or user is None or user.status != "active":
        for item, key in counted:
            limiter.record_failure(item, key)
        reason = "bad_credentials" if not ok or user is None else f"user_{user.status}"
        raise Unauthenticated("invalid email or password").with_audit(
            type=EventType.AUTH_LOGIN_FAILED,
            actor=actor,
            org_id=org_id,
            outcome=Outcome.FAILURE,
            resource=("user", user.id) if user else None,
            reason=reason,
        )
    org = tenancy.find_org(db, user.org_id)
    if org is None or org.status != "active":
        raise Unauthenticated("invalid email or password")
    # Before an mfa token too: neither credential is handed out where it may not be used.
    _refuse_outside(org.ip_allowlist, user, actor)
    if new_hash:
        user.password_hash = new_hash
    owed = challenges.owed(db, user, org)
    if sso is not None and (owed is None or owed.purpose != "sign_in"):
        # Break-glass is a password and a second factor, never a password alone.
        raise SsoRequired(signin_policy.start_url(settings.public_url, normalized)).with_audit(
            type=EventType.AUTH_LOGIN_FAILED,
            actor=actor,
            org_id=user.org_id,
            outcome=Outcome.FAILURE,
            resource=("user", user.id),
            reason="sso_required",
            metadata={"break_glass": "no_second_factor"},
        )
    if owed is not None:
        token = challenges.issue(db, user, owed.purpose, hasher)
        audit.record(
            db,
            type=EventType.AUTH_MFA_CHALLENGED,
            actor=Actor("user", user.id, actor.ip, actor.user_agent, actor.request_id),
            org_id=user.org_id,
            resource=("user", user.id),
            metadata={"purpose": owed.purpose, "methods": list(owed.methods)},
        )
        return MfaOwed(token, owed.purpose, owed.methods, user.id)
    return open_session(db, actor, user, [mfa.PASSWORD], hasher=hasher, settings=settings)


def _sso_enforced(db: Session, email: str, user: User | None) -> signin_policy.SsoEnforced | None:
    enforces, break_glass = tenancy.sso_policy(db, user.org_id) if user else (False, False)
    return signin_policy.enforced_for(
        db, email, user.org_id if user else None, enforces, break_glass
    )


def open_session(
    db: Session,
    actor: Actor,
    user: User,
    amr: list[str],
    *,
    hasher: TokenHasher,
    settings: Settings,
) -> LoginResult:
    """A new session for `user` (of an active organisation), who proved who they are
    with `amr` just now: never from outside the organisation's IP allowlist, and never
    past its cap on parallel sessions (the oldest end). Every sign-in path (password
    alone, or password and a second factor) ends here."""
    org = tenancy.find_org(db, user.org_id)
    if org is None or org.status != "active":
        raise Unauthenticated("invalid email or password")
    _refuse_outside(org.ip_allowlist, user, actor)
    now = utcnow()
    idle = org.session_idle_timeout or settings.session_idle_timeout
    absolute = org.session_absolute_timeout or settings.session_absolute_timeout
    session_id = new_id("ses")
    token, digest, version = hasher.issue(TokenKind.SESSION, session_id)
    session = UserSession(
        id=session_id,
        org_id=user.org_id,
        user_id=user.id,
        token_hash=digest,
        pepper_version=version,
        idle_timeout=idle,
        expires_at=now + timedelta(seconds=absolute),
        last_seen_at=now,
        ip=actor.ip,
        user_agent=(actor.user_agent or "")[:512] or None,
        amr=amr,
        auth_time=now,
    )
    db.add(session)
    user.last_login_at = now
    db.flush()
    _enforce_cap(db, user, org.max_sessions_per_user, keep=session_id, actor=actor)
    audit.record(
        db,
        type=EventType.AUTH_LOGIN_SUCCEEDED,
        actor=Actor("user", user.id, actor.ip, actor.user_agent, actor.request_id),
        org_id=user.org_id,
        resource=("session", session_id),
        metadata={"amr": amr},
    )
    return LoginResult(token, session.expires_at, user.id, session_id)


def _refuse_outside(allowlist: list[str] | None, user: User, actor: Actor) -> None:
    """A session (or an mfa token) is a credential of the organisation: 403
    `ip_not_allowed` from outside its IP allowlist, audited."""
    refuse_outside(
        parse_allowlist(allowlist),
        user.org_id,
        Actor("user", user.id, actor.ip, actor.user_agent, actor.request_id),
        ("user", user.id),
    )


def _enforce_cap(db: Session, user: User, cap: int | None, *, keep: str, actor: Actor) -> None:
    """At most `cap` live sessions per user: past it, the oldest end (the new one stays).
    Revoking bumps the org's auth revision, so they are refused on the very next request
    on every worker."""
    if cap is None:
        return
    now = utcnow()
    live = [
        s
        for s in db.execute(
            select(UserSession)
            .where(
                UserSession.user_id == user.id,
                UserSession.revoked_at.is_(None),
                UserSession.expires_at > now,
            )
            .order_by(UserSession.created_at.desc(), UserSession.id.desc())
        ).scalars()
        if is_active(s, now) or s.id == keep
    ]
    kept = [s for s in live if s.id == keep] + [s for s in live if s.id != keep]
    ended = [s.id for s in kept[cap:]]
    if not ended:
        return
    db.execute(
        update(UserSession)
        .where(UserSession.id.in_(ended), UserSession.revoked_at.is_(None))
        .values(revoked_at=now),
        execution_options=org_scoped(user.org_id),
    )
    audit.record(
        db,
        type=EventType.SESSION_REVOKED,
        actor=Actor("user", user.id, actor.ip, actor.user_agent, actor.request_id),
        org_id=user.org_id,
        resource=("user", user.id),
        reason="session_limit",
        metadata={"count": len(ended), "session_ids": ended, "max_sessions_per_user": cap},
    )


def logout(db: Session, principal: Principal) -> None:
    if principal.session_id is None:
        return
    db.execute(
        update(UserSession)
        .where(UserSession.id == principal.session_id, UserSession.revoked_at.is_(None))
        .values(revoked_at=utcnow()),
        execution_options=org_scoped(principal.org_id),
    )
    audit.record(
        db,
        type=EventType.AUTH_LOGOUT,
        actor=principal.actor,
        org_id=principal.org_id,
        resource=("session", principal.session_id),
    )


def is_active(session: UserSession, now: datetime) -> bool:
    return (
        session.revoked_at is None
        and session.expires_at > now
        and (now - session.last_seen_at).total_seconds() <= session.idle_timeout
    )


def list_sessions(
    db: Session, principal: Principal, *, limit: int, cursor: str | None
) -> Page[UserSession]:
    if principal.user_id is None:
        return Page([], None)
    return _live_page(db, UserSession.user_id == principal.user_id, limit=limit, cursor=cursor)


def _live_page(
    db: Session, *which: ColumnElement[bool], limit: int, cursor: str | None
) -> Page[UserSession]:
    """The live sessions `which` selects, newest first, one page."""
    now = utcnow()
    stmt = select(UserSession).where(
        *which, UserSession.revoked_at.is_(None), UserSession.expires_at > now
    )
    after = decode_id_cursor(cursor)
    if after:
        stmt = stmt.where(UserSession.id < after)
    rows = [
        s for s in db.execute(stmt.order_by(UserSession.id.desc())).scalars() if is_active(s, now)
    ]
    return page_of(rows[: limit + 1], limit, key=lambda s: s.id)


def revoke_session(db: Session, principal: Principal, session_id: str) -> None:
    if principal.user_id is None or not has_prefix(session_id, "ses"):
        raise NotFound("session not found")
    session = db.execute(
        select(UserSession).where(
            UserSession.id == session_id, UserSession.user_id == principal.user_id
        )
    ).scalar_one_or_none()
    if session is None:
        raise NotFound("session not found")
    if session.revoked_at is None:
        session.revoked_at = utcnow()
        audit.record(
            db,
            type=EventType.SESSION_REVOKED,
            actor=principal.actor,
            org_id=principal.org_id,
            resource=("session", session_id),
        )


def revoke_other_sessions(db: Session, principal: Principal) -> int:
    if principal.user_id is None:
        return 0
    result = db.execute(
        update(UserSession)
        .where(
            UserSession.user_id == principal.user_id,
            UserSession.id != (principal.session_id or ""),
            UserSession.revoked_at.is_(None),
        )
        .values(revoked_at=utcnow()),
        execution_options=org_scoped(principal.org_id),
    )
    count = int(getattr(result, "rowcount", 0) or 0)
    audit.record(
        db,
        type=EventType.SESSION_REVOKED,
        actor=principal.actor,
        org_id=principal.org_id,
        resource=("user", principal.user_id),
        metadata={"all_but_current": True, "count": count},
    )
    return count


# --- an administrator's view of another user's sessions ---------------------------------


def list_user_sessions(
    db: Session, principal: Principal, org_id: str, user_id: str, *, limit: int, cursor: str | None
) -> Page[UserSession]:
    """A user's live sessions, newest first: for whoever may manage users (addresses
    and devices are not for every reader of the user list), or the user."""
    principal.require_org(org_id)
    if user_id != principal.user_id:
        principal.require(Permission.USERS_MANAGE)
    user = require_user_in_org(db, org_id, user_id)
    which = (UserSession.org_id == org_id, UserSession.user_id == user.id)
    return _live_page(db, *which, limit=limit, cursor=cursor)


def end_org_sessions(db: Session, principal: Principal, org_id: str) -> int:
    """End every session of every user of the organisation now but the caller's own
    (`org:manage`: an incident response; API keys are not touched). The count ended."""
    principal.require_org(org_id)
    principal.require(Permission.ORG_MANAGE)
    result = db.execute(
        update(UserSession)
        .where(
            UserSession.org_id == org_id,
            UserSession.id != (principal.session_id or ""),
            UserSession.revoked_at.is_(None),
        )
        .values(revoked_at=utcnow()),
        execution_options=org_scoped(org_id),
    )
    count = int(getattr(result, "rowcount", 0) or 0)
    audit.record(
        db,
        type=EventType.SESSION_REVOKED,
        actor=principal.actor,
        org_id=org_id,
        resource=("org", org_id),
        reason="ended_by_admin",
        metadata={"count": count, "ended_by_admin": True, "everyone": True},
    )
    return count


def end_user_sessions(
    db: Session, principal: Principal, org_id: str, user_id: str, session_id: str | None = None
) -> int:
    """End every session of a user now, or the one named (`users:manage`, and the user
    must not outrank the caller). Their API keys are not touched: suspend the user to
    stop those too. An unknown session, or another user's, is not found."""
    principal.require_org(org_id)
    principal.require(Permission.USERS_MANAGE)
    user = require_user_in_org(db, org_id, user_id)
    if user.id != principal.user_id:
        held = authz.user_permissions(db, org_id, user.role, user.id, user.grants_until)
        authz.ensure_outranks(principal, held, "this user")
    which = [UserSession.org_id == org_id, UserSession.user_id == user.id]
    if session_id is not None:
        if not has_prefix(session_id, "ses"):
            raise NotFound("session not found")
        found = db.execute(select(UserSession.id).where(UserSession.id == session_id, *which))
        if found.scalar_one_or_none() is None:
            raise NotFound("session not found")
        which.append(UserSession.id == session_id)
    result = db.execute(
        update(UserSession)
        .where(*which, UserSession.revoked_at.is_(None))
        .values(revoked_at=utcnow()),
        execution_options=org_scoped(org_id),
    )
    count = int(getattr(result, "rowcount", 0) or 0)
    audit.record(
        db,
        type=EventType.SESSION_REVOKED,
        actor=principal.actor,
        org_id=org_id,
        resource=("session", session_id) if session_id else ("user", user.id),
        reason="ended_by_admin",
        metadata={"count": count, "ended_by_admin": True, "user_id": user.id},
    )
    return count

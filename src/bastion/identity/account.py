"""A person's own password: change it (signed in), or reset it with a link sent by email.

- Change: the current password is verified (a wrong one is 401 and counts like a failed
  sign-in), the new one obeys the organisation's policy, and every other session of
  the user ends; the current one stays. Pending mfa tokens (earned with the old
  password) are spent.
- Reset request: the same 202 whatever the email, and the same work either way (one
  lookup, one audit write), so neither the answer nor its time tells whether an account
  exists. Limited per address and per email (429). For an active user, a one-time
  token (`bsr_…`, stored as a keyed hash under its own purpose, 30 minutes) is created
  and a link to `BASTION_PUBLIC_URL` is handed back for the caller to send *after*
  the transaction commits (see `core.mail`).
- Reset confirm: the token is spent by compare-and-set (one use), the new password
  obeys the policy, every session of the user ends, and so does every pending mfa
  token. No session is created: the user signs in again, with their second factor if
  they have one (a reset never bypasses MFA), and factors are left untouched.

No password or token is ever put in an audit event or a log line.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import quote

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bastion.audit import service as audit
from bastion.core.clock import utcnow
from bastion.core.context import Actor
from bastion.core.db import org_scoped
from bastion.core.errors import NotFound, TooManyRequests, Unauthenticated
from bastion.core.events import EventType, Outcome
from bastion.core.ids import new_id
from bastion.core.mail import Mail
from bastion.core.principal import Principal
from bastion.core.ratelimit import RateLimiter, per_window
from bastion.identity import passwords
from bastion.identity.mfa import challenges
from bastion.identity.models import PasswordReset, User, UserSession
from bastion.identity.service import check_new_password, normalize_email
from bastion.identity.tokens import TokenHasher, TokenKind, parse
from bastion.tenancy import service as tenancy

RESET_TTL_SECONDS = 30 * 60
RESET_PATH = "/reset-password"
# Reset requests: per address and per email (known or not), in a 15-minute window.
RESETS_PER_ADDRESS = 10
RESETS_PER_EMAIL = 3
RESET_WINDOW = 15 * 60
_INVALID = "reset token is invalid, used or expired"


@dataclass(frozen=True)
class ResetRequested:
    """What a reset request leaves to do once it commits: the mail to send, if any."""

    mail: Mail | None

    def __repr__(self) -> str:
        return f"ResetRequested(mail={'yes' if self.mail else 'no'})"


def _actor_for(user: User, actor: Actor) -> Actor:
    return Actor("user", user.id, actor.ip, actor.user_agent, actor.request_id)


def _end_sessions(db: Session, user: User, *, keep: str | None) -> int:
    stmt = update(UserSession).where(
        UserSession.user_id == user.id, UserSession.revoked_at.is_(None)
    )
    if keep is not None:
        stmt = stmt.where(UserSession.id != keep)
    result = db.execute(stmt.values(revoked_at=utcnow()), execution_options=org_scoped(user.org_id))
    return int(getattr(result, "rowcount", 0) or 0)


# Wrong current passwords per user: a stolen session cannot guess its way to the password.
CHANGE_FAILURES = 5


def change_password(
    db: Session,
    principal: Principal,
    *,
    current_password: str,
    new_password: str,
    limiter: RateLimiter,
) -> int:
    """Returns how many other sessions ended."""
    user = (
        db.execute(
            select(User).where(User.id == principal.user_id, User.org_id == principal.org_id)
        ).scalar_one_or_none()
        if principal.user_id is not None and principal.session_id is not None
        else None
    )
    if user is None:
        # API keys and run tokens have no password to change: only a person, signed in.
        raise Unauthenticated("sign in with a session to change your password")
    failures = (per_window(CHANGE_FAILURES, RESET_WINDOW), f"pwchange:{user.id}")
    quota = limiter.throttle_state(*failures)
    if quota.exhausted:
        raise TooManyRequests(
            "too many wrong passwords; try again later", retry_after=quota.reset_after
        )
    ok, _ = passwords.verify_password(user.password_hash, current_password)
    if not ok:
        limiter.record_failure(*failures)
        raise Unauthenticated("the current password is wrong").with_audit(
            type=EventType.AUTH_PASSWORD_CHANGED,
            actor=principal.actor,
            org_id=user.org_id,
            outcome=Outcome.FAILURE,
            resource=("user", user.id),
            reason="wrong_current_password",
        )
    check_new_password(
        db, user.org_id, new_password, email=user.email, name=user.name, field="new_password"
    )
    user.password_hash = passwords.hash_password(new_password)
    user.updated_at = utcnow()
    db.flush()
    ended = _end_sessions(db, user, keep=principal.session_id)
    challenges.void_for_user(db, user.id)
    audit.record(
        db,
        type=EventType.AUTH_PASSWORD_CHANGED,
        actor=principal.actor,
        org_id=user.org_id,
        resource=("user", user.id),
        metadata={"other_sessions_ended": ended},
    )
    return ended


def _throttle(limiter: RateLimiter, email: str, ip: str | None) -> None:
    window = per_window(RESETS_PER_ADDRESS, RESET_WINDOW)
    checks = [(per_window(RESETS_PER_EMAIL, RESET_WINDOW), f"pwreset:email:{email}")]
    if ip:
        checks.append((window, f"pwreset:ip:{ip}"))
    for item, key in checks:
        allowed, quota = limiter.take(item, key)
        if not allowed:
            raise TooManyRequests(
                "too many password-reset requests; try again later",
                retry_after=quota.reset_after,
            )


def request_reset(
    db: Session,
    actor: Actor,
    *,
    email: str,
    hasher: TokenHasher,
    limiter: RateLimiter,
    public_url: str,
) -> ResetRequested:
    normalized = normalize_email(email)
    _throttle(limiter, normalized, actor.ip)
    user = db.execute(select(User).where(User.email_normalized == normalized)).scalar_one_or_none()
    org = tenancy.find_org(db, user.org_id) if user is not None else None
    if user is None or user.status != "active" or org is None or org.status != "active":
        # Recorded in the instance's trail, without the address typed (it may be anyone's).
        audit.record(
            db,
            type=EventType.AUTH_PASSWORD_RESET_REQUESTED,
            actor=actor,
            org_id=None,
            outcome=Outcome.FAILURE,
            reason="no_active_account",
        )
        return ResetRequested(None)
    row_id = new_id("pwr")
    token, digest, version = hasher.issue(TokenKind.PASSWORD_RESET, row_id)
    db.add(
        PasswordReset(
            id=row_id,
            org_id=user.org_id,
            user_id=user.id,
            token_hash=digest,
            pepper_version=version,
            expires_at=utcnow() + timedelta(seconds=RESET_TTL_SECONDS),
        )
    )
    db.flush()
    audit.record(
        db,
        type=EventType.AUTH_PASSWORD_RESET_REQUESTED,
        actor=actor,
        org_id=user.org_id,
        resource=("user", user.id),
        metadata={"reset_id": row_id},
    )
    link = f"{public_url}{RESET_PATH}?token={quote(token, safe='')}"
    body = (
        "Someone asked to reset the password of your Bastion account.\n\n"
        f"To choose a new password, open this link within 30 minutes:\n\n{link}\n\n"
        "The link works once. If you did not ask for it, ignore this message: your "
        "password stays as it is.\n"
    )
    return ResetRequested(Mail(to=user.email, subject="Reset your Bastion password", body=body))


def confirm_reset(
    db: Session, actor: Actor, *, token: str, password: str, hasher: TokenHasher
) -> User:
    parsed = parse(token)
    row = None
    if parsed is not None and parsed.kind is TokenKind.PASSWORD_RESET:
        row = db.get(PasswordReset, parsed.row_id)
    now = utcnow()
    valid = (
        row is not None
        and parsed is not None
        and hasher.matches(
            TokenKind.PASSWORD_RESET, parsed.secret, row.pepper_version, row.token_hash
        )
        and row.used_at is None
        and row.expires_at > now
    )
    if not valid or row is None:
        raise Unauthenticated(_INVALID).with_audit(
            type=EventType.AUTH_PASSWORD_RESET_COMPLETED,
            actor=actor,
            org_id=row.org_id if row is not None else None,
            outcome=Outcome.FAILURE,
            resource=("user", row.user_id) if row is not None else None,
            reason="invalid_token",
        )
    user = db.get(User, row.user_id)
    if user is None or user.status != "active":
        raise Unauthenticated(_INVALID)
    check_new_password(db, user.org_id, password, email=user.email, name=user.name)
    # Spent by a compare-and-set: two uses at once both read it unused; one wins.
    spent = db.execute(
        update(PasswordReset)
        .where(PasswordReset.id == row.id, PasswordReset.used_at.is_(None))
        .values(used_at=now)
    )
    if getattr(spent, "rowcount", 0) != 1:
        raise Unauthenticated(_INVALID)
    # Any other link still outstanding for this user dies with this one.
    db.execute(
        update(PasswordReset)
        .where(PasswordReset.user_id == user.id, PasswordReset.used_at.is_(None))
        .values(used_at=now)
    )
    user.password_hash = passwords.hash_password(password)
    user.updated_at = now
    db.flush()
    ended = _end_sessions(db, user, keep=None)
    challenges.void_for_user(db, user.id)
    audit.record(
        db,
        type=EventType.AUTH_PASSWORD_RESET_COMPLETED,
        actor=_actor_for(user, actor),
        org_id=user.org_id,
        resource=("user", user.id),
        metadata={"reset_id": row.id, "sessions_ended": ended},
    )
    return user


def set_password_by_operator(
    db: Session, actor: Actor, org_id: str, user_id: str, *, password: str
) -> int:
    """The instance operator (the CLI at the host) sets a user's password: for an admin
    locked out of their account. The password obeys the organisation's policy, every
    session of the user ends, and so does every outstanding reset link and pending mfa
    token; factors are left untouched (`reset_mfa` is separate). Audited as
    `auth.password_set` by the operator. Returns how many sessions ended."""
    user = db.execute(
        select(User).where(User.org_id == org_id, User.id == user_id)
    ).scalar_one_or_none()
    if user is None:
        raise NotFound("user not found")
    check_new_password(db, org_id, password, email=user.email, name=user.name)
    now = utcnow()
    db.execute(
        update(PasswordReset)
        .where(PasswordReset.user_id == user.id, PasswordReset.used_at.is_(None))
        .values(used_at=now)
    )
    user.password_hash = passwords.hash_password(password)
    user.updated_at = now
    db.flush()
    ended = _end_sessions(db, user, keep=None)
    challenges.void_for_user(db, user.id)
    audit.record(
        db,
        type=EventType.AUTH_PASSWORD_SET,
        actor=actor,
        org_id=org_id,
        resource=("user", user.id),
        metadata={"by": "operator", "sessions_ended": ended},
    )
    return ended

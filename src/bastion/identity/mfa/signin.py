"""Finishing a sign-in with a second factor (`POST /v1/auth/mfa`) and step-up
(`POST /v1/auth/step-up`, RFC 9470).

Wrong codes are throttled twice: five per `mfa_token` (counted in the database after
each refusal, so on every worker, and each try also takes one of five from the rate
limiter before the code is checked, so tries sent at once cannot outrun the count), and
per person across tokens (`FAILURES_PER_USER` in `WINDOW_SECONDS`, progressive), so
signing in again with the password does not buy fresh guesses at a six-digit code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from limits import RateLimitItem
from sqlalchemy import update
from sqlalchemy.orm import Session

from bastion.audit import service as audit
from bastion.core import mfa
from bastion.core.clock import utcnow
from bastion.core.config import Settings
from bastion.core.context import Actor
from bastion.core.db import org_scoped
from bastion.core.errors import (
    Forbidden,
    InvalidInput,
    MfaEnrolmentRequired,
    TooManyRequests,
    Unauthenticated,
)
from bastion.core.events import EventType, Outcome
from bastion.core.permissions import CredentialKind
from bastion.core.principal import Principal
from bastion.core.ratelimit import RateLimiter, per_window
from bastion.identity import passwords
from bastion.identity.mfa import challenges, factors, passkeys, webauthn_challenges
from bastion.identity.models import User, UserSession
from bastion.identity.sessions import LoginResult, open_session
from bastion.identity.tokens import TokenHasher
from bastion.secrets.vault import Vault
from bastion.tenancy import service as tenancy

FAILURES_PER_USER = 10
WINDOW_SECONDS = 900
PASSWORD = "password"  # noqa: S105 - the step-up method name
_PER_TOKEN = per_window(challenges.MAX_ATTEMPTS, challenges.TTL_SECONDS)


def _tiers() -> list[RateLimitItem]:
    return [per_window(FAILURES_PER_USER * 2**i, WINDOW_SECONDS * 4**i) for i in range(3)]


def _throttle(limiter: RateLimiter, user_id: str, actor: Actor, org_id: str) -> None:
    for item in _tiers():
        quota = limiter.throttle_state(item, f"mfa:user:{user_id}")
        if quota.exhausted:
            raise TooManyRequests(
                "too many wrong codes; try again later", retry_after=quota.reset_after
            ).with_audit(
                type=EventType.AUTH_MFA_FAILED,
                actor=actor,
                org_id=org_id,
                outcome=Outcome.DENIED,
                reason="throttled",
                resource=("user", user_id),
            )


def _count(limiter: RateLimiter, user_id: str) -> None:
    for item in _tiers():
        limiter.record_failure(item, f"mfa:user:{user_id}")


def complete(
    db: Session,
    vault: Vault,
    actor: Actor,
    *,
    mfa_token: str,
    method: str,
    code: str | None,
    hasher: TokenHasher,
    limiter: RateLimiter,
    settings: Settings,
    credential: Mapping[str, Any] | None = None,
) -> LoginResult:
    """Redeem a sign-in `mfa_token` with a factor's code (or, for WebAuthn, an
    assertion): a session whose `amr` names the password and the factor."""
    if method == passkeys.WEBAUTHN and credential is None:
        raise InvalidInput.field("credential", "is required for this method")
    if method != passkeys.WEBAUTHN and not code:
        raise InvalidInput.field("code", "is required for this method")
    challenge = challenges.load(db, mfa_token, challenges.SIGN_IN, hasher, actor)
    user = db.get(User, challenge.user_id)
    org = tenancy.find_org(db, challenge.org_id)
    if user is None or user.status != "active" or org is None or org.status != "active":
        raise challenges.invalid()
    who = Actor("user", user.id, actor.ip, actor.user_agent, actor.request_id)
    _throttle(limiter, user.id, who, user.org_id)
    # Each try takes one of the token's attempts before the code is checked, atomically
    # (shared through Redis): tries sent at once cannot all pass the database count.
    allowed, _ = limiter.take(_PER_TOKEN, f"mfa:token:{challenge.id}")
    if not allowed:
        raise challenges.refused(who, "mfa_token_spent", challenge)
    if method == passkeys.WEBAUTHN:
        rp = passkeys.RelyingParty.of(settings)
        result = passkeys.verify(
            db, rp, user, org, credential,
            purpose=webauthn_challenges.SIGN_IN, bound_to=challenge.id, actor=who,
        )  # fmt: skip
    else:
        result = factors.verify(db, vault, hasher, user, org, method, code or "", who)
    if not result.ok:
        _count(limiter, user.id)
        error = (
            Unauthenticated("the code is wrong, expired or was already used")
            .with_audit(
                type=EventType.AUTH_MFA_FAILED,
                actor=who,
                org_id=user.org_id,
                outcome=Outcome.FAILURE,
                reason=result.reason,
                resource=("user", user.id),
                metadata={"method": method, "attempt": challenge.attempts + 1},
            )
            .with_write(challenges.count_failure(challenge.id))
        )
        for write in result.on_failure:
            error.with_write(write)
        raise error
    challenge.used_at = utcnow()
    amr = mfa.merged([mfa.PASSWORD], result.amr)
    return open_session(db, actor, user, amr, hasher=hasher, settings=settings)


@dataclass(frozen=True)
class SteppedUp:
    auth_time: datetime
    amr: list[str]


def step_up(
    db: Session,
    vault: Vault,
    principal: Principal,
    *,
    method: str,
    code: str | None,
    password: str | None,
    hasher: TokenHasher,
    limiter: RateLimiter,
    credential: Mapping[str, Any] | None = None,
    settings: Settings | None = None,
) -> SteppedUp:
    """Verify the person again and move their session's `auth_time` to now (adding the
    method to its `amr`). A person with a factor steps up with a factor (a TOTP code, a
    recovery code or a WebAuthn assertion); a person without one, where their
    organisation does not require one, with their password."""
    if principal.credential is not CredentialKind.SESSION or principal.session_id is None:
        raise Forbidden("step-up applies to people signed in with a session")
    user = db.get(User, principal.user_id)
    org = tenancy.find_org(db, principal.org_id)
    if user is None or org is None:
        raise Unauthenticated("credential is missing, invalid, revoked or expired")
    actor = principal.actor
    _throttle(limiter, user.id, actor, user.org_id)
    kinds = challenges.active_kinds(db, user.id)
    if kinds:
        if method == PASSWORD:
            raise InvalidInput.field("method", "a person with a second factor steps up with it")
        result = _verify_factor(
            db, vault, hasher, user, org, principal, method, code, credential, settings
        )
        amr, reason, on_failure = result.amr, result.reason, result.on_failure
    else:
        if mfa.required(org.mfa_policy, user.role):
            raise MfaEnrolmentRequired("enrol a second factor first")
        if method != PASSWORD:
            raise InvalidInput.field("method", "without a second factor, step up with 'password'")
        if not password:
            raise InvalidInput.field("password", "is required for this method")
        ok, _ = passwords.verify_password(user.password_hash, password)
        amr, reason, on_failure = ((mfa.PASSWORD,) if ok else ()), "wrong_password", ()
    if not amr:
        _count(limiter, user.id)
        error = Unauthenticated("the code or password is wrong, or was already used").with_audit(
            type=EventType.AUTH_STEP_UP_FAILED,
            actor=actor,
            org_id=user.org_id,
            outcome=Outcome.FAILURE,
            reason=reason,
            resource=("session", principal.session_id),
            metadata={"method": method},
        )
        for write in on_failure:
            error.with_write(write)
        raise error
    now = utcnow()
    merged = mfa.merged(principal.amr or [mfa.PASSWORD], amr)
    # Not a bookkeeping column: the auth revision moves, so every worker's cached
    # credential is read again with the new `auth_time` on its next request.
    db.execute(
        update(UserSession)
        .where(UserSession.id == principal.session_id, UserSession.user_id == user.id)
        .values(auth_time=now, amr=merged),
        execution_options=org_scoped(user.org_id),
    )
    audit.record(
        db,
        type=EventType.AUTH_STEP_UP_SUCCEEDED,
        actor=actor,
        org_id=user.org_id,
        resource=("session", principal.session_id),
        metadata={"method": method, "amr": merged},
    )
    return SteppedUp(now, merged)


def _verify_factor(
    db: Session,
    vault: Vault,
    hasher: TokenHasher,
    user: User,
    org: mfa.Settings,
    principal: Principal,
    method: str,
    code: str | None,
    credential: Mapping[str, Any] | None,
    settings: Settings | None,
) -> factors.Verified:
    """A step-up's factor: a WebAuthn assertion answering this session's options, or a
    code."""
    if method == passkeys.WEBAUTHN and settings is not None:
        if credential is None:
            raise InvalidInput.field("credential", "is required for this method")
        return passkeys.verify(
            db, passkeys.RelyingParty.of(settings), user, org, credential,
            purpose=webauthn_challenges.STEP_UP, bound_to=principal.session_id,
            actor=principal.actor,
        )  # fmt: skip
    if not code:
        raise InvalidInput.field("code", "is required for this method")
    return factors.verify(db, vault, hasher, user, org, method, code, principal.actor)

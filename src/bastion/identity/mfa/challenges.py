"""`mfa_token`s (`bsm_mfc_…`): what a right password earns when a factor is still owed.

    purpose "sign_in"  redeemed once, with a factor, at `POST /v1/auth/mfa`
    purpose "enrol"    the bearer of the `/v1/me/mfa…` enrolment endpoints, and of
                       nothing else (every other route refuses the `bsm_` kind); used
                       up when a factor is confirmed

An mfa token is a credential of the person's organisation: used from outside the
organisation's IP allowlist it is refused (403 `ip_not_allowed`), like every other.
Each lives `TTL_SECONDS` and dies after `MAX_ATTEMPTS` wrong codes. Only its keyed
hash is stored (purpose "bsm"); the row is read `FOR UPDATE`, so two redemptions take
turns. A wrong code is counted by a write attached to the refusal, which runs after the
failed request's rollback (`BastionError.with_write`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from bastion.core import mfa
from bastion.core.clock import utcnow
from bastion.core.context import Actor
from bastion.core.errors import Unauthenticated
from bastion.core.events import EventType, Outcome
from bastion.core.ids import new_id
from bastion.core.permissions import CredentialKind
from bastion.core.principal import Principal
from bastion.identity.models import MfaChallenge, MfaFactor, RecoveryCode, User
from bastion.identity.networks import parse_allowlist, refuse_outside
from bastion.identity.tokens import TokenHasher, TokenKind, parse
from bastion.tenancy import service as tenancy

TTL_SECONDS = 300
MAX_ATTEMPTS = 5
SIGN_IN = "sign_in"
ENROL = "enrol"
RECOVERY_CODE = "recovery_code"


@dataclass(frozen=True)
class Owed:
    """What a person whose password was right still owes before a session."""

    purpose: str  # SIGN_IN (a factor) or ENROL (to enrol one first)
    methods: tuple[str, ...]  # for SIGN_IN: what they may answer with


def active_kinds(db: Session, user_id: str) -> list[str]:
    stmt = select(MfaFactor.kind).where(MfaFactor.user_id == user_id, MfaFactor.status == "active")
    return sorted(set(db.execute(stmt).scalars()))


def recovery_codes_left(db: Session, user_id: str) -> int:
    stmt = select(func.count()).where(
        RecoveryCode.user_id == user_id, RecoveryCode.used_at.is_(None)
    )
    return int(db.execute(stmt).scalar_one())


def owed(db: Session, user: User, org: mfa.Settings) -> Owed | None:
    """None: a password is enough. A person with a confirmed factor is always asked for
    it; one whose organisation requires a factor and who has none must enrol first."""
    kinds = active_kinds(db, user.id)
    if kinds:
        methods = [k for k in kinds if k in mfa.allowed(org.mfa_methods)]
        if recovery_codes_left(db, user.id):
            methods.append(RECOVERY_CODE)
        return Owed(SIGN_IN, tuple(methods))
    if mfa.required(org.mfa_policy, user.role):
        return Owed(ENROL, ())
    return None


def issue(db: Session, user: User, purpose: str, hasher: TokenHasher) -> str:
    """A new mfa token for `user` (shown once)."""
    challenge_id = new_id("mfc")
    token, digest, version = hasher.issue(TokenKind.MFA, challenge_id)
    db.add(
        MfaChallenge(
            id=challenge_id,
            org_id=user.org_id,
            user_id=user.id,
            purpose=purpose,
            token_hash=digest,
            pepper_version=version,
            attempts=0,
            expires_at=utcnow() + timedelta(seconds=TTL_SECONDS),
        )
    )
    return token


def invalid() -> Unauthenticated:
    """The one answer for an mfa token that is unknown, wrong, expired, used or spent."""
    return Unauthenticated("the mfa_token is invalid, expired or used up; sign in again")


def refused(actor: Actor, reason: str, row: MfaChallenge | None = None) -> Unauthenticated:
    """`invalid()`, audited (`auth.mfa_failed`) with why: in the person's organisation
    when the token names one, else in the instance chain."""
    return invalid().with_audit(
        type=EventType.AUTH_MFA_FAILED,
        actor=actor,
        org_id=row.org_id if row is not None else None,
        outcome=Outcome.FAILURE,
        reason=reason,
        resource=("user", row.user_id) if row is not None else None,
        metadata={"stage": "mfa_token"},
    )


def load(
    db: Session,
    token: str,
    purpose: str,
    hasher: TokenHasher,
    actor: Actor,
    *,
    lock: bool = True,
) -> MfaChallenge:
    """The live challenge `token` names, locked for this transaction (unless only read
    to authenticate an enrolment request). Raises `invalid()`, audited; or 403
    `ip_not_allowed` from outside the organisation's IP allowlist."""
    parsed = parse(token)
    if parsed is None or parsed.kind is not TokenKind.MFA:
        raise refused(actor, "malformed_mfa_token")
    stmt = select(MfaChallenge).where(MfaChallenge.id == parsed.row_id)
    row = db.execute(stmt.with_for_update() if lock else stmt).scalar_one_or_none()
    if row is None or not hasher.matches(
        TokenKind.MFA, parsed.secret, row.pepper_version, row.token_hash
    ):
        raise refused(actor, "unknown_or_wrong_mfa_token")
    if row.purpose != purpose:
        raise refused(actor, f"mfa_token_not_for_{purpose}", row)
    if row.used_at is not None:
        raise refused(actor, "mfa_token_used", row)
    if row.expires_at <= utcnow():
        raise refused(actor, "mfa_token_expired", row)
    if row.attempts >= MAX_ATTEMPTS:
        raise refused(actor, "mfa_token_spent", row)
    refuse_outside(
        parse_allowlist(tenancy.ip_allowlist(db, row.org_id)),
        row.org_id,
        Actor("user", row.user_id, actor.ip, actor.user_agent, actor.request_id),
        ("mfa_token", row.id),
    )
    return row


def count_failure(challenge_id: str) -> Callable[[Session], None]:
    """A write for a refusal: one more wrong code against the challenge."""

    def run(db: Session) -> None:
        db.execute(
            update(MfaChallenge)
            .where(MfaChallenge.id == challenge_id)
            .values(attempts=MfaChallenge.attempts + 1)
        )

    return run


def enrolment_principal(db: Session, token: str, actor: Actor, hasher: TokenHasher) -> Principal:
    """The person an enrolment mfa token speaks for: no permission at all, accepted by
    the enrolment endpoints alone. Raises `invalid()`."""
    row = load(db, token, ENROL, hasher, actor, lock=False)
    user = db.get(User, row.user_id)
    if user is None or user.status != "active" or user.org_id != row.org_id:
        raise invalid()
    return Principal(
        principal_type="user",
        id=user.id,
        org_id=user.org_id,
        role=user.role,
        credential=CredentialKind.MFA_ENROLMENT,
        role_permissions=frozenset(),
        user_id=user.id,
        credential_id=row.id,
        actor=Actor("user", user.id, actor.ip, actor.user_agent, actor.request_id),
        mfa_pending=True,
    )


def void_for_user(db: Session, user_id: str) -> int:
    """Spend every unused mfa token of a person (their password changed: a token earned
    with the old one must not finish a sign-in). Returns how many."""
    result = db.execute(
        update(MfaChallenge)
        .where(MfaChallenge.user_id == user_id, MfaChallenge.used_at.is_(None))
        .values(used_at=utcnow())
    )
    return int(getattr(result, "rowcount", 0) or 0)


def use_up(db: Session, challenge_id: str) -> None:
    db.execute(
        update(MfaChallenge)
        .where(MfaChallenge.id == challenge_id, MfaChallenge.used_at.is_(None))
        .values(used_at=utcnow())
    )

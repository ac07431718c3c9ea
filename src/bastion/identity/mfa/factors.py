"""A person's factors and recovery codes: enrol, confirm, list, delete, reset, and the
verification of a code that sign-in and step-up share.

A TOTP factor is `pending` until a code from the app confirms it; its secret is sealed
in the vault and shown only in the enrolment answer. The first confirmed factor comes
with ten recovery codes (shown once, stored as keyed hashes, each usable once); later
factors come with none (`[]`): the set is renewed only on request, with step-up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from bastion.audit import service as audit
from bastion.core import mfa
from bastion.core.clock import utcnow
from bastion.core.context import Actor
from bastion.core.crypto import random_base32
from bastion.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from bastion.core.events import EventType, Outcome
from bastion.core.ids import has_prefix, new_id
from bastion.core.permissions import CredentialKind
from bastion.core.principal import Principal
from bastion.identity.mfa import challenges, store, totp
from bastion.identity.models import MfaFactor, RecoveryCode, User
from bastion.identity.tokens import TokenHasher
from bastion.secrets.vault import Vault
from bastion.tenancy import service as tenancy

TOTP = "totp"
RECOVERY_CODES = 10
RECOVERY_PURPOSE = "recovery_code"
_CODE_GROUPS = 3  # XXXX-XXXX-XXXX: 60 random bits


@dataclass(frozen=True)
class Enrolment:
    factor_id: str
    secret: str = field(repr=False)
    otpauth_uri: str = field(repr=False)


@dataclass(frozen=True)
class Verified:
    """The outcome of checking a code: `amr` values on success, else why not (and the
    writes a refusal still owes after its rollback: a WebAuthn challenge is used up)."""

    amr: tuple[str, ...] = ()
    reason: str = ""  # wrong_code | replayed | method_not_allowed | (WebAuthn) …
    on_failure: tuple[Callable[[Session], None], ...] = ()

    @property
    def ok(self) -> bool:
        return bool(self.amr)


# --- who may manage factors ----------------------------------------------------------


def person(principal: Principal) -> str:
    """Factors are managed by the person, signed in (or holding an enrolment token);
    never by an API key, a service account or an agent run."""
    if principal.user_id is None or principal.credential not in (
        CredentialKind.SESSION,
        CredentialKind.MFA_ENROLMENT,
    ):
        raise Forbidden("second factors are managed by the person, signed in with a session")
    return principal.user_id


def _factor(db: Session, principal: Principal, factor_id: str) -> MfaFactor:
    user_id = person(principal)
    if not has_prefix(factor_id, "mfa"):
        raise NotFound("factor not found")
    factor = db.execute(
        select(MfaFactor).where(
            MfaFactor.id == factor_id,
            MfaFactor.org_id == principal.org_id,
            MfaFactor.user_id == user_id,
        )
    ).scalar_one_or_none()
    if factor is None:
        raise NotFound("factor not found")
    return factor


def active_factors(db: Session, org_id: str, user_id: str) -> list[MfaFactor]:
    stmt = select(MfaFactor).where(
        MfaFactor.org_id == org_id, MfaFactor.user_id == user_id, MfaFactor.status == "active"
    )
    return list(db.execute(stmt.order_by(MfaFactor.id)).scalars())


# --- TOTP enrolment -------------------------------------------------------------------


def start_totp(db: Session, vault: Vault, principal: Principal, *, name: str) -> Enrolment:
    """A pending TOTP factor with a new secret (sealed); earlier pending ones of the
    person are discarded. A session needs a recent verification (step-up)."""
    user_id = person(principal)
    org = tenancy.find_org(db, principal.org_id)
    if org is None or TOTP not in mfa.allowed(org.mfa_methods):
        raise Forbidden("the organisation does not allow TOTP factors")
    user = db.get(User, user_id)
    if user is None:
        raise NotFound("user not found")
    # A stolen session must not plant its own authenticator (and keep signing in, or
    # lock the owner out): a session adds a factor only within the step-up window. An
    # enrolment token is minutes old and proves the password.
    if principal.credential is CredentialKind.SESSION:
        principal.require_recent_auth("mfa.factor_add")
    pending = db.execute(
        select(MfaFactor).where(
            MfaFactor.org_id == principal.org_id,
            MfaFactor.user_id == user_id,
            MfaFactor.status == "pending",
        )
    ).scalars()
    store.destroy(db, list(pending))
    secret = totp.new_secret()
    factor_id = new_id("mfa")
    secret_id = store.seal(db, vault, principal.org_id, factor_id, secret)
    db.add(
        MfaFactor(
            id=factor_id,
            org_id=principal.org_id,
            user_id=user_id,
            kind=TOTP,
            name=name,
            status="pending",
            secret_id=secret_id,
        )
    )
    db.flush()
    audit.record(
        db,
        type=EventType.MFA_FACTOR_CREATED,
        actor=principal.actor,
        org_id=principal.org_id,
        resource=("mfa_factor", factor_id),
        metadata={"kind": TOTP, "user_id": user_id, "status": "pending"},
    )
    return Enrolment(factor_id, secret, totp.otpauth_uri(secret, user.email))


def confirm_totp(
    db: Session,
    vault: Vault,
    principal: Principal,
    factor_id: str,
    code: str,
    hasher: TokenHasher,
) -> list[str]:
    """Confirm a pending TOTP factor with a current code. Returns ten new recovery codes
    when it is the person's first factor, else an empty list."""
    factor = _factor(db, principal, factor_id)
    if factor.status != "pending":
        raise Conflict("the factor is already confirmed")
    secret = store.open_secret(db, vault, factor.secret_id)
    step = totp.match(secret, code, utcnow(), factor.last_step) if secret else None
    if step is None:
        error = InvalidInput.field("code", "is not a current code of this authenticator")
        error.with_audit(
            type=EventType.AUTH_MFA_FAILED,
            actor=principal.actor,
            org_id=principal.org_id,
            outcome=Outcome.FAILURE,
            reason="wrong_code",
            resource=("mfa_factor", factor.id),
            metadata={"method": TOTP, "stage": "confirm"},
        )
        if principal.credential is CredentialKind.MFA_ENROLMENT and principal.credential_id:
            error.with_write(challenges.count_failure(principal.credential_id))
        raise error
    first = not active_factors(db, principal.org_id, factor.user_id)
    now = utcnow()
    done = db.execute(
        update(MfaFactor)
        .where(MfaFactor.id == factor.id, MfaFactor.status == "pending")
        .values(status="active", confirmed_at=now, last_step=step, last_used_at=now)
    )
    if not getattr(done, "rowcount", 0):
        raise Conflict("the factor is already confirmed")
    if principal.credential is CredentialKind.MFA_ENROLMENT and principal.credential_id:
        challenges.use_up(db, principal.credential_id)  # the person now signs in again
    audit.record(
        db,
        type=EventType.MFA_FACTOR_CONFIRMED,
        actor=principal.actor,
        org_id=principal.org_id,
        resource=("mfa_factor", factor.id),
        metadata={"kind": factor.kind, "user_id": factor.user_id, "first": first},
    )
    if not first:
        return []
    return new_codes(db, principal, factor.user_id, hasher)


# --- listing, removal, reset ---------------------------------------------------------


@dataclass(frozen=True)
class Status:
    factors: list[MfaFactor]
    recovery_codes_left: int
    required: bool


def status(db: Session, principal: Principal) -> Status:
    user_id = person(principal)
    stmt = select(MfaFactor).where(
        MfaFactor.org_id == principal.org_id, MfaFactor.user_id == user_id
    )
    factors = list(db.execute(stmt.order_by(MfaFactor.id.desc())).scalars())
    org = tenancy.find_org(db, principal.org_id)
    required = org is not None and mfa.required(org.mfa_policy, principal.role)
    return Status(factors, challenges.recovery_codes_left(db, user_id), required)


def delete_factor(db: Session, principal: Principal, factor_id: str) -> None:
    """Remove one of the person's factors (a confirmed one needs step-up). The last one
    cannot go while the organisation requires a factor of them; with it go the
    recovery codes."""
    factor = _factor(db, principal, factor_id)
    if factor.status == "active":
        principal.require_recent_auth("mfa.factor_delete")
        active = active_factors(db, principal.org_id, factor.user_id)
        others = [f for f in active if f.id != factor.id]
        org = tenancy.find_org(db, principal.org_id)
        if not others and org is not None and mfa.required(org.mfa_policy, principal.role):
            raise Conflict("the organisation requires a second factor: add another one first")
        if not others:
            _void_codes(db, principal.org_id, factor.user_id)
    store.destroy(db, [factor])
    audit.record(
        db,
        type=EventType.MFA_FACTOR_DELETED,
        actor=principal.actor,
        org_id=principal.org_id,
        resource=("mfa_factor", factor.id),
        metadata={"kind": factor.kind, "user_id": factor.user_id, "status": factor.status},
    )


def reset_user(
    db: Session,
    principal: Principal,
    org_id: str,
    user_id: str,
    ensure_may_manage: Callable[[Session, Principal, User], None],
    find_user: Callable[[Session, str, str], User],
) -> int:
    """An admin removes every factor, recovery code and open mfa token of another user
    (who lost their device); their next sign-in starts over. Needs step-up."""
    principal.require_org(org_id)
    user = find_user(db, org_id, user_id)
    ensure_may_manage(db, principal, user)
    principal.require_recent_auth("mfa.reset")
    removed = store.destroy_user(db, org_id, user.id)
    audit.record(
        db,
        type=EventType.MFA_FACTORS_RESET,
        actor=principal.actor,
        org_id=org_id,
        resource=("user", user.id),
        metadata={"factors_removed": removed},
    )
    return removed


# --- recovery codes -------------------------------------------------------------------


def _format(raw: str) -> str:
    return "-".join(raw[i : i + 4] for i in range(0, len(raw), 4))


def _normalize(code: str) -> str:
    return "".join(c for c in code.upper() if c.isalnum())


def _void_codes(db: Session, org_id: str, user_id: str) -> None:
    db.execute(
        delete(RecoveryCode).where(RecoveryCode.org_id == org_id, RecoveryCode.user_id == user_id)
    )


def new_codes(db: Session, principal: Principal, user_id: str, hasher: TokenHasher) -> list[str]:
    _void_codes(db, principal.org_id, user_id)
    codes = [_format(random_base32(4 * _CODE_GROUPS)) for _ in range(RECOVERY_CODES)]
    for code in codes:
        digest, version = hasher.keyed(RECOVERY_PURPOSE, _normalize(code))
        db.add(
            RecoveryCode(
                id=new_id("rc"),
                org_id=principal.org_id,
                user_id=user_id,
                code_hash=digest,
                pepper_version=version,
            )
        )
    db.flush()
    audit.record(
        db,
        type=EventType.MFA_RECOVERY_CODES_GENERATED,
        actor=principal.actor,
        org_id=principal.org_id,
        resource=("user", user_id),
        metadata={"count": RECOVERY_CODES},
    )
    return codes


def regenerate_codes(db: Session, principal: Principal, hasher: TokenHasher) -> list[str]:
    """A new set of ten recovery codes; the old ones stop working. Needs step-up."""
    user_id = person(principal)
    principal.require_recent_auth("mfa.recovery_codes")
    if not active_factors(db, principal.org_id, user_id):
        raise Conflict("recovery codes come with a confirmed factor: enrol one first")
    return new_codes(db, principal, user_id, hasher)


# --- verification (sign-in, step-up) -------------------------------------------------


def verify(
    db: Session,
    vault: Vault,
    hasher: TokenHasher,
    user: User,
    org: mfa.Settings,
    method: str,
    code: str,
    actor: Actor,
) -> Verified:
    """Check a code of `method` for `user`. A TOTP code's step is recorded by a
    compare-and-set in this transaction (a code is accepted once, on every worker); a
    recovery code is used up the same way."""
    if method == TOTP:
        if TOTP not in mfa.allowed(org.mfa_methods):
            return Verified(reason="method_not_allowed")
        return _verify_totp(db, vault, user, code)
    if method == RECOVERY_PURPOSE:
        return _verify_recovery(db, hasher, user, code, actor)
    return Verified(reason="method_not_allowed")


def _verify_totp(db: Session, vault: Vault, user: User, code: str) -> Verified:
    now = utcnow()
    replayed = False
    for factor in active_factors(db, user.org_id, user.id):
        if factor.kind != TOTP:
            continue
        secret = store.open_secret(db, vault, factor.secret_id)
        if secret is None:
            continue
        step = totp.match(secret, code, now, None)
        if step is None:
            continue
        done = db.execute(
            update(MfaFactor)
            .where(
                MfaFactor.id == factor.id,
                MfaFactor.status == "active",
                (MfaFactor.last_step.is_(None)) | (MfaFactor.last_step < step),
            )
            .values(last_step=step, last_used_at=now)
        )
        if getattr(done, "rowcount", 0) == 1:
            return Verified(amr=(mfa.OTP, mfa.MULTI))
        replayed = True
    return Verified(reason="replayed" if replayed else "wrong_code")


def _verify_recovery(
    db: Session, hasher: TokenHasher, user: User, code: str, actor: Actor
) -> Verified:
    given = _normalize(code)
    rows = db.execute(
        select(RecoveryCode).where(
            RecoveryCode.org_id == user.org_id,
            RecoveryCode.user_id == user.id,
            RecoveryCode.used_at.is_(None),
        )
    ).scalars()
    found = None
    for row in rows:  # every row compared: no early exit
        if hasher.keyed_matches(RECOVERY_PURPOSE, given, row.pepper_version, row.code_hash):
            found = found or row
    if found is None:
        return Verified(reason="wrong_code")
    done = db.execute(
        update(RecoveryCode)
        .where(RecoveryCode.id == found.id, RecoveryCode.used_at.is_(None))
        .values(used_at=utcnow())
    )
    if getattr(done, "rowcount", 0) != 1:
        return Verified(reason="replayed")
    left = challenges.recovery_codes_left(db, user.id)
    audit.record(
        db,
        type=EventType.MFA_RECOVERY_CODE_USED,
        actor=actor,
        org_id=user.org_id,
        resource=("user", user.id),
        metadata={"remaining": left},
    )
    return Verified(amr=(mfa.MULTI,))

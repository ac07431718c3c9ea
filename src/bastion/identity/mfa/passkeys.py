"""WebAuthn credentials (passkeys and security keys): registration, a second factor,
passwordless sign-in and step-up, verified by `py_webauthn` (the `webauthn` package).

The relying party is the instance's public URL: its origin is the only origin accepted
and its host is the RP ID. Every ceremony starts with options whose challenge is
single use, short-lived and bound to its purpose (`webauthn_challenges`).
A credential's signature counter must grow when either count is non-zero (a cloned
authenticator), compare-and-set as well. Every refusal of an assertion is the same 401;
the audit event says why. Nothing of a challenge or credential goes to logs or events
but the factor's id.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select, update
from sqlalchemy.orm import Session
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    CredentialDeviceType,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from bastion.audit import service as audit
from bastion.core import mfa
from bastion.core.clock import utcnow
from bastion.core.config import Settings
from bastion.core.context import Actor
from bastion.core.errors import Conflict, Forbidden, InvalidInput, TooManyRequests, Unauthenticated
from bastion.core.events import EventType, Outcome
from bastion.core.ids import new_id
from bastion.core.permissions import CredentialKind
from bastion.core.principal import Principal
from bastion.core.ratelimit import RateLimiter, per_window
from bastion.identity.mfa import challenges, factors, webauthn_challenges
from bastion.identity.mfa.webauthn_challenges import (
    PASSKEY,
    REGISTER,
    SIGN_IN,
    STEP_UP,
    TTL_SECONDS,
)
from bastion.identity.models import MfaFactor, User
from bastion.identity.sessions import LoginResult, open_session
from bastion.identity.tokens import TokenHasher
from bastion.tenancy import service as tenancy

WEBAUTHN = "webauthn"
_TRANSPORTS = {t.value for t in AuthenticatorTransport}


@dataclass(frozen=True)
class RelyingParty:
    """Who credentials are bound to: the public URL's origin, and its host as RP ID."""

    id: str
    origin: str
    name: str = "Bastion"

    @classmethod
    def of(cls, settings: Settings) -> RelyingParty:
        origin = settings.public_url
        return cls(id=urlsplit(origin).hostname or "localhost", origin=origin)


@dataclass(frozen=True)
class Registered:
    factor_id: str
    recovery_codes: list[str] = field(repr=False)


# --- options --------------------------------------------------------------------------


def _json(options: object) -> dict[str, Any]:
    return dict(json.loads(options_to_json(options)))  # type: ignore[arg-type]


def _descriptors(found: list[MfaFactor]) -> list[PublicKeyCredentialDescriptor]:
    return [
        PublicKeyCredentialDescriptor(
            id=base64url_to_bytes(f.credential_id or ""),
            transports=[AuthenticatorTransport(t) for t in f.transports or [] if t in _TRANSPORTS],
        )
        for f in found
        if f.credential_id
    ]


def _credentials(db: Session, org_id: str, user_id: str) -> list[MfaFactor]:
    return [
        f
        for f in factors.active_factors(db, org_id, user_id)
        if f.kind == WEBAUTHN and f.credential_id
    ]


def _org_allows(db: Session, org_id: str) -> None:
    org = tenancy.find_org(db, org_id)
    if org is None or WEBAUTHN not in mfa.allowed(org.mfa_methods):
        raise Forbidden("the organisation does not allow WebAuthn factors")


def registration_options(db: Session, rp: RelyingParty, principal: Principal) -> dict[str, Any]:
    """PublicKeyCredentialCreationOptions for the person to add a credential: their
    existing ones excluded, a resident key (a passkey) and user verification preferred.
    A session needs a recent verification, as for any new factor."""
    user_id = factors.person(principal)
    _org_allows(db, principal.org_id)
    if principal.credential is CredentialKind.SESSION:
        principal.require_recent_auth("mfa.factor_add")
    user = db.get(User, user_id)
    if user is None:
        raise Forbidden("second factors are managed by the person, signed in with a session")
    challenge = webauthn_challenges.issue(
        db, REGISTER, org_id=principal.org_id, user_id=user_id, bound_to=None
    )
    options = generate_registration_options(
        rp_id=rp.id,
        rp_name=rp.name,
        user_id=user.id.encode(),  # the user handle: a random id, no personal data
        user_name=user.email,
        user_display_name=user.name or user.email,
        challenge=challenge,
        timeout=TTL_SECONDS * 1000,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.PREFERRED,
            user_verification=UserVerificationRequirement.PREFERRED,
        ),
        exclude_credentials=_descriptors(_credentials(db, principal.org_id, user_id)),
    )
    return _json(options)


def _request_options(
    rp: RelyingParty, challenge: bytes, allowed: list[MfaFactor], uv: UserVerificationRequirement
) -> dict[str, Any]:
    options = generate_authentication_options(
        rp_id=rp.id,
        challenge=challenge,
        timeout=TTL_SECONDS * 1000,
        allow_credentials=_descriptors(allowed),
        user_verification=uv,
    )
    return _json(options)


def sign_in_options(
    db: Session, rp: RelyingParty, mfa_token: str, hasher: TokenHasher, actor: Actor
) -> dict[str, Any]:
    """Request options for the second factor an mfa token owes: the person's
    credentials allowed. 409 when they have none the organisation allows."""
    row = challenges.load(db, mfa_token, challenges.SIGN_IN, hasher, actor, lock=False)
    org = tenancy.find_org(db, row.org_id)
    allowed = _credentials(db, row.org_id, row.user_id)
    if org is None or WEBAUTHN not in mfa.allowed(org.mfa_methods) or not allowed:
        raise Conflict("this person has no WebAuthn credential the organisation allows")
    challenge = webauthn_challenges.issue(
        db, SIGN_IN, org_id=row.org_id, user_id=row.user_id, bound_to=row.id
    )
    return _request_options(rp, challenge, allowed, UserVerificationRequirement.PREFERRED)


def step_up_options(db: Session, rp: RelyingParty, principal: Principal) -> dict[str, Any]:
    """Request options for a session's step-up with one of the person's credentials."""
    if principal.credential is not CredentialKind.SESSION or principal.user_id is None:
        raise Forbidden("step-up applies to people signed in with a session")
    _org_allows(db, principal.org_id)
    allowed = _credentials(db, principal.org_id, principal.user_id)
    if not allowed:
        raise Conflict("no WebAuthn credential to step up with: enrol one first")
    challenge = webauthn_challenges.issue(
        db, STEP_UP, org_id=principal.org_id, user_id=principal.user_id,
        bound_to=principal.session_id,
    )  # fmt: skip
    return _request_options(rp, challenge, allowed, UserVerificationRequirement.PREFERRED)


def passkey_options(
    db: Session, rp: RelyingParty, actor: Actor, limiter: RateLimiter, settings: Settings
) -> dict[str, Any]:
    """Request options for passwordless sign-in: discoverable credentials (no list),
    user verification required. Anyone may ask, so it is throttled per address."""
    quota = per_window(settings.login_failures_per_ip, settings.login_failure_window)
    allowed, state = limiter.take(quota, f"passkey:options:{actor.ip or '-'}")
    if not allowed:
        raise TooManyRequests(
            "too many sign-in attempts from this address", retry_after=state.reset_after
        )
    challenge = webauthn_challenges.issue(db, PASSKEY, org_id=None, user_id=None, bound_to=None)
    return _request_options(rp, challenge, [], UserVerificationRequirement.REQUIRED)


# --- registration ---------------------------------------------------------------------


def register(
    db: Session,
    rp: RelyingParty,
    principal: Principal,
    *,
    name: str,
    credential: Mapping[str, Any],
    hasher: TokenHasher,
) -> Registered:
    """Verify a registration response and add the credential as an active factor. The
    person's first factor comes with ten recovery codes; an enrolment token is used up
    (the person signs in again, with the new factor)."""
    user_id = factors.person(principal)
    _org_allows(db, principal.org_id)
    if principal.credential is CredentialKind.SESSION:
        principal.require_recent_auth("mfa.factor_add")
    taken = webauthn_challenges.take(db, credential, REGISTER, user_id=user_id, bound_to=None)
    verified = None
    if not taken.reason:
        try:
            verified = verify_registration_response(
                credential=dict(credential),
                expected_challenge=taken.challenge,
                expected_rp_id=rp.id,
                expected_origin=rp.origin,
                require_user_verification=False,
            )
        except Exception:  # anything unverifiable is refused, never a 500
            verified = None
    if verified is None:
        error = InvalidInput.field("credential", "could not be verified; start again")
        error.with_audit(
            type=EventType.AUTH_MFA_FAILED,
            actor=principal.actor,
            org_id=principal.org_id,
            outcome=Outcome.FAILURE,
            reason=taken.reason or "bad_attestation",
            resource=("user", user_id),
            metadata={"method": WEBAUTHN, "stage": "register"},
        )
        for write in taken.writes:
            error.with_write(write)
        if principal.credential is CredentialKind.MFA_ENROLMENT and principal.credential_id:
            error.with_write(challenges.count_failure(principal.credential_id))
        raise error
    credential_id = bytes_to_base64url(verified.credential_id)
    exists = select(MfaFactor.id).where(MfaFactor.credential_id == credential_id)
    if db.execute(exists).first() is not None:
        raise Conflict("this credential is already registered")
    first = not factors.active_factors(db, principal.org_id, user_id)
    now = utcnow()
    factor_id = new_id("mfa")
    transports = credential.get("response", {}).get("transports") or []
    db.add(
        MfaFactor(
            id=factor_id,
            org_id=principal.org_id,
            user_id=user_id,
            kind=WEBAUTHN,
            name=name,
            status="active",
            credential_id=credential_id,
            public_key=verified.credential_public_key,
            sign_count=verified.sign_count,
            transports=sorted({t for t in transports if t in _TRANSPORTS}),
            aaguid=verified.aaguid,
            confirmed_at=now,
        )
    )
    db.flush()
    if principal.credential is CredentialKind.MFA_ENROLMENT and principal.credential_id:
        challenges.use_up(db, principal.credential_id)
    for event, extra in (
        (EventType.MFA_FACTOR_CREATED, {"status": "active"}),
        (EventType.MFA_FACTOR_CONFIRMED, {"first": first}),
    ):
        audit.record(
            db,
            type=event,
            actor=principal.actor,
            org_id=principal.org_id,
            resource=("mfa_factor", factor_id),
            metadata={"kind": WEBAUTHN, "user_id": user_id, "aaguid": verified.aaguid, **extra},
        )
    codes = factors.new_codes(db, principal, user_id, hasher) if first else []
    return Registered(factor_id, codes)


# --- assertions -----------------------------------------------------------------------


def _find(db: Session, credential: Mapping[str, Any], **where: str) -> MfaFactor | None:
    raw_id = credential.get("rawId")
    if not isinstance(raw_id, str):
        return None
    stmt = select(MfaFactor).where(
        MfaFactor.credential_id == raw_id.rstrip("="),
        MfaFactor.kind == WEBAUTHN,
        MfaFactor.status == "active",
        *(getattr(MfaFactor, k) == v for k, v in where.items()),
    )
    return db.execute(stmt).scalar_one_or_none()


def _sign_count(credential: Mapping[str, Any]) -> int | None:
    try:
        data = base64url_to_bytes(credential["response"]["authenticatorData"])
        return int.from_bytes(data[33:37], "big") if len(data) >= 37 else None
    except (KeyError, TypeError, ValueError):
        return None


def _assert(
    db: Session,
    rp: RelyingParty,
    factor: MfaFactor,
    credential: Mapping[str, Any],
    challenge: bytes,
    *,
    require_uv: bool,
    actor: Actor,
    stage: str,
) -> tuple[str, ...] | str:
    """Verify an assertion of `factor`: its `amr` values, or the reason it is refused.
    The new signature count is stored by compare-and-set."""
    stored = factor.sign_count or 0
    try:
        verified = verify_authentication_response(
            credential=dict(credential),
            expected_challenge=challenge,
            expected_rp_id=rp.id,
            expected_origin=rp.origin,
            credential_public_key=factor.public_key or b"",
            credential_current_sign_count=stored,
            require_user_verification=require_uv,
        )
    except Exception:  # anything unverifiable is refused, never a 500
        count = _sign_count(credential)
        regressed = count is not None and (count or stored) and count <= stored
        return "sign_count_regression" if regressed else "bad_assertion"
    done = db.execute(
        update(MfaFactor)
        .where(
            MfaFactor.id == factor.id,
            MfaFactor.status == "active",
            MfaFactor.sign_count == stored,
        )
        .values(sign_count=verified.new_sign_count, last_used_at=utcnow())
    )
    if getattr(done, "rowcount", 0) != 1:
        return "sign_count_regression"  # another assertion with this count won the race
    synced = verified.credential_device_type == CredentialDeviceType.MULTI_DEVICE
    kind = mfa.SOFTWARE_KEY if synced else mfa.HARDWARE_KEY
    audit.record(
        db,
        type=EventType.MFA_FACTOR_USED,
        actor=actor,
        org_id=factor.org_id,
        resource=("mfa_factor", factor.id),
        metadata={
            "kind": WEBAUTHN,
            "user_id": factor.user_id,
            "stage": stage,
            "user_verified": verified.user_verified,
            "backed_up": verified.credential_backed_up,
        },
    )
    return (kind, mfa.MULTI)


def verify(
    db: Session,
    rp: RelyingParty,
    user: User,
    org: mfa.Settings,
    credential: Mapping[str, Any] | None,
    *,
    purpose: str,
    bound_to: str | None,
    actor: Actor,
) -> factors.Verified:
    """A second factor (sign-in) or a step-up: an assertion of one of `user`'s own
    credentials, answering a challenge issued for this `purpose` and binding."""
    if WEBAUTHN not in mfa.allowed(org.mfa_methods):
        return factors.Verified(reason="method_not_allowed")
    if credential is None:
        return factors.Verified(reason="malformed_credential")
    taken = webauthn_challenges.take(db, credential, purpose, user_id=user.id, bound_to=bound_to)
    if taken.reason:
        return factors.Verified(reason=taken.reason, on_failure=taken.writes)
    factor = _find(db, credential, user_id=user.id, org_id=user.org_id)
    if factor is None:
        return factors.Verified(reason="unknown_credential", on_failure=taken.writes)
    outcome = _assert(
        db, rp, factor, credential, taken.challenge, require_uv=False, actor=actor, stage=purpose
    )
    if isinstance(outcome, str):
        return factors.Verified(reason=outcome, on_failure=taken.writes)
    return factors.Verified(amr=outcome)


# --- passwordless sign-in ------------------------------------------------------------


def passkey_sign_in(
    db: Session,
    rp: RelyingParty,
    actor: Actor,
    credential: Mapping[str, Any],
    *,
    hasher: TokenHasher,
    limiter: RateLimiter,
    settings: Settings,
) -> LoginResult:
    """A session from a discoverable credential alone, with user verification (the
    authenticator's PIN or biometric is the second factor): `amr` [hwk|swk, mfa].
    Refused, with one answer whatever the reason: an unknown credential, a bad
    signature, no user verification, a suspended person or organisation, or an
    organisation that does not allow WebAuthn."""
    quota = per_window(settings.login_failures_per_ip, settings.login_failure_window)
    key = f"login:ip:{actor.ip or '-'}"
    state = limiter.throttle_state(quota, key)
    if state.exhausted:
        raise TooManyRequests(
            "too many failed sign-in attempts; try again later", retry_after=state.reset_after
        )
    taken = webauthn_challenges.take(db, credential, PASSKEY, user_id=None, bound_to=None)
    # The credential is looked up even when the challenge is refused: the refusal is
    # then audited in its owner's organisation.
    factor = _find(db, credential)
    user = db.get(User, factor.user_id) if factor is not None else None
    reason = taken.reason or _passkey_refusal(db, credential, factor, user)
    if not reason and factor is not None and user is not None:
        who = Actor("user", user.id, actor.ip, actor.user_agent, actor.request_id)
        outcome = _assert(
            db, rp, factor, credential, taken.challenge, require_uv=True, actor=who,
            stage=PASSKEY,
        )  # fmt: skip
        if not isinstance(outcome, str):
            return open_session(db, actor, user, list(outcome), hasher=hasher, settings=settings)
        reason = outcome
    limiter.record_failure(quota, key)
    error = Unauthenticated("the passkey could not be verified").with_audit(
        type=EventType.AUTH_LOGIN_FAILED,
        actor=actor,
        org_id=user.org_id if user is not None else None,
        outcome=Outcome.FAILURE,
        reason=reason,
        resource=("user", user.id) if user is not None else None,
        metadata={"method": "passkey"},
    )
    for write in taken.writes:
        error.with_write(write)
    raise error


def _passkey_refusal(
    db: Session, credential: Mapping[str, Any], factor: MfaFactor | None, user: User | None
) -> str:
    if factor is None or user is None:
        return "unknown_credential"
    handle = credential.get("response", {}).get("userHandle")
    if handle is not None and handle.rstrip("=") != bytes_to_base64url(user.id.encode()):
        return "user_handle_mismatch"
    org = tenancy.find_org(db, user.org_id)
    if user.status != "active" or user.org_id != factor.org_id:
        return f"user_{user.status}"
    if org is None or org.status != "active":
        return "org_inactive"
    if WEBAUTHN not in mfa.allowed(org.mfa_methods):
        return "method_not_allowed"
    return ""

"""A person's second factors: `/v1/me/mfa…`. The caller is a session or an enrolment
`mfa_token` (`deps.Person`); API keys, service accounts and agent runs are refused.

`auth_router`: the WebAuthn ceremonies of signing in (`/v1/auth/mfa/webauthn-options`,
`/v1/auth/passkey…`) and of step-up (`/v1/auth/step-up/webauthn-options`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from bastion.api.deps import Caller, Ctx, Person, State
from bastion.identity.mfa import factors, passkeys
from bastion.identity.schemas import (
    FactorOut,
    LoginOut,
    MfaOptionsIn,
    MfaStatusOut,
    PasskeyIn,
    RecoveryCodesOut,
    TotpConfirmIn,
    TotpEnrolIn,
    TotpEnrolOut,
    WebAuthnRegisteredOut,
    WebAuthnRegisterIn,
)

router = APIRouter(prefix="/v1/me/mfa", tags=["mfa"])
auth_router = APIRouter(prefix="/v1/auth", tags=["auth"])


@router.get("", summary="The caller's factors (never their secrets)")
def status(principal: Person, ctx: Ctx) -> MfaStatusOut:
    found = factors.status(ctx.db, principal)
    return MfaStatusOut(
        data=[FactorOut.model_validate(f) for f in found.factors],
        recovery_codes_remaining=found.recovery_codes_left,
        mfa_required=found.required,
    )


@router.post("/totp", summary="Start enrolling a TOTP authenticator (pending until confirmed)")
def start_totp(
    principal: Person, ctx: Ctx, state: State, body: TotpEnrolIn | None = None
) -> TotpEnrolOut:
    name = body.name if body is not None else TotpEnrolIn().name
    enrolled = factors.start_totp(ctx.db, state.vault, principal, name=name)
    return TotpEnrolOut(
        factor_id=enrolled.factor_id, secret=enrolled.secret, otpauth_uri=enrolled.otpauth_uri
    )


@router.post("/totp/{factor}/confirm", summary="Confirm a TOTP factor with a current code")
def confirm_totp(
    factor: str, body: TotpConfirmIn, principal: Person, ctx: Ctx, state: State
) -> RecoveryCodesOut:
    codes = factors.confirm_totp(ctx.db, state.vault, principal, factor, body.code, state.hasher)
    return RecoveryCodesOut(recovery_codes=codes)


@router.post(
    "/webauthn/registration-options",
    summary="Options to register a passkey or security key (PublicKeyCredentialCreationOptions)",
)
def webauthn_registration_options(principal: Person, ctx: Ctx, state: State) -> dict[str, Any]:
    rp = passkeys.RelyingParty.of(state.settings)
    return passkeys.registration_options(ctx.db, rp, principal)


@router.post("/webauthn", summary="Register a passkey or security key")
def webauthn_register(
    body: WebAuthnRegisterIn, principal: Person, ctx: Ctx, state: State
) -> WebAuthnRegisteredOut:
    done = passkeys.register(
        ctx.db,
        passkeys.RelyingParty.of(state.settings),
        principal,
        name=body.name,
        credential=body.credential.as_json(),
        hasher=state.hasher,
    )
    return WebAuthnRegisteredOut(factor_id=done.factor_id, recovery_codes=done.recovery_codes)


@router.post("/recovery-codes", summary="New recovery codes; the old ones stop working")
def regenerate_codes(principal: Person, ctx: Ctx, state: State) -> RecoveryCodesOut:
    return RecoveryCodesOut(
        recovery_codes=factors.regenerate_codes(ctx.db, principal, state.hasher)
    )


@router.delete("/{factor}", status_code=204, summary="Remove one of the caller's factors")
def delete_factor(factor: str, principal: Person, ctx: Ctx) -> Response:
    factors.delete_factor(ctx.db, principal, factor)
    return Response(status_code=204)


@auth_router.post(
    "/mfa/webauthn-options",
    summary="Options to answer an mfa token with a passkey or security key",
)
def webauthn_sign_in_options(body: MfaOptionsIn, ctx: Ctx, state: State) -> dict[str, Any]:
    return passkeys.sign_in_options(
        ctx.db,
        passkeys.RelyingParty.of(state.settings),
        body.mfa_token.get_secret_value(),
        state.hasher,
        ctx.actor,
    )


@auth_router.post(
    "/step-up/webauthn-options", summary="Options to step up with a passkey or security key"
)
def webauthn_step_up_options(principal: Caller, ctx: Ctx, state: State) -> dict[str, Any]:
    return passkeys.step_up_options(ctx.db, passkeys.RelyingParty.of(state.settings), principal)


@auth_router.post("/passkey/options", summary="Options to sign in with a passkey, no password")
def passkey_options(ctx: Ctx, state: State) -> dict[str, Any]:
    return passkeys.passkey_options(
        ctx.db,
        passkeys.RelyingParty.of(state.settings),
        ctx.actor,
        state.limiter,
        state.settings,
    )


@auth_router.post("/passkey", summary="Sign in with a passkey (user verification required)")
def passkey_sign_in(body: PasskeyIn, ctx: Ctx, state: State) -> LoginOut:
    result = passkeys.passkey_sign_in(
        ctx.db,
        passkeys.RelyingParty.of(state.settings),
        ctx.actor,
        body.credential.as_json(),
        hasher=state.hasher,
        limiter=state.limiter,
        settings=state.settings,
    )
    return LoginOut(token=result.token, expires_at=result.expires_at, user_id=result.user_id)

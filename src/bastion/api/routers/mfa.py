"""A person's second factors: `/v1/me/mfa…`. The caller is a session or an enrolment
`mfa_token` (`deps.Person`); API keys, service accounts and agent runs are refused."""

from __future__ import annotations

from fastapi import APIRouter, Response

from bastion.api.deps import Ctx, Person, State
from bastion.identity.mfa import factors
from bastion.identity.schemas import (
    FactorOut,
    MfaStatusOut,
    RecoveryCodesOut,
    TotpConfirmIn,
    TotpEnrolIn,
    TotpEnrolOut,
)

router = APIRouter(prefix="/v1/me/mfa", tags=["mfa"])


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


@router.post("/recovery-codes", summary="New recovery codes; the old ones stop working")
def regenerate_codes(principal: Person, ctx: Ctx, state: State) -> RecoveryCodesOut:
    return RecoveryCodesOut(
        recovery_codes=factors.regenerate_codes(ctx.db, principal, state.hasher)
    )


@router.delete("/{factor}", status_code=204, summary="Remove one of the caller's factors")
def delete_factor(factor: str, principal: Person, ctx: Ctx) -> Response:
    factors.delete_factor(ctx.db, principal, factor)
    return Response(status_code=204)

"""The person's own security page, `/console/security`: second factors (TOTP with its
secret and otpauth URI shown once, passkeys named at registration, removal), recovery
codes (shown once, regenerated), the password, and their sessions (revoke one, or all
but this one). Each action is the `/v1/me…` endpoint's service call.

It is also the one page a person whose organisation requires a second factor they
have not enrolled may use (with a session, or with the enrolment `mfa_token` a sign-in
gave, kept in the mfa cookie): every other page sends them here."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter
from starlette.responses import JSONResponse, Response

from bastion.console import security
from bastion.console.web import (
    Enrolling,
    EnrollingPost,
    Posted,
    SignedInPost,
    Viewer,
    notice,
    render,
    see_other,
)
from bastion.core.errors import InvalidInput
from bastion.core.pagination import DEFAULT_LIMIT
from bastion.identity import account, sessions
from bastion.identity.mfa import factors, passkeys
from bastion.identity.schemas import (
    PasswordChangeIn,
    TotpConfirmIn,
    TotpEnrolIn,
    WebAuthnRegisterIn,
)

router = APIRouter()
PAGE = "/console/security"

FACTOR_REMOVED = notice("factor-removed", "The factor was removed.")
SESSION_REVOKED = notice("session-revoked", "The session was ended.")
OTHERS_REVOKED = notice("sessions-revoked", "Every other session was ended.")
PASSWORD_CHANGED = notice("password-changed", "Password changed; your other sessions ended.")


def _page(viewer: Viewer, status: int = 200, **shown: Any) -> Response:
    principal = viewer.signed_in
    found = factors.status(viewer.db, principal)
    own_sessions: list[Any] = []
    if principal.session_id is not None:
        page = sessions.list_sessions(viewer.db, principal, limit=DEFAULT_LIMIT, cursor=None)
        own_sessions = page.data
    return render(
        viewer,
        "security.html",
        status=status,
        title="Security",
        factors=found.factors,
        codes_left=found.recovery_codes_left,
        required=found.required,
        enrolling=principal.mfa_pending or viewer.via_mfa_token,
        sessions=own_sessions,
        **shown,
    )


@router.get("/security")
def security_page(viewer: Enrolling) -> Response:
    return _page(viewer)


# --- TOTP ---------------------------------------------------------------------------


@router.post("/security/totp")
def start_totp(posted: EnrollingPost) -> Response:
    body = TotpEnrolIn.model_validate({"name": posted.get("name") or "Authenticator app"})
    state = posted.viewer.edge.app
    enrolled = factors.start_totp(posted.db, state.vault, posted.principal, name=body.name)
    # The secret is shown on this answer only; it is sealed and never readable again.
    return _page(posted.viewer, totp=enrolled)


def _after_enrolment(posted: Posted, codes: list[str]) -> Response:
    """The recovery codes, shown once. An enrolment `mfa_token` is used up: the person
    signs in again, now with the factor."""
    if not posted.viewer.via_mfa_token:
        return _page(posted.viewer, recovery_codes=codes)
    response = render(
        posted.viewer, "enrolled.html", title="Second factor added", recovery_codes=codes
    )
    security.clear_cookie(response, posted.viewer.settings, "mfa")
    return response


@router.post("/security/totp/{factor}/confirm")
def confirm_totp(factor: str, posted: EnrollingPost) -> Response:
    body = TotpConfirmIn.model_validate({"code": posted.form.get("code", "")})
    state = posted.viewer.edge.app
    codes = factors.confirm_totp(
        posted.db, state.vault, posted.principal, factor, body.code, state.hasher
    )
    return _after_enrolment(posted, codes)


# --- passkeys -----------------------------------------------------------------------


@router.post("/security/passkey-options")
def passkey_options(posted: EnrollingPost) -> Response:
    rp = passkeys.RelyingParty.of(posted.viewer.settings)
    return JSONResponse(passkeys.registration_options(posted.db, rp, posted.principal))


@router.post("/security/passkeys")
def register_passkey(posted: EnrollingPost) -> Response:
    try:
        credential = json.loads(posted.require("credential"))
    except ValueError:
        raise InvalidInput.field("credential", "is not JSON") from None
    body = WebAuthnRegisterIn.model_validate(
        {"name": posted.get("name") or "Passkey", "credential": credential}
    )
    state = posted.viewer.edge.app
    done = passkeys.register(
        posted.db,
        passkeys.RelyingParty.of(state.settings),
        posted.principal,
        name=body.name,
        credential=body.credential.as_json(),
        hasher=state.hasher,
    )
    if done.recovery_codes or posted.viewer.via_mfa_token:
        return _after_enrolment(posted, done.recovery_codes)
    return _page(posted.viewer)


# --- factors and recovery codes -----------------------------------------------------


@router.post("/security/factors/{factor}/remove")
def remove_factor(factor: str, posted: EnrollingPost) -> Response:
    factors.delete_factor(posted.db, posted.principal, factor)
    return see_other(PAGE, FACTOR_REMOVED)


@router.post("/security/recovery-codes")
def regenerate_codes(posted: EnrollingPost) -> Response:
    state = posted.viewer.edge.app
    codes = factors.regenerate_codes(posted.db, posted.principal, state.hasher)
    return _page(posted.viewer, recovery_codes=codes)


# --- password and sessions ----------------------------------------------------------


@router.post("/security/password")
def change_password(posted: SignedInPost) -> Response:
    body = PasswordChangeIn.model_validate(
        {
            "current_password": posted.form.get("current_password", ""),
            "new_password": posted.form.get("new_password", ""),
        }
    )
    account.change_password(
        posted.db,
        posted.principal,
        current_password=body.current_password.get_secret_value(),
        new_password=body.new_password.get_secret_value(),
        limiter=posted.viewer.edge.app.limiter,
    )
    return see_other(PAGE, PASSWORD_CHANGED)


@router.post("/security/sessions/{session_id}/revoke")
def revoke_session(session_id: str, posted: SignedInPost) -> Response:
    sessions.revoke_session(posted.db, posted.principal, session_id)
    return see_other(PAGE, SESSION_REVOKED)


@router.post("/security/sessions/revoke-others")
def revoke_others(posted: SignedInPost) -> Response:
    sessions.revoke_other_sessions(posted.db, posted.principal)
    return see_other(PAGE, OTHERS_REVOKED)

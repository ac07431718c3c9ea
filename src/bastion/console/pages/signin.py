"""Signing in and out: password, then the second factor an organisation asks for (a
TOTP or recovery code in "Code", or a passkey), passwordless passkeys, and "Sign in
with SSO" (the existing flow, `/v1/auth/sso/start`, coming back to `/console/sso/done`).

Each step calls the service the API's `/v1/auth…` route calls, with the same arguments;
the session token the sign-in opens goes into the HttpOnly session cookie, the
`mfa_token` in between into the short-lived mfa cookie: neither is ever in a page."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from bastion.console import security
from bastion.console.web import (
    ENROL,
    HOME,
    SIGN_IN,
    EnrollingPost,
    Posted,
    Viewer,
    Visitor,
    VisitorPost,
    notice,
    render,
    safe_path,
    see_other,
)
from bastion.core.errors import BastionError, InvalidInput, Unauthenticated
from bastion.identity import sessions
from bastion.identity.mfa import passkeys, signin
from bastion.identity.schemas import LoginIn, MfaIn, PasskeyIn
from bastion.sso import flow

router = APIRouter()

SIGNED_OUT = notice("signed-out", "You are signed out.")
VERIFY = "/console/sign-in/verify"
SSO_DONE = "/console/sso/done"
_METHODS = ("totp", "webauthn", "recovery_code")

# What an SSO failure (`?error=` from the flow) tells the person.
SSO_ERRORS = {
    "no_connection": "Single sign-on is not set up for that email address.",
    "access_denied": "The identity provider did not sign you in.",
    "user_inactive": "This account is not active.",
}


def _signed_in(viewer: Viewer, result: sessions.LoginResult, where: str) -> Response:
    response = RedirectResponse(where, status_code=303)
    settings = viewer.settings
    security.set_cookie(response, settings, "session", result.token)
    security.clear_cookie(response, settings, "mfa")
    return response


async def _refusal(viewer: Viewer, exc: BastionError) -> str:
    """Queue the refusal's audit trace (as the API does) and say what went wrong."""
    await viewer.edge.refused(viewer.request, exc)
    return exc.detail


def _parse(model: type[BaseModel], values: dict[str, Any]) -> Any:
    return model.model_validate(values)


def _credential(posted: Posted) -> Any:
    raw = posted.require("credential")
    try:
        return json.loads(raw)
    except ValueError:
        raise InvalidInput.field("credential", "is not JSON") from None


# --- password -----------------------------------------------------------------------


@router.get("/sign-in")
def sign_in_page(viewer: Visitor, error: str | None = None, next: str | None = None) -> Response:
    if viewer.principal is not None and not viewer.principal.mfa_pending:
        return RedirectResponse(safe_path(next, HOME), status_code=303)
    return render(
        viewer,
        "signin.html",
        title="Sign in",
        error=SSO_ERRORS.get(error or "", "Single sign-on failed." if error else None),
        next=safe_path(next, HOME),
    )


@router.post("/sign-in")
async def sign_in(posted: VisitorPost) -> Response:
    viewer = posted.viewer
    where = safe_path(posted.get("next"), HOME)
    try:
        body = _parse(LoginIn, {"email": posted.form.get("email", ""),
                                "password": posted.form.get("password", "")})  # fmt: skip
        state = viewer.edge.app
        result = sessions.login(
            viewer.db,
            viewer.unit.actor,
            email=body.email,
            password=body.password.get_secret_value(),
            hasher=state.hasher,
            limiter=state.limiter,
            settings=state.settings,
        )
    except BastionError as exc:
        detail = await _refusal(viewer, exc)
        return render(
            viewer, "signin.html", status=exc.status, title="Sign in", error=detail, next=where,
            email=posted.form.get("email", ""),
        )  # fmt: skip
    if isinstance(result, sessions.MfaOwed):
        if result.purpose == "enrol":
            target = ENROL
        else:
            methods = ",".join(m for m in result.methods if m in _METHODS)
            target = f"{VERIFY}?{urlencode({'methods': methods, 'next': where})}"
        response = RedirectResponse(target, status_code=303)
        security.set_cookie(
            response, viewer.settings, "mfa", result.mfa_token, max_age=security.MFA_COOKIE_TTL
        )
        return response
    return _signed_in(viewer, result, where)


# --- second factor ------------------------------------------------------------------


def _verify_page(
    viewer: Viewer, methods: str | None, where: str, error: str | None = None, status: int = 200
) -> Response:
    shown = [m for m in (methods or "").split(",") if m in _METHODS] or ["totp", "recovery_code"]
    return render(
        viewer, "verify.html", status=status, title="Verify it's you", methods=shown,
        next=where, error=error,
    )  # fmt: skip


@router.get("/sign-in/verify")
def verify_page(viewer: Visitor, methods: str | None = None, next: str | None = None) -> Response:
    if security.read_cookie(viewer.request, viewer.settings, "mfa") is None:
        return RedirectResponse(SIGN_IN, status_code=303)
    return _verify_page(viewer, methods, safe_path(next, HOME))


@router.post("/sign-in/verify")
async def verify(posted: VisitorPost) -> Response:
    viewer = posted.viewer
    where = safe_path(posted.get("next"), HOME)
    token = security.read_cookie(viewer.request, viewer.settings, "mfa")
    if token is None:
        return RedirectResponse(SIGN_IN, status_code=303)
    code = (posted.get("code") or "").strip()
    if posted.get("method") == "webauthn":
        values: dict[str, Any] = {"method": "webauthn", "credential": _credential(posted)}
    else:
        compact = code.replace(" ", "")
        method = "totp" if compact.isdigit() and len(compact) <= 8 else "recovery_code"
        values = {"method": method, "code": code}
    state = viewer.edge.app
    try:
        body = _parse(MfaIn, {"mfa_token": token, **values})
        result = signin.complete(
            viewer.db,
            state.vault,
            viewer.unit.actor,
            mfa_token=body.mfa_token.get_secret_value(),
            method=body.method,
            code=body.code,
            hasher=state.hasher,
            limiter=state.limiter,
            settings=state.settings,
            credential=body.credential.as_json() if body.credential else None,
        )
    except BastionError as exc:
        detail = await _refusal(viewer, exc)
        return _verify_page(viewer, posted.get("methods"), where, detail, exc.status)
    return _signed_in(viewer, result, where)


@router.post("/sign-in/verify/passkey-options")
def verify_passkey_options(posted: VisitorPost) -> Response:
    """Request options for answering the pending sign-in with a passkey (as
    `POST /v1/auth/mfa/webauthn-options`)."""
    viewer = posted.viewer
    token = security.read_cookie(viewer.request, viewer.settings, "mfa")
    if token is None:
        raise Unauthenticated("the sign-in has expired: start again")
    state = viewer.edge.app
    options = passkeys.sign_in_options(
        viewer.db, passkeys.RelyingParty.of(state.settings), token, state.hasher,
        viewer.unit.actor,
    )  # fmt: skip
    return JSONResponse(options)


# --- passwordless -------------------------------------------------------------------


@router.post("/sign-in/passkey-options")
def passkey_options(posted: VisitorPost) -> Response:
    viewer = posted.viewer
    state = viewer.edge.app
    options = passkeys.passkey_options(
        viewer.db, passkeys.RelyingParty.of(state.settings), viewer.unit.actor, state.limiter,
        state.settings,
    )  # fmt: skip
    return JSONResponse(options)


@router.post("/sign-in/passkey")
async def passkey_sign_in(posted: VisitorPost) -> Response:
    viewer = posted.viewer
    where = safe_path(posted.get("next"), HOME)
    state = viewer.edge.app
    try:
        body = _parse(PasskeyIn, {"credential": _credential(posted)})
        result = passkeys.passkey_sign_in(
            viewer.db,
            passkeys.RelyingParty.of(state.settings),
            viewer.unit.actor,
            body.credential.as_json(),
            hasher=state.hasher,
            limiter=state.limiter,
            settings=state.settings,
        )
    except BastionError as exc:
        detail = await _refusal(viewer, exc)
        return render(
            viewer, "signin.html", status=exc.status, title="Sign in", error=detail, next=where
        )
    return _signed_in(viewer, result, where)


# --- SSO ----------------------------------------------------------------------------


def sso_start_url(email: str) -> str:
    return f"{flow.START_PATH}?{urlencode({'email': email, 'return_to': SSO_DONE})}"


@router.get("/sso")
def sso_page(viewer: Visitor, email: str | None = None) -> Response:
    """Without JavaScript, "Sign in with SSO" comes here: the email, then a link to the
    identity provider (a form may not lead to another origin: `form-action 'self'`)."""
    email = (email or "").strip()[:320] or None
    return render(
        viewer,
        "sso.html",
        title="Sign in with SSO",
        email=email,
        start_url=sso_start_url(email) if email else None,
    )


@router.get(SSO_DONE.removeprefix("/console"))
def sso_done_page(viewer: Visitor, code: str | None = None, error: str | None = None) -> Response:
    """Where the SSO flow comes back: the one-time code is exchanged by a POST (with
    this browser's CSRF token and the SSO binding cookie), never by the GET itself."""
    if error or not code or len(code) > 200:
        return RedirectResponse(
            f"{SIGN_IN}?{urlencode({'error': (error or 'failed')[:40]})}", status_code=303
        )
    return render(viewer, "sso_done.html", title="Finishing sign-in", code=code)


@router.post(SSO_DONE.removeprefix("/console"))
async def sso_done(posted: VisitorPost, request: Request) -> Response:
    viewer = posted.viewer
    state = viewer.edge.app
    env = flow.Env(state.settings, state.hasher, state.vault, state.sso_rp, viewer.unit.actor)
    try:
        result = flow.exchange(
            viewer.db, env, posted.require("code"), request.cookies.get(env.cookie_name),
            from_browser=True,
        )  # fmt: skip
    except BastionError as exc:
        detail = await _refusal(viewer, exc)
        return render(viewer, "signin.html", status=exc.status, title="Sign in", error=detail)
    return _signed_in(viewer, result, HOME)


# --- sign-out -----------------------------------------------------------------------


@router.post("/sign-out")
def sign_out(posted: EnrollingPost) -> Response:
    """Also open to a person who still owes their enrolment (as `/v1/auth/logout`)."""
    if not posted.viewer.via_mfa_token:
        sessions.logout(posted.db, posted.principal)
    response = see_other(SIGN_IN, SIGNED_OUT)
    security.clear_cookie(response, posted.viewer.settings, "session")
    security.clear_cookie(response, posted.viewer.settings, "mfa")
    return response

"""The console's browser-facing security: its Content-Security-Policy, its cookies and
its CSRF tokens.

Cookies (the same rule as the SSO binding cookie, `bastion.sso.flow`): under https
(`BASTION_PUBLIC_URL`) each is `__Host-` prefixed and Secure, Path=/, no Domain; over
plain http (development on localhost) browsers refuse a `__Host-` cookie without
Secure, so the same cookie goes without the prefix. All are HttpOnly, SameSite=Lax.

- session: the session token (`bss_…`) a sign-in opened, as the API's bearer;
- mfa: the short-lived `mfa_token` between the password and the second factor (or the
  enrolment a policy requires);
- browser: a random value naming this browser, which binds the CSRF token of the
  forms shown before a session exists (sign-in: login CSRF).

CSRF (synchronizer token, HMAC-based): every form carries `csrf`, a keyed hash of the
session id (signed in) or of the browser value (signed out), under a key of its own
purpose derived from the instance pepper. A state-changing request without the right
token is refused with 403 before anything runs."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from bastion.core.config import Settings
from bastion.core.crypto import random_token
from bastion.core.principal import Principal
from bastion.identity.tokens import TokenHasher

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; object-src 'none'"
)
# `form-action 'self'` holds through redirects: a form never leads the browser to another
# origin, so "Sign in with SSO" goes to the identity provider by navigation, not by form.

CSRF_FIELD = "csrf"
_PURPOSE = "console-csrf"
MFA_COOKIE_TTL = 300  # the mfa_token's own lifetime


def secure(settings: Settings) -> bool:
    return settings.public_url.startswith("https://")


def cookie_name(settings: Settings, name: str) -> str:
    return f"__Host-bastion-{name}" if secure(settings) else f"bastion-{name}"


def read_cookie(request: Request, settings: Settings, name: str) -> str | None:
    value = request.cookies.get(cookie_name(settings, name))
    if value is None or not 16 <= len(value) <= 400:
        return None
    return value


def set_cookie(
    response: Response, settings: Settings, name: str, value: str, max_age: int | None = None
) -> None:
    response.set_cookie(
        cookie_name(settings, name),
        value,
        max_age=max_age,
        path="/",
        secure=secure(settings),
        httponly=True,
        samesite="lax",
    )


def clear_cookie(response: Response, settings: Settings, name: str) -> None:
    response.delete_cookie(
        cookie_name(settings, name), path="/", secure=secure(settings), httponly=True,
        samesite="lax",
    )  # fmt: skip


def new_browser_value() -> str:
    return random_token(24)


def binding(principal: Principal | None, browser: str | None) -> str | None:
    """What a form's CSRF token is bound to: the session, else the browser."""
    if principal is not None and principal.session_id:
        return f"s:{principal.session_id}"
    if browser:
        return f"b:{browser}"
    return None


def csrf_token(hasher: TokenHasher, bound_to: str) -> str:
    digest, version = hasher.keyed(_PURPOSE, bound_to)
    return f"{version}.{digest}"


def csrf_valid(hasher: TokenHasher, bound_to: str | None, token: str | None) -> bool:
    if not bound_to or not token or len(token) > 100:
        return False
    version, _, digest = token.partition(".")
    if not version.isdigit() or not digest:
        return False
    return hasher.keyed_matches(_PURPOSE, bound_to, int(version), digest)

"""Errors of identity (rendered by the one problem-document handler).

    BastionError
    ├── InvalidInput
    │   ├── PasswordTooWeak    422  password_too_weak   shorter than the org's minimum,
    │   │                                               or contains a context word
    │   └── PasswordBreached   422  password_breached   in the bundled breached list
    ├── Unauthenticated
    │   └── SsoRequired        401  sso_required        the organisation signs this user in
    │                                                   through SSO (`sso_start_url`)
    └── Forbidden
        └── IpNotAllowed       403  ip_not_allowed      the caller's address is outside
                                                        its organisation's IP allowlist

Both password errors name the field (`errors[0].field`) and never echo the password.
"""

from __future__ import annotations

from bastion.core.errors import FieldError, Forbidden, InvalidInput, Unauthenticated


class PasswordTooWeak(InvalidInput):
    code = "password_too_weak"
    title = "Password too weak"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}", errors=[FieldError(field, message)])


class PasswordBreached(InvalidInput):
    code = "password_breached"
    title = "Password found in breaches"

    def __init__(self, field: str) -> None:
        message = "is a common or breached password; choose another"
        super().__init__(f"{field}: {message}", errors=[FieldError(field, message)])


class IpNotAllowed(Forbidden):
    code = "ip_not_allowed"
    title = "Address not allowed"

    def __init__(self) -> None:
        super().__init__("requests from this address are not allowed for this organisation")


class SsoRequired(Unauthenticated):
    """A password sign-in for someone whose organisation enforces SSO for their email
    domain: they start at `sso_start_url` instead (the problem document names it)."""

    code = "sso_required"
    title = "Sign in with SSO"

    def __init__(self, start_url: str) -> None:
        super().__init__(f"your organisation signs you in with SSO: start at {start_url}")
        self.extensions = {"sso_start_url": start_url}

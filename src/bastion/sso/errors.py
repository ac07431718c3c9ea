"""Errors of SSO.

    BastionError
    ├── BadReturnTo        400  invalid_return_to   `return_to` is neither a relative path
    │                                               nor an allowed origin (never followed)
    ├── BadState           400  sso_state_invalid   an unknown state: nowhere safe to return
    ├── DomainNotVerified  422  domain_not_verified the TXT record was not found
    └── SsoFailure         (not rendered)           a sign-in refused after its state was
                                                    known: 302 to `return_to?error=<code>`

`SsoFailure.code` is what the browser is told (a stable word, docs/sso.md lists them);
`detail` goes only to the audit trail, never a token or a stack trace.
"""

from __future__ import annotations

from bastion.core.errors import BastionError, FieldError, InvalidInput


class BadReturnTo(BastionError):
    status = 400
    code = "invalid_return_to"
    title = "return_to not allowed"

    def __init__(self) -> None:
        message = (
            "must be a relative path (e.g. /console/) or start with an origin listed in"
            " BASTION_ALLOWED_RETURN_ORIGINS"
        )
        super().__init__(f"return_to: {message}", errors=[FieldError("return_to", message)])


class BadState(BastionError):
    status = 400
    code = "sso_state_invalid"
    title = "Unknown or expired sign-in"


class DomainNotVerified(InvalidInput):
    code = "domain_not_verified"
    title = "Domain not verified"


class SsoFailure(Exception):
    """A sign-in that cannot go on: `code` for the browser, `detail` for the audit."""

    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(code)
        self.code = code
        self.detail = detail or code

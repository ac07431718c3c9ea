"""Errors of integrations.

    BastionError
    ├── BadReturnTo          400  invalid_return_to      `return_to` is neither a relative
    │                                                    path nor on this origin
    ├── BadState             400  integration_state_invalid  an unknown, used, expired or
    │                                                    another browser's state
    ├── NotConnected         409  integration_not_connected  no usable tokens (never
    │                                                    connected, or disconnected)
    └── ProviderUnavailable  503  integration_provider_unavailable  the provider did not
                                                         answer; try again
    ProviderError            (not rendered)  the provider refused or answered nonsense:
                                             `code` is a stable word, never a token

Details name what went wrong, never a token, a secret or what the caller sent.
"""

from __future__ import annotations

from bastion.core.errors import BastionError, FieldError


class BadReturnTo(BastionError):
    status = 400
    code = "invalid_return_to"
    title = "return_to not allowed"

    def __init__(self) -> None:
        message = "must be a relative path (e.g. /console/) or a URL on this server's origin"
        super().__init__(f"return_to: {message}", errors=[FieldError("return_to", message)])


class BadState(BastionError):
    status = 400
    code = "integration_state_invalid"
    title = "Unknown or expired connect request"


class NotConnected(BastionError):
    status = 409
    code = "integration_not_connected"
    title = "Integration not connected"


class ProviderUnavailable(BastionError):
    status = 503
    code = "integration_provider_unavailable"
    title = "Provider unavailable"


class ProviderError(Exception):
    """The provider answered with an error (`definitive`: it refused, e.g. a revoked
    grant) or could not be reached (transient). `code` is safe to show and audit."""

    def __init__(self, code: str, *, definitive: bool) -> None:
        super().__init__(code)
        self.code = code
        self.definitive = definitive

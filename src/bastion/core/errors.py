"""Domain errors, rendered as RFC 9457 problem documents by one handler in `bastion.api`.

    BastionError                       status  code
    ├── InvalidInput                   422     validation_failed   (names each bad field)
    ├── Unauthenticated                401     unauthenticated     (WWW-Authenticate: the
    │   │                                                          error's `challenge`, else Bearer)
    │   ├── StepUpRequired             401     step_up_required    (RFC 9470 challenge, `max_age`)
    │   └── CredentialExpired          401     credential_expired  (RFC 6750 invalid_token)
    ├── Forbidden                      403     forbidden           (audited as `denied`)
    │   └── MfaEnrolmentRequired       403     mfa_enrolment_required
    ├── NotFound                       404     not_found           (also: not visible to caller)
    ├── Conflict                       409     conflict
    ├── PayloadTooLarge                413     payload_too_large
    ├── UnsupportedMediaType           415     unsupported_media_type
    └── TooManyRequests                429     rate_limited        (Retry-After)

Domains subclass these for their own cases (e.g. `bastion.secrets.errors`,
`bastion.webhooks.errors`). Services raise these; they never raise HTTP framework
exceptions. Messages must never contain a secret: they are shown to callers verbatim.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Self


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str


class BastionError(Exception):
    status: int = 400
    code: str = "bad_request"
    title: str = "Bad request"

    def __init__(self, detail: str | None = None, *, errors: list[FieldError] | None = None):
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.errors = errors or []
        self.audit: dict[str, Any] | None = None
        # Writes that must outlive the failed request's rollback (a wrong MFA code
        # counts against its `mfa_token`): run with the audit event, after the rollback.
        self.writes: list[Callable[[Any], None]] = []

    def with_audit(self, **event: Any) -> Self:
        """Attach an audit event to be written after the failed change is rolled back
        (a failed sign-in must be recorded even though its transaction is not kept)."""
        self.audit = event
        return self

    def with_write(self, write: Callable[[Any], None]) -> Self:
        """Attach a write (`write(db)`) to run after the failed change is rolled back,
        in the transaction that records the failure's audit event."""
        self.writes.append(write)
        return self


class InvalidInput(BastionError):
    status = 422
    code = "validation_failed"
    title = "Validation failed"

    @classmethod
    def field(cls, field: str, message: str) -> InvalidInput:
        return cls(f"{field}: {message}", errors=[FieldError(field, message)])


class Unauthenticated(BastionError):
    status = 401
    code = "unauthenticated"
    title = "Authentication required"


class StepUpRequired(Unauthenticated):
    """The person's last verification is older than their organisation allows for this
    action (RFC 9470): verify again at `POST /v1/auth/step-up`, then retry."""

    code = "step_up_required"
    title = "Step-up authentication required"

    def __init__(self, detail: str | None = None, *, max_age: int):
        super().__init__(detail)
        self.max_age = max_age
        self.challenge = f'Bearer error="insufficient_user_authentication", max_age={max_age}'


class CredentialExpired(Unauthenticated):
    """A genuine credential (its secret verified) whose time is over: an expired API key,
    an expired or idle session, an agent run that expired or was ended. Said plainly so
    the caller knows to get a new one; an unknown or wrong credential keeps the generic
    401 (the secret was not verified: no oracle)."""

    code = "credential_expired"
    title = "Credential expired"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.challenge = (
            f'Bearer realm="bastion", error="invalid_token", error_description="{detail}"'
        )


class Forbidden(BastionError):
    status = 403
    code = "forbidden"
    title = "Forbidden"

    def __init__(self, detail: str | None = None, *, permission: str | None = None):
        super().__init__(detail)
        self.permission = permission


class MfaEnrolmentRequired(Forbidden):
    """The organisation requires this person to use a second factor and their session
    has none: only the `/v1/me/mfa…` enrolment endpoints answer until they enrol and
    sign in again (or step up with the new factor)."""

    code = "mfa_enrolment_required"
    title = "MFA enrolment required"


class NotFound(BastionError):
    status = 404
    code = "not_found"
    title = "Not found"


class Conflict(BastionError):
    status = 409
    code = "conflict"
    title = "Conflict"


class PayloadTooLarge(BastionError):
    status = 413
    code = "payload_too_large"
    title = "Payload too large"


class UnsupportedMediaType(BastionError):
    status = 415
    code = "unsupported_media_type"
    title = "Unsupported media type"


class TooManyRequests(BastionError):
    status = 429
    code = "rate_limited"
    title = "Too many requests"

    def __init__(self, detail: str | None = None, *, retry_after: int = 1):
        super().__init__(detail)
        self.retry_after = max(1, int(retry_after))

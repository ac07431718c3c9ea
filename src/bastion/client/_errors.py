"""Typed errors built from RFC 9457 problem documents.

BastionError
├── TransportError                (the request never got an HTTP answer)
├── ActionDenied                  (the tool-call gate did not allow a guarded action)
└── APIError                      (status, code, title, detail, request_id, errors)
    ├── AuthenticationError       401
    │   └── StepUpRequired        401 `step_up_required` (max_age, challenge: RFC 9470)
    ├── PermissionDeniedError     403
    ├── NotFoundError             404
    ├── ConflictError             409
    ├── ValidationError           413, 415, 422 (and other 4xx)
    ├── RateLimitError            429 (retry_after)
    └── ServerError               5xx
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any


class BastionError(Exception):
    """Base of every error the SDK raises."""


class TransportError(BastionError):
    """No HTTP response: connection refused, reset, timed out."""


class ActionDenied(BastionError):
    """The gate did not allow a tool call: it denied it (`decision == "deny"`, with the
    gate's `reason`: `approval_denied`, `approval_expired`, `undeclared_tool`, `policy:…`,
    …), or nobody decided within the guard's timeout (`decision == "pending"`,
    `reason == "approval_timeout"`). The wrapped function did not run."""

    def __init__(
        self,
        tool: str,
        *,
        call_id: str | None,
        approval_id: str | None,
        decision: str,
        reason: str,
    ) -> None:
        where = f" (approval {approval_id})" if approval_id else ""
        super().__init__(f"{tool}: {decision}, {reason}{where}")
        self.tool = tool
        self.call_id = call_id
        self.approval_id = approval_id
        self.decision = decision
        self.reason = reason


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str


class APIError(BastionError):
    def __init__(
        self,
        status: int,
        code: str,
        title: str,
        detail: str,
        request_id: str | None,
        errors: list[FieldError],
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.title = title
        self.detail = detail
        self.request_id = request_id
        self.errors = errors
        self.retry_after = retry_after


class AuthenticationError(APIError):
    pass


class StepUpRequired(AuthenticationError):
    """The action needs a more recent verification of the person (RFC 9470): call
    `auth.step_up(...)` and retry. `max_age` is the organisation's window in seconds;
    `challenge` the server's `WWW-Authenticate` header."""

    def __init__(self, *args: Any, max_age: int | None, challenge: str | None) -> None:
        super().__init__(*args)
        self.max_age = max_age
        self.challenge = challenge


class PermissionDeniedError(APIError):
    pass


class NotFoundError(APIError):
    pass


class ConflictError(APIError):
    pass


class ValidationError(APIError):
    pass


class RateLimitError(APIError):
    pass


class ServerError(APIError):
    pass


_BY_STATUS: dict[int, type[APIError]] = {
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    429: RateLimitError,
}


_MAX_AGE = re.compile(r"max_age=\"?(\d+)")


def from_response(
    status: int, body: Any, retry_after: str | None, www_authenticate: str | None = None
) -> APIError:
    doc = body if isinstance(body, dict) else {}
    errors = [
        FieldError(str(e.get("field", "")), str(e.get("message", "")))
        for e in doc.get("errors") or []
        if isinstance(e, dict)
    ]
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else ValidationError)
    wait = None
    if retry_after is not None:
        try:
            wait = float(retry_after)
        except ValueError:
            wait = None
    # A problem document, or an OAuth error object (RFC 6749 §5.2: `error`,
    # `error_description`) from the OAuth endpoints.
    args = (
        status,
        str(doc.get("code", doc.get("error", "error"))),
        str(doc.get("title", "")),
        str(doc.get("detail", doc.get("error_description", ""))),
        doc.get("request_id"),
        errors,
        wait,
    )
    if status == 401 and doc.get("code") == "step_up_required":
        found = _MAX_AGE.search(www_authenticate or "")
        max_age = int(found.group(1)) if found else None
        return StepUpRequired(*args, max_age=max_age, challenge=www_authenticate)
    return cls(*args)

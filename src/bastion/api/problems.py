"""RFC 9457 problem documents: the single place errors become HTTP responses."""

from __future__ import annotations

import json
from typing import Any

from bastion.core.errors import BastionError, FieldError

PROBLEM_TYPE_BASE = "https://bastion.dev/problems/"
BEARER_CHALLENGE = 'Bearer realm="bastion"'


def problem_body(
    status: int,
    code: str,
    title: str,
    detail: str,
    request_id: str | None,
    errors: list[FieldError] | None = None,
) -> dict[str, Any]:
    return {
        "type": PROBLEM_TYPE_BASE + code,
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        "request_id": request_id,
        "errors": [{"field": e.field, "message": e.message} for e in errors or []],
    }


def problem_headers(error: BastionError | None, status: int) -> dict[str, str]:
    headers = {"content-type": "application/problem+json"}
    if status == 401:  # the error names its scheme when it is not a bearer token
        headers["www-authenticate"] = getattr(error, "challenge", None) or BEARER_CHALLENGE
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:
        headers["retry-after"] = str(retry_after)
    return headers


def encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def from_error(error: BastionError, request_id: str | None) -> tuple[int, dict[str, str], bytes]:
    body = problem_body(
        error.status, error.code, error.title, error.detail, request_id, error.errors
    )
    # RFC 9457 extension members an error declares (e.g. `sso_start_url`), never
    # overriding a standard member.
    for name, value in (getattr(error, "extensions", None) or {}).items():
        body.setdefault(name, value)
    return error.status, problem_headers(error, error.status), encode(body)


GENERIC = {
    400: ("bad_request", "Bad request"),
    401: ("unauthenticated", "Authentication required"),
    403: ("forbidden", "Forbidden"),
    404: ("not_found", "Not found"),
    405: ("method_not_allowed", "Method not allowed"),
    409: ("conflict", "Conflict"),
    413: ("payload_too_large", "Payload too large"),
    415: ("unsupported_media_type", "Unsupported media type"),
    422: ("validation_failed", "Validation failed"),
    429: ("rate_limited", "Too many requests"),
    500: ("internal_error", "Internal server error"),
    503: ("unavailable", "Service unavailable"),
}

# Seconds a client is asked to wait before retrying a write refused as busy.
BUSY_RETRY_AFTER = 1


def generic(
    status: int, detail: str | None, request_id: str | None, errors: list[FieldError] | None = None
) -> tuple[int, dict[str, str], bytes]:
    code, title = GENERIC.get(status, ("error", "Error"))
    body = problem_body(status, code, title, detail or title, request_id, errors)
    return status, problem_headers(None, status), encode(body)


def database_busy(request_id: str | None) -> tuple[int, dict[str, str], bytes]:
    """503 for a write the database could not take in time (SQLite busy or locked, a
    PostgreSQL lock timeout or lost connection): nothing was changed; retry."""
    detail = "the database is busy; nothing was changed, retry shortly"
    body = problem_body(503, "database_busy", "Service unavailable", detail, request_id)
    headers = problem_headers(None, 503)
    headers["retry-after"] = str(BUSY_RETRY_AFTER)
    return 503, headers, encode(body)


def idempotency_key_in_use(request_id: str | None) -> tuple[int, dict[str, str], bytes]:
    """409 for the later of two requests with one Idempotency-Key that ran at once."""
    detail = "a request with this Idempotency-Key was answered meanwhile; retry"
    body = problem_body(409, "idempotency_key_in_use", "Conflict", detail, request_id)
    return 409, problem_headers(None, 409), encode(body)


# --- OpenAPI description of the error responses -----------------------------------

from pydantic import BaseModel  # noqa: E402 - documentation models after the runtime code


class ProblemField(BaseModel):
    field: str
    message: str


class Problem(BaseModel):
    """RFC 9457 problem document."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    request_id: str | None
    errors: list[ProblemField]


def _doc(description: str) -> dict[str, Any]:
    return {
        "model": Problem,
        "description": description,
        "content": {"application/problem+json": {}},
    }


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _doc("Malformed request"),
    401: _doc("Missing, invalid or expired credential"),
    403: _doc("Authenticated but not permitted"),
    404: _doc("Not found, or not visible to the caller"),
    409: _doc("Conflicts with the current state"),
    413: _doc("Request body too large"),
    415: _doc("Body is not JSON"),
    422: _doc("Validation failed; each bad field is named"),
    429: _doc("Rate limited; see Retry-After"),
}

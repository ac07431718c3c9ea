"""Exception handlers: domain errors, validation errors and framework errors all leave as
RFC 9457 problem documents, and the ones that must be audited are queued for it."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DataError, IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from bastion.api import problems
from bastion.api.context import SCOPE_KEY, RequestContext
from bastion.audit.events import EventType, Outcome
from bastion.core.errors import BastionError, FieldError, Forbidden


def _ctx(request: Request) -> RequestContext | None:
    ctx: RequestContext | None = request.scope.get(SCOPE_KEY)
    return ctx


def _rid(request: Request) -> str | None:
    ctx = _ctx(request)
    return ctx.request_id if ctx else None


def _response(status: int, headers: dict[str, str], body: bytes) -> Response:
    return Response(content=body, status_code=status, headers=headers)


def _field_name(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    return ".".join(parts) or "body"


async def on_domain_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, BastionError):  # registered for this type only
        raise exc
    ctx = _ctx(request)
    if ctx is not None:
        if exc.audit is not None:
            ctx.failure_events.append(exc.audit)
        if isinstance(exc, Forbidden) and ctx.principal is not None:
            ctx.failure_events.append(
                {
                    "type": EventType.AUTHZ_DENIED,
                    "actor": ctx.principal.actor,
                    "org_id": ctx.principal.org_id,
                    "outcome": Outcome.DENIED,
                    "reason": exc.detail,
                    "metadata": {
                        "permission": exc.permission,
                        "method": ctx.method,
                        "path": ctx.path,
                    },
                }
            )
    return _response(*problems.from_error(exc, _rid(request)))


async def on_validation_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, RequestValidationError):  # registered for this type only
        raise exc
    errors = []
    for err in exc.errors():
        message = str(err.get("msg", "is invalid"))
        # Never echo the offending input back: it might be a secret.
        errors.append(FieldError(_field_name(tuple(err.get("loc", ()))), message))
    names = ", ".join(sorted({e.field for e in errors}))
    return _response(*problems.generic(422, f"invalid fields: {names}", _rid(request), errors))


async def on_http_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, StarletteHTTPException):  # registered for this type only
        raise exc
    detail = exc.detail if isinstance(exc.detail, str) else None
    status, headers, body = problems.generic(exc.status_code, detail, _rid(request))
    if exc.headers:
        headers.update(exc.headers)
    return _response(status, headers, body)


async def on_integrity_error(request: Request, exc: Exception) -> Response:
    return _response(
        *problems.generic(409, "the change conflicts with existing data", _rid(request))
    )


async def on_data_error(request: Request, exc: Exception) -> Response:
    # Defence in depth: validation at the edge should have refused the value already.
    return _response(
        *problems.generic(422, "a value cannot be stored (out of range or invalid)", _rid(request))
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(BastionError, on_domain_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(IntegrityError, on_integrity_error)
    app.add_exception_handler(DataError, on_data_error)

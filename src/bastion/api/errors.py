"""Exception handlers: domain errors, validation errors and framework errors all leave as
RFC 9457 problem documents, and the ones that must be audited are queued for it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DataError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response
from starlette.routing import Match

from bastion.api import problems
from bastion.api.context import SCOPE_KEY, RequestContext
from bastion.api.failures import note, note_event
from bastion.core.db import database_busy
from bastion.core.errors import BastionError, FieldError, Forbidden, NotFound, TooManyRequests
from bastion.core.events import EventType, Outcome
from bastion.core.ratelimit import RateLimiter
from bastion.core.schemas import In
from bastion.identity.errors import IpNotAllowed
from bastion.oauth.errors import OAuthError
from bastion.webhooks.errors import SignatureRejected


def _ctx(request: Request) -> RequestContext | None:
    ctx: RequestContext | None = request.scope.get(SCOPE_KEY)
    return ctx


def _rid(request: Request) -> str | None:
    ctx = _ctx(request)
    return ctx.request_id if ctx else None


def _response(status: int, headers: dict[str, str], body: bytes) -> Response:
    return Response(content=body, status_code=status, headers=headers)


@cache
def _declared() -> frozenset[str]:
    """Every field name a request body declares (of every `In` model)."""
    names: set[str] = set()
    stack: list[type[In]] = [In]
    while stack:
        model = stack.pop()
        stack.extend(model.__subclasses__())
        for name, info in model.model_fields.items():
            names.add(name)
            if info.alias:
                names.add(info.alias)
    return frozenset(names)


def _field_name(loc: tuple[Any, ...]) -> str:
    """The field's path, from names the API declares and list positions only: a key of
    the caller's (an unknown field, a key of a free-form object) is shown as `*`."""
    if loc and loc[0] in ("query", "path", "header", "cookie"):
        return ".".join(str(p) for p in loc[1:2]) or str(loc[0])  # a declared parameter
    parts = loc[1:] if loc and loc[0] == "body" else loc
    declared = _declared()
    shown = [str(p) if isinstance(p, int) or p in declared else "*" for p in parts]
    return ".".join(shown) or "body"


# Pydantic error types whose message quotes the input (a discriminator's value).
_QUOTING = {"union_tag_invalid": "is not one of the expected kinds"}


def _message(err: Mapping[str, Any]) -> str:
    """Pydantic's message, unless it would repeat what the caller sent."""
    kind = str(err.get("type", ""))
    message = str(err.get("msg", "is invalid"))
    if kind in _QUOTING:
        return _QUOTING[kind]
    if kind == "value_error" and "email address" in message:
        return "is not a valid email address"  # email-validator quotes offending characters
    given = err.get("input")
    if isinstance(given, str | int | float) and len(str(given)) >= 3 and str(given) in message:
        return "is invalid"
    return message


async def domain_problem(
    ctx: RequestContext | None, limiter: RateLimiter, exc: BastionError
) -> tuple[int, dict[str, str], bytes]:
    """A domain error's problem document, with its audit trace queued on `ctx`: shared by
    the app's handler and the lean routes (`bastion.api.fast`), so both answer alike."""
    if ctx is not None:
        if isinstance(exc, SignatureRejected) and exc.audit is not None:
            # Anyone can send a forged delivery: sampled per endpoint, so a flood of them
            # does not queue one write each.
            resource = exc.audit.get("resource") or ("", "")
            await note_event(ctx, limiter, exc.audit, f"{resource[0]}:{resource[1]}")
        elif isinstance(exc, IpNotAllowed) and exc.audit is not None:
            # A flood from outside an allowlist: sampled per organisation and address.
            await note_event(ctx, limiter, exc.audit, f"{exc.audit.get('org_id')}:{ctx.ip}")
        elif exc.audit is not None:
            ctx.failure_events.append(exc.audit)
        ctx.failure_writes.extend(exc.writes)
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
        if isinstance(exc, NotFound):
            # Another organisation's object is a 404 like a missing one: probing for them
            # is traced in the caller's own trail (anonymous callers get 401 first).
            await note(ctx, limiter, EventType.AUTHZ_NOT_FOUND, status=404, anonymous=False)
        elif exc.status == 422:
            await _invalid(ctx, limiter)
        elif isinstance(exc, TooManyRequests) and exc.audit is None:  # sign-in has its own
            await note(ctx, limiter, EventType.REQUEST_RATE_LIMITED, status=429)
    return problems.from_error(exc, ctx.request_id if ctx else None)


async def on_domain_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, BastionError):  # registered for this type only
        raise exc
    return _response(*await domain_problem(_ctx(request), _limiter(request), exc))


def _limiter(request: Request) -> RateLimiter:
    limiter: RateLimiter = request.app.state.bastion.limiter
    return limiter


async def _invalid(ctx: RequestContext | None, limiter: RateLimiter) -> None:
    """A validation failure is a security event (OWASP ASVS V16), counted per caller."""
    if ctx is not None:
        await note(ctx, limiter, EventType.REQUEST_INVALID, status=422, outcome=Outcome.FAILURE)


async def validation_problem(
    ctx: RequestContext | None,
    limiter: RateLimiter,
    errors: Sequence[Mapping[str, Any]],
    body: Any = None,
) -> tuple[int, dict[str, str], bytes]:
    """Pydantic's (or FastAPI's) errors as a 422, for the app's handler and the lean
    routes alike. Never echo the offending input back, not even the name of a field the
    API does not declare: it might be a secret, or markup a console would render. A body
    that is not JSON at all is said so, with where (`body`, the document FastAPI
    could not decode), not as a field named after the byte offset."""
    await _invalid(ctx, limiter)
    rid = ctx.request_id if ctx else None
    undecodable = next((e for e in errors if e.get("type") == "json_invalid"), None)
    if undecodable is not None:
        where = _json_position(body, undecodable.get("loc", ()))
        message = f"invalid JSON{where}"
        return problems.generic(422, f"body: {message}", rid, [FieldError("body", message)])
    fields = [FieldError(_field_name(tuple(err.get("loc", ()))), _message(err)) for err in errors]
    names = ", ".join(sorted({e.field for e in fields}))
    return problems.generic(422, f"invalid fields: {names}", rid, fields)


def _json_position(body: Any, loc: Sequence[Any]) -> str:
    """ " at line L column C" of the character offset in `loc` (as `json` counts them),
    or "" when the document or the offset is not at hand."""
    pos = loc[1] if len(loc) == 2 and isinstance(loc[1], int) else None
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if pos is None or not isinstance(body, str) or not 0 <= pos <= len(body):
        return ""
    line = body.count("\n", 0, pos) + 1
    column = pos - body.rfind("\n", 0, pos)
    return f" at line {line} column {column}"


async def on_validation_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, RequestValidationError):  # registered for this type only
        raise exc
    problem = await validation_problem(_ctx(request), _limiter(request), exc.errors(), exc.body)
    return _response(*problem)


async def on_http_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, StarletteHTTPException):  # registered for this type only
        raise exc
    status, headers, body = http_problem(exc, _rid(request))
    if status == 405:  # in place of Starlette's `Allow`, not beside it
        headers = {k: v for k, v in headers.items() if k.lower() != "allow"}
        headers["allow"] = _allowed_methods(request)
    return _response(status, headers, body)


def _allowed_methods(request: Request) -> str:
    """Every method the path answers to. Starlette's 405 names those of the first route
    whose path matched, and each FastAPI route has one method: `PUT .../teams` said
    `Allow: POST` where both GET and POST are there."""
    methods = []
    for method in _METHODS:
        # Each route asked as the router would ask it (FastAPI nests included routers),
        # on a scope of its own: matching records its findings in the scope.
        probe = {k: v for k, v in request.scope.items() if k != "fastapi"} | {"method": method}
        if any(route.matches(probe)[0] is Match.FULL for route in request.app.router.routes):
            methods.append(method)
    return ", ".join(methods)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def http_problem(
    exc: StarletteHTTPException, request_id: str | None
) -> tuple[int, dict[str, str], bytes]:
    detail = exc.detail if isinstance(exc.detail, str) else None
    status, headers, body = problems.generic(exc.status_code, detail, request_id)
    if exc.headers:
        headers.update(exc.headers)
    return status, headers, body


def _conflict(request_id: str | None) -> tuple[int, dict[str, str], bytes]:
    return problems.generic(409, "the change conflicts with existing data", request_id)


async def data_problem(
    ctx: RequestContext | None, limiter: RateLimiter
) -> tuple[int, dict[str, str], bytes]:
    # Defence in depth: validation at the edge should have refused the value already.
    await _invalid(ctx, limiter)
    rid = ctx.request_id if ctx else None
    return problems.generic(422, "a value cannot be stored (out of range or invalid)", rid)


async def on_integrity_error(request: Request, exc: Exception) -> Response:
    return _response(*_conflict(_rid(request)))


async def on_database_busy(request: Request, exc: Exception) -> Response:
    if not database_busy(exc):
        raise exc  # another operational error (a schema problem, a full disk): a 500
    return _response(*problems.database_busy(_rid(request)))


async def on_data_error(request: Request, exc: Exception) -> Response:
    return _response(*await data_problem(_ctx(request), _limiter(request)))


async def problem_for(
    ctx: RequestContext, limiter: RateLimiter, exc: Exception
) -> tuple[int, dict[str, str], bytes] | None:
    """What the handlers `install` registers answer for `exc`, for a route served outside
    the framework (`bastion.api.fast`); None for an error they leave to the middleware
    (a 500). A 405 needs the router, and those routes never raise one."""
    rid = ctx.request_id
    if isinstance(exc, BastionError):
        return await domain_problem(ctx, limiter, exc)
    if isinstance(exc, RequestValidationError):
        return await validation_problem(ctx, limiter, exc.errors(), exc.body)
    if isinstance(exc, StarletteHTTPException) and exc.status_code != 405:
        return http_problem(exc, rid)
    if isinstance(exc, IntegrityError):
        return _conflict(rid)
    if isinstance(exc, DataError):
        return await data_problem(ctx, limiter)
    if isinstance(exc, OperationalError | PoolTimeout) and database_busy(exc):
        return problems.database_busy(rid)
    return None


async def on_unexpected(request: Request, exc: Exception) -> Response:
    """A 500 for an error nothing else answers, in the shape `BastionMiddleware` sends
    for one; the exception goes on to the middleware, which logs it and discards the
    request's work."""
    return _response(*problems.generic(500, "internal error", _rid(request)))


async def on_oauth_error(request: Request, exc: Exception) -> Response:
    """An RFC 6749 §5.2 error response (OAuth clients read these, not problem documents);
    its audit event sampled per client and address, as anyone can cause one."""
    if not isinstance(exc, OAuthError):  # registered for this type only
        raise exc
    ctx = _ctx(request)
    if ctx is not None and exc.audit is not None:
        resource = exc.audit.get("resource") or ("", "")
        await note_event(ctx, _limiter(request), exc.audit, f"{resource[1]}:{ctx.ip}")
    headers = {"cache-control": "no-store", "pragma": "no-cache"}
    if exc.challenge:
        headers["www-authenticate"] = 'Basic realm="bastion", charset="UTF-8"'
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


def install(app: FastAPI) -> None:
    app.add_exception_handler(Exception, on_unexpected)
    app.add_exception_handler(OAuthError, on_oauth_error)
    app.add_exception_handler(BastionError, on_domain_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(IntegrityError, on_integrity_error)
    app.add_exception_handler(DataError, on_data_error)
    app.add_exception_handler(OperationalError, on_database_busy)
    app.add_exception_handler(PoolTimeout, on_database_busy)

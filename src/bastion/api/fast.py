"""The hot routes without the framework: `GET /v1/me`, the authorization questions
(check, check-batch, filter), the tool-call gate, secret reveal, webhook deliveries,
team creation (the audited writes of issue 13's goal), privacy scans (issue 17's
texts per second through the API) and the MCP gateway (`/v1/runs/{run}/mcp`, issue 18:
handed to its own ASGI app, `serve_gateway`).

Their work takes tens of microseconds; FastAPI's routing and dependency resolution and
Starlette's middleware stack cost several times that (issue 13: `/v1/me` spent ~37 µs
of ~190 µs on its work). `BastionMiddleware` hands these requests here in place of the
app, after its own checks (request id, body limit, content type, address quota,
idempotent replay) and before its commit, failure events and headers: only the
framework is skipped.

Each handler does what its route and dependencies do, through the same functions:
`deps.authenticate_request` (as `get_principal`), the routers' answer functions (as the
routes), `errors.problem_for` (as the exception handlers). The body is read as FastAPI
reads it — undecodable JSON is refused before authentication, an invalid body after it
— and the answer is serialised from the same response model, with the same status and
headers. The routes stay registered, so the OpenAPI document is unchanged. Proof:
`tests/api/test_fast_path.py` sends one corpus to an app with and one without this path
(`Settings.fast_path`) and compares the answers.
"""

from __future__ import annotations

import email.message
import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException

from bastion.agents.schemas import ToolCallIn
from bastion.api.context import SCOPE_KEY, RequestContext
from bastion.api.deps import authenticate_request, bearer_token
from bastion.api.errors import problem_for
from bastion.api.routers.access import check_many, check_one, filter_allowed
from bastion.api.routers.agents import ask_gate
from bastion.api.routers.me import me_out
from bastion.api.routers.privacy import scan_answer
from bastion.api.routers.secrets import reveal_answer
from bastion.api.routers.teams import create_team_answer
from bastion.api.routers.webhooks import accept_delivery
from bastion.api.state import AppState
from bastion.authz.schemas import CheckBatchIn, CheckIn, FilterIn
from bastion.core.principal import Principal
from bastion.core.schemas import SecretName
from bastion.privacy.schemas import ScanIn
from bastion.secrets.schemas import RevealIn
from bastion.tenancy.schemas import TeamCreate

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# What a route computes once its caller and body are known: (state, ctx, principal,
# path parameters, body) → the response model, or its JSON already serialised.
Answer = Callable[
    [AppState, RequestContext, Principal, tuple[str, ...], Any], Awaitable[BaseModel | bytes]
]
# A route whose credential is the request itself (a signed delivery): (state, ctx, path
# parameters, headers, raw body) → the response model.
PublicAnswer = Callable[
    [AppState, RequestContext, tuple[str, ...], Headers, bytes], Awaitable[BaseModel]
]


@dataclass(frozen=True, slots=True)
class Route:
    template: str  # the FastAPI route's path, as `RUN_TOKEN_ROUTES` names it
    body: type[BaseModel] | None
    status: int
    answer: Answer
    # Path parameters FastAPI validates (by position; None: any one segment), as the
    # route declares them.
    checked: tuple[tuple[str, TypeAdapter[Any]] | None, ...] = ()


@dataclass(frozen=True, slots=True)
class PublicRoute:
    """A route without bearer authentication (its answer authenticates the request)."""

    template: str
    status: int
    answer: PublicAnswer


class _Missing:
    """No body was sent (FastAPI's `Undefined`): the model is then a missing field."""


_MISSING = _Missing()


Params = tuple[str, ...]


async def _me(
    state: AppState, ctx: RequestContext, principal: Principal, _: Params, __: Any
) -> BaseModel:
    return me_out(principal)


async def _check(
    state: AppState, ctx: RequestContext, principal: Principal, params: Params, body: Any
) -> BaseModel:
    return await check_one(state, params[0], body, principal)


async def _check_batch(
    state: AppState, ctx: RequestContext, principal: Principal, params: Params, body: Any
) -> BaseModel:
    return await check_many(state, params[0], body, principal)


async def _filter(
    state: AppState, ctx: RequestContext, principal: Principal, params: Params, body: Any
) -> BaseModel:
    return await filter_allowed(state, params[0], body, principal)


async def _tool_call(
    state: AppState, ctx: RequestContext, principal: Principal, params: Params, body: Any
) -> BaseModel:
    idempotent = ctx.headers.get(b"idempotency-key") is not None
    return await ask_gate(state, ctx, principal, params[0], body, idempotent)


async def _reveal(
    state: AppState, ctx: RequestContext, principal: Principal, params: Params, body: Any
) -> BaseModel:
    return await reveal_answer(state, ctx, principal, params[0], params[1], body)


async def _delivery(
    state: AppState, ctx: RequestContext, params: Params, headers: Headers, body: bytes
) -> BaseModel:
    return await accept_delivery(state, ctx, params[0], headers, body)


async def _scan(
    state: AppState, ctx: RequestContext, principal: Principal, params: Params, body: Any
) -> bytes:
    return await scan_answer(principal, params[0], body)


async def _team(
    state: AppState, ctx: RequestContext, principal: Principal, params: Params, body: Any
) -> BaseModel:
    return create_team_answer(ctx, principal, params[0], body)


ME = Route("/v1/me", None, 200, _me)
CHECK = Route("/v1/orgs/{org}/authz/check", CheckIn, 200, _check)
CHECK_BATCH = Route("/v1/orgs/{org}/authz/check-batch", CheckBatchIn, 200, _check_batch)
FILTER = Route("/v1/orgs/{org}/authz/filter", FilterIn, 200, _filter)
TOOL_CALL = Route("/v1/runs/{run}/tool-calls", ToolCallIn, 201, _tool_call)
REVEAL = Route(
    "/v1/orgs/{org}/secrets/{name}/reveal",
    RevealIn,
    200,
    _reveal,
    checked=(None, ("name", TypeAdapter(SecretName))),
)

TEAM = Route("/v1/orgs/{org}/teams", TeamCreate, 201, _team)
SCAN = Route("/v1/orgs/{org}/privacy/scan", ScanIn, 200, _scan)
DELIVERY = PublicRoute("/v1/hooks/{endpoint}", 202, _delivery)

_ORG_ROUTES = {
    "authz/check": CHECK,
    "authz/check-batch": CHECK_BATCH,
    "authz/filter": FILTER,
    "teams": TEAM,
    "privacy/scan": SCAN,
}
_ORGS = "/v1/orgs/"
_RUNS = "/v1/runs/"
_HOOKS = "/v1/hooks/"
_SECRETS = "secrets/"
_REVEAL = "/reveal"


MCP_GATEWAY = "/v1/runs/{run}/mcp"  # served by the MCP gateway's own ASGI app
_MCP = "/mcp"
_GATEWAY_METHODS = frozenset({"GET", "POST", "DELETE"})  # its route's; others: the app's 405


def match_gateway(method: str, path: str) -> str | None:
    """The run of a request to the MCP gateway (`MCP_GATEWAY`, a method its route
    serves), else None: the gateway speaks MCP through its own ASGI app, so only the
    framework's routing and its middleware stack are skipped."""
    if method not in _GATEWAY_METHODS or not path.startswith(_RUNS) or not path.endswith(_MCP):
        return None
    run = path[len(_RUNS) : -len(_MCP)]
    return run if run and "/" not in run else None


def match(method: str, path: str) -> tuple[Route | PublicRoute, Params] | None:
    """The lean route for a request and its path parameters, by plain string tests (a
    parameter is one non-empty segment, as Starlette's `{name}` matches); None for
    every other request, which the app serves."""
    if method == "POST":
        if path.startswith(_ORGS):
            org, _, rest = path[len(_ORGS) :].partition("/")
            if not org:
                return None
            route = _ORG_ROUTES.get(rest)
            if route is not None:
                return route, (org,)
            if rest.startswith(_SECRETS) and rest.endswith(_REVEAL):
                name = rest[len(_SECRETS) : -len(_REVEAL)]
                if name and "/" not in name:
                    return REVEAL, (org, name)
        elif path.startswith(_RUNS):
            run, _, rest = path[len(_RUNS) :].partition("/")
            if rest == "tool-calls" and run:
                return TOOL_CALL, (run,)
        elif path.startswith(_HOOKS):
            endpoint = path[len(_HOOKS) :]
            if endpoint and "/" not in endpoint:
                return DELIVERY, (endpoint,)
    elif method == "GET" and path == "/v1/me":
        return ME, ()
    return None


async def serve(
    state: AppState,
    route: Route | PublicRoute,
    params: Params,
    scope: Scope,
    receive: Receive,
    send: Send,
) -> None:
    """Answer one request to `route`, as the app would (see the module docstring)."""
    ctx: RequestContext = scope[SCOPE_KEY]
    out: BaseModel | bytes
    try:
        if isinstance(route, PublicRoute):
            body = (await receive()).get("body", b"")  # the whole body (the middleware's)
            out = await route.answer(state, ctx, params, Headers(scope=scope), body)
        else:
            out = await _authenticated(state, route, params, ctx, receive)
    except Exception as exc:
        await _problem(state, ctx, exc, send)
        return
    if isinstance(out, bytes):
        content = out
    else:
        content = type(out).__pydantic_serializer__.to_json(out, by_alias=True)
    await _respond(
        send,
        route.status,
        [(b"content-length", str(len(content)).encode()), (b"content-type", b"application/json")],
        content,
    )


async def serve_gateway(
    state: AppState, gateway: ASGIApp, run: str, scope: Scope, receive: Receive, send: Send
) -> None:
    """Hand a request of `MCP_GATEWAY` to the gateway's own ASGI app, as the framework's
    route would (its path parameter in the scope), and answer an error it raises before
    answering (a missing or wrong run token) as the app's exception handlers do."""
    ctx: RequestContext = scope[SCOPE_KEY]
    scope["path_params"] = {"run": run}
    started = False

    async def tracked(message: Message) -> None:
        nonlocal started
        started = started or message["type"] == "http.response.start"
        await send(message)

    try:
        await gateway(scope, receive, tracked)
    except Exception as exc:
        if started:
            raise  # the middleware's handling, as for the app
        await _problem(state, ctx, exc, send)


async def _problem(state: AppState, ctx: RequestContext, exc: Exception, send: Send) -> None:
    """The problem document the app's exception handlers answer for `exc`."""
    problem = await problem_for(ctx, state.limiter, exc)
    if problem is None:
        raise exc  # the middleware's 500, as for the app
    status, headers, content = problem
    listed = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    listed.append((b"content-length", str(len(content)).encode("latin-1")))
    await _respond(send, status, listed, content)


async def _authenticated(
    state: AppState, route: Route, params: Params, ctx: RequestContext, receive: Receive
) -> BaseModel | bytes:
    parsed: BaseModel | None = None
    raw: Any = _MISSING
    if route.body is not None:
        body = (await receive()).get("body", b"")
        parsed, raw = _decode(route.body, body, ctx.headers.get(b"content-type"))
    token = bearer_token(ctx.headers.get(b"authorization"))
    principal = await authenticate_request(ctx, state, token, route.template)
    if route.checked:
        _check_params(route, params, parsed, raw)
    if route.body is not None and parsed is None:
        parsed = _validate(route.body, raw)
    return await route.answer(state, ctx, principal, params, parsed)


async def _respond(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    """The two messages Starlette's `Response` sends."""
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _decode(
    model: type[BaseModel], body: bytes, content_type: str | None
) -> tuple[BaseModel | None, Any]:
    """The body as FastAPI's request handler reads it before any dependency runs:
    (the model, None) when valid, else (None, what validation will be given after
    authentication). Raises as FastAPI does for JSON it cannot decode (422) or a body
    it cannot read at all (400)."""
    if not body:
        return None, _MISSING
    if not _json_type(content_type):
        return None, body  # validated as bytes, and refused, like the app does
    try:
        # The common case in one pass; any failure is answered by FastAPI's own steps.
        return model.model_validate_json(body), None
    except ValidationError:
        pass
    try:
        return None, json.loads(body)
    except json.JSONDecodeError as e:
        error = {
            "type": "json_invalid",
            "loc": ("body", e.pos),
            "msg": "JSON decode error",
            "input": {},
            "ctx": {"error": e.msg},
        }
        raise RequestValidationError([error], body=e.doc) from e
    except Exception as e:
        raise HTTPException(status_code=400, detail="There was an error parsing the body") from e


def _json_type(content_type: str | None) -> bool:
    """Whether FastAPI parses a body of this content type as JSON."""
    if content_type == "application/json":
        return True
    if not content_type:
        return False  # FastAPI's strict content type (the middleware answered 415 first)
    message = email.message.Message()
    message["content-type"] = content_type
    if message.get_content_maintype() != "application":
        return False
    subtype = message.get_content_subtype()
    return subtype == "json" or subtype.endswith("+json")


def _check_params(route: Route, params: Params, parsed: BaseModel | None, raw: Any) -> None:
    """Refuse invalid path parameters as FastAPI does: after authentication, with the
    body's errors after theirs in one 422."""
    errors: list[dict[str, Any]] = []
    for value, checked in zip(params, route.checked, strict=True):
        if checked is None:
            continue
        name, adapter = checked
        try:
            adapter.validate_python(value)
        except ValidationError as exc:
            errors += [{**e, "loc": ("path", name)} for e in exc.errors(include_url=False)]
    if not errors:
        return
    if route.body is not None and parsed is None:
        try:
            _validate(route.body, raw)
        except RequestValidationError as exc:
            errors += list(exc.errors())
    raise RequestValidationError(errors)


def _validate(model: type[BaseModel], raw: Any) -> BaseModel:
    """Validate a decoded body as FastAPI does (Python mode, attributes allowed, errors
    located under `body`)."""
    if raw is _MISSING:
        missing = {"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}
        raise RequestValidationError([missing])
    try:
        return model.model_validate(raw, from_attributes=True)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None

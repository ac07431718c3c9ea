"""SCIM: the organisation's SCIM tokens (`/v1/orgs/{org}/scim-tokens`, problem documents
as everywhere in /v1) and the SCIM 2.0 service itself, a sub-application mounted at
`/scim/v2` (RFC 7644): `application/scim+json`, SCIM error documents for every error
(its own handlers; the middleware's errors are translated in `Responder.problem`), and
only SCIM tokens as bearer."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import structlog
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DataError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from bastion.api import errors as api_errors
from bastion.api import problems
from bastion.api.context import SCOPE_KEY, RequestContext
from bastion.api.deps import DB, DEFAULT_PAGE, Caller, Cursor, Limit, State, authenticate_scim
from bastion.api.deps import bearer_token as read_bearer
from bastion.api.state import AppState
from bastion.core.errors import BastionError
from bastion.core.schemas import In, ListOf, Name, Out
from bastion.scim import discovery, service
from bastion.scim import errors as scim_errors
from bastion.scim.errors import ScimError
from bastion.scim.models import ScimToken

log = structlog.get_logger("bastion.scim")

# --- tokens (/v1) -------------------------------------------------------------------

router = APIRouter(prefix="/v1/orgs/{org}/scim-tokens", tags=["scim"])


class ScimTokenCreate(In):
    name: Name = "SCIM"


class ScimTokenOut(Out):
    id: str
    name: str
    prefix: str
    status: str
    created_by: str | None
    created_at: datetime
    revoked_at: datetime | None


class ScimTokenCreated(ScimTokenOut):
    token: str


def _out(row: ScimToken) -> ScimTokenOut:
    return ScimTokenOut(
        id=row.id,
        name=row.name,
        prefix=f"bsp_{row.id}",
        status="revoked" if row.revoked_at is not None else "active",
        created_by=row.created_by,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


@router.post("", status_code=201, summary="Create a SCIM token (shown once)")
def create_token(
    org: str, principal: Caller, db: DB, state: State, body: ScimTokenCreate | None = None
) -> ScimTokenCreated:
    issued = service.create_token(
        db, principal, org, name=(body or ScimTokenCreate()).name, hasher=state.hasher
    )
    return ScimTokenCreated(**_out(issued.token).model_dump(), token=issued.secret)


@router.get("", summary="List SCIM tokens (never the token itself)")
def list_tokens(
    org: str, principal: Caller, db: DB, limit: Limit = DEFAULT_PAGE, cursor: Cursor = None
) -> ListOf[ScimTokenOut]:
    page = service.list_tokens(db, principal, org, limit=limit, cursor=cursor)
    return ListOf[ScimTokenOut](data=[_out(t) for t in page.data], next_cursor=page.next_cursor)


@router.delete("/{token}", status_code=204, summary="Revoke a SCIM token now")
def revoke_token(org: str, token: str, principal: Caller, db: DB) -> Response:
    service.revoke_token(db, principal, org, token)
    return Response(status_code=204)


# --- the SCIM service (/scim/v2) ----------------------------------------------------

MEDIA = problems.SCIM_CONTENT_TYPE
MAX_FILTER_PARAM = 4096


def _scim(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        content=json.dumps(doc, separators=(",", ":")),
        status_code=status,
        media_type=MEDIA,
        headers=headers,
    )


def _resource(doc: dict[str, Any], status: int = 200) -> Response:
    headers = {"etag": doc["meta"]["version"]}
    if status == 201:
        headers["location"] = doc["meta"]["location"]
    return _scim(doc, status, headers)


def _ctx(request: Request) -> RequestContext:
    ctx: RequestContext = request.scope[SCOPE_KEY]
    return ctx


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.bastion
    return state


def _base_url(state: AppState) -> str:
    return f"{state.settings.public_url.rstrip('/')}{problems.SCIM_PREFIX}"


async def _call(request: Request) -> service.Call:
    ctx, state = _ctx(request), _state(request)
    principal = await authenticate_scim(
        ctx, state, read_bearer(request.headers.get("authorization"))
    )
    return service.Call(ctx.db, principal, _base_url(state))


async def _body(request: Request) -> Any:
    raw = await request.body()
    if not raw:
        raise scim_errors.invalid_syntax("a JSON body is required")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise scim_errors.invalid_syntax("the body is not valid JSON") from None


def _int_param(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise scim_errors.invalid_value(f"{name} must be an integer") from None
    if not -(2**31) <= value < 2**31:
        raise scim_errors.invalid_value(f"{name} is out of range")
    return value


def _names(request: Request, name: str) -> list[str] | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    if len(raw) > MAX_FILTER_PARAM:
        raise scim_errors.invalid_value(f"{name} is too long")
    return [p.strip() for p in raw.split(",") if p.strip()]


_ALWAYS = frozenset({"id", "schemas", "meta"})


def _strip_urn(name: str, core_urn: str) -> str:
    if name.lower().startswith(core_urn.lower() + ":"):
        return name[len(core_urn) + 1 :]
    return name


def _project(
    doc: dict[str, Any], attributes: list[str] | None, excluded: list[str] | None, core: str
) -> dict[str, Any]:
    """`attributes` / `excludedAttributes` (RFC 7644 §3.4.2.5), to a sub-attribute."""
    if attributes:
        wanted: dict[str, set[str] | None] = {}
        for name in attributes:
            top, _, sub = _strip_urn(name, core).partition(".")
            key = top.lower()
            if sub and wanted.get(key, set()) is not None:
                wanted.setdefault(key, set()).add(sub.lower())  # type: ignore[union-attr]
            else:
                wanted[key] = None
        out: dict[str, Any] = {}
        for key, value in doc.items():
            if key in _ALWAYS:
                out[key] = value
                continue
            subs = wanted.get(key.lower(), set())
            if key.lower() not in wanted:
                continue
            if subs is None:
                out[key] = value
            elif isinstance(value, list):
                out[key] = [
                    {k: v for k, v in el.items() if k.lower() in subs}
                    for el in value
                    if isinstance(el, dict)
                ]
            elif isinstance(value, dict):
                out[key] = {k: v for k, v in value.items() if k.lower() in subs}
        return out
    if excluded:
        drop = {_strip_urn(n, core).lower() for n in excluded}
        return {k: v for k, v in doc.items() if k in _ALWAYS or k.lower() not in drop}
    return doc


def _listing(request: Request, result: dict[str, Any], core: str) -> Response:
    attributes, excluded = _names(request, "attributes"), _names(request, "excludedAttributes")
    result["Resources"] = [_project(d, attributes, excluded, core) for d in result["Resources"]]
    return _scim(result)


def _one(request: Request, doc: dict[str, Any], core: str, status: int = 200) -> Response:
    attributes, excluded = _names(request, "attributes"), _names(request, "excludedAttributes")
    if not (attributes or excluded):
        return _resource(doc, status)
    headers = {"etag": doc["meta"]["version"]}
    if status == 201:
        headers["location"] = doc["meta"]["location"]
    return _scim(_project(doc, attributes, excluded, core), status, headers)


def _filter(request: Request) -> str | None:
    raw = request.query_params.get("filter")
    if raw is not None and len(raw) > MAX_FILTER_PARAM:
        raise scim_errors.invalid_filter("filter is too long")
    return raw


scim_router = APIRouter()


@scim_router.get("/ServiceProviderConfig")
async def service_provider_config(request: Request) -> Response:
    await _call(request)
    state = _state(request)
    docs = f"{state.settings.public_url.rstrip('/')}/docs/scim"
    return _scim(discovery.service_provider_config(_base_url(state), docs))


@scim_router.get("/ResourceTypes")
async def resource_types(request: Request) -> Response:
    await _call(request)
    found = discovery.resource_types(_base_url(_state(request)))
    return _scim(
        {
            "schemas": [service.LIST_URN],
            "totalResults": len(found),
            "startIndex": 1,
            "itemsPerPage": len(found),
            "Resources": found,
        }
    )


@scim_router.get("/ResourceTypes/{name}")
async def resource_type(request: Request, name: str) -> Response:
    await _call(request)
    for doc in discovery.resource_types(_base_url(_state(request))):
        if doc["id"] == name:
            return _scim(doc)
    raise scim_errors.not_found("no such resource type")


@scim_router.get("/Schemas")
async def schemas(request: Request) -> Response:
    await _call(request)
    found = discovery.schemas(_base_url(_state(request)))
    return _scim(
        {
            "schemas": [service.LIST_URN],
            "totalResults": len(found),
            "startIndex": 1,
            "itemsPerPage": len(found),
            "Resources": found,
        }
    )


@scim_router.get("/Schemas/{urn}")
async def schema(request: Request, urn: str) -> Response:
    await _call(request)
    for doc in discovery.schemas(_base_url(_state(request))):
        if doc["id"] == urn:
            return _scim(doc)
    raise scim_errors.not_found("no such schema")


async def _run(request: Request, work: Callable[[service.Call], Any]) -> Any:
    """A service call on a worker thread (it does database I/O)."""
    from starlette.concurrency import run_in_threadpool

    call = await _call(request)
    return await run_in_threadpool(work, call)


@scim_router.get("/Users")
async def list_users(request: Request) -> Response:
    text = _filter(request)
    start, count = _int_param(request, "startIndex"), _int_param(request, "count")
    result = await _run(
        request,
        lambda c: service.list_users(c, filter_text=text, start_index=start, count=count),
    )
    return _listing(request, result, service.USER_URN)


def _search_params(
    body: Any,
) -> tuple[str | None, int | None, int | None, list[str] | None, list[str] | None]:
    """A `POST …/.search` body (RFC 7644 §3.4.3)."""
    if not isinstance(body, dict):
        raise scim_errors.invalid_syntax("the body must be a JSON object")
    text = body.get("filter")
    if text is not None and (not isinstance(text, str) or len(text) > MAX_FILTER_PARAM):
        raise scim_errors.invalid_filter("filter must be a string")
    numbers = []
    for name in ("startIndex", "count"):
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise scim_errors.invalid_value(f"{name} must be an integer")
        numbers.append(value)
    lists = []
    for name in ("attributes", "excludedAttributes"):
        value = body.get(name)
        if value is not None and (
            not isinstance(value, list) or not all(isinstance(v, str) for v in value)
        ):
            raise scim_errors.invalid_value(f"{name} must be a list of strings")
        lists.append(value)
    return text, numbers[0], numbers[1], lists[0], lists[1]


async def _search(request: Request, kind: str) -> Response:
    text, start, count, attributes, excluded = _search_params(await _body(request))
    if kind == "User":
        result = await _run(
            request,
            lambda c: service.list_users(c, filter_text=text, start_index=start, count=count),
        )
        core = service.USER_URN
    else:
        result = await _run(
            request,
            lambda c: service.list_groups(c, filter_text=text, start_index=start, count=count),
        )
        core = service.GROUP_URN
    result["Resources"] = [_project(d, attributes, excluded, core) for d in result["Resources"]]
    return _scim(result)


@scim_router.post("/.search")
async def search_all(request: Request) -> Response:
    await _call(request)
    raise ScimError("searching several resource types at once is not supported", status=501)


@scim_router.post("/Users/.search")
async def search_users(request: Request) -> Response:
    return await _search(request, "User")


@scim_router.post("/Groups/.search")
async def search_groups(request: Request) -> Response:
    return await _search(request, "Group")


@scim_router.post("/Users")
async def create_user(request: Request) -> Response:
    body = await _body(request)
    doc = await _run(request, lambda c: service.create_user(c, body))
    return _one(request, doc, service.USER_URN, 201)


@scim_router.get("/Users/{user_id}")
async def get_user(request: Request, user_id: str) -> Response:
    doc = await _run(request, lambda c: service.get_user(c, user_id))
    return _one(request, doc, service.USER_URN)


@scim_router.put("/Users/{user_id}")
async def replace_user(request: Request, user_id: str) -> Response:
    body, if_match = await _body(request), request.headers.get("if-match")
    doc = await _run(request, lambda c: service.replace_user(c, user_id, body, if_match))
    return _one(request, doc, service.USER_URN)


@scim_router.patch("/Users/{user_id}")
async def patch_user(request: Request, user_id: str) -> Response:
    body, if_match = await _body(request), request.headers.get("if-match")
    doc = await _run(request, lambda c: service.patch_user(c, user_id, body, if_match))
    return _one(request, doc, service.USER_URN)


@scim_router.delete("/Users/{user_id}")
async def delete_user(request: Request, user_id: str) -> Response:
    if_match = request.headers.get("if-match")
    await _run(request, lambda c: service.delete_user(c, user_id, if_match))
    return Response(status_code=204)


@scim_router.get("/Groups")
async def list_groups(request: Request) -> Response:
    text = _filter(request)
    start, count = _int_param(request, "startIndex"), _int_param(request, "count")
    excluded = {n.lower() for n in _names(request, "excludedAttributes") or []}
    result = await _run(
        request,
        lambda c: service.list_groups(
            c,
            filter_text=text,
            start_index=start,
            count=count,
            with_members="members" not in excluded,
        ),
    )
    return _listing(request, result, service.GROUP_URN)


@scim_router.post("/Groups")
async def create_group(request: Request) -> Response:
    body = await _body(request)
    doc = await _run(request, lambda c: service.create_group(c, body))
    return _one(request, doc, service.GROUP_URN, 201)


@scim_router.get("/Groups/{group_id}")
async def get_group(request: Request, group_id: str) -> Response:
    doc = await _run(request, lambda c: service.get_group(c, group_id))
    return _one(request, doc, service.GROUP_URN)


@scim_router.put("/Groups/{group_id}")
async def replace_group(request: Request, group_id: str) -> Response:
    body, if_match = await _body(request), request.headers.get("if-match")
    doc = await _run(request, lambda c: service.replace_group(c, group_id, body, if_match))
    return _one(request, doc, service.GROUP_URN)


@scim_router.patch("/Groups/{group_id}")
async def patch_group(request: Request, group_id: str) -> Response:
    body, if_match = await _body(request), request.headers.get("if-match")
    doc = await _run(request, lambda c: service.patch_group(c, group_id, body, if_match))
    return _one(request, doc, service.GROUP_URN)


@scim_router.delete("/Groups/{group_id}")
async def delete_group(request: Request, group_id: str) -> Response:
    if_match = request.headers.get("if-match")
    await _run(request, lambda c: service.delete_group(c, group_id, if_match))
    return Response(status_code=204)


# --- SCIM error documents -----------------------------------------------------------


def _response(status: int, headers: dict[str, str], body: bytes) -> Response:
    return Response(content=body, status_code=status, headers=headers)


async def _on_domain_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, BastionError):
        raise exc
    # The same bookkeeping as every domain error (audit events of refusals, counts of
    # not-found answers), rendered as SCIM.
    status, headers, body = await api_errors.domain_problem(
        _ctx(request), _state(request).limiter, exc
    )
    scim_type = exc.scim_type if isinstance(exc, ScimError) else None
    if isinstance(exc, ScimError):
        return _response(*problems.scim_error(exc.status, exc.detail, scim_type, headers))
    return _response(*problems.as_scim(status, headers, body))


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    return _response(*problems.scim_error(400, "the request is not valid", "invalidValue"))


async def _on_http_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, StarletteHTTPException):
        raise exc
    detail = exc.detail if isinstance(exc.detail, str) else "error"
    return _response(*problems.scim_error(exc.status_code, detail, None, dict(exc.headers or {})))


async def _on_other(request: Request, exc: Exception) -> Response:
    found = await api_errors.problem_for(_ctx(request), _state(request).limiter, exc)
    if found is not None:
        return _response(*problems.as_scim(*found))
    log.exception("unhandled SCIM error", path=request.url.path)
    return _response(*problems.scim_error(500, "internal error"))


Handler = Callable[[Request, Exception], Awaitable[Response]]


def build_app(state: AppState) -> FastAPI:
    """The `/scim/v2` sub-application (mounted by `bastion.api.app.create_app`). It keeps
    out of `/openapi.json`: SCIM describes itself (`/Schemas`, `/ResourceTypes`)."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.state.bastion = state
    app.include_router(scim_router)
    handlers: list[tuple[type[Exception], Handler]] = [
        (BastionError, _on_domain_error),
        (RequestValidationError, _on_validation_error),
        (StarletteHTTPException, _on_http_error),
        (IntegrityError, _on_other),
        (DataError, _on_other),
        (OperationalError, _on_other),
        (PoolTimeout, _on_other),
        (Exception, _on_other),
    ]
    for kind, handler in handlers:
        app.add_exception_handler(kind, handler)
    return app

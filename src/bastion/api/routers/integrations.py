"""OAuth integrations: `/v1/orgs/{org}/integrations…`, the provider's redirect back
(`/v1/integrations/oauth/callback`) and a run's access token
(`/v1/runs/{run}/integrations/{name}/token`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import RedirectResponse
from starlette.concurrency import run_in_threadpool

from bastion.agents import integration_tokens
from bastion.api.context import RequestContext
from bastion.api.deps import DB, DEFAULT_PAGE, Caller, Ctx, Cursor, Limit, State
from bastion.api.state import AppState
from bastion.core.db import begin_write
from bastion.core.schemas import ListOf
from bastion.integrations import flow
from bastion.integrations import service as integrations
from bastion.integrations.models import Integration
from bastion.integrations.schemas import IntegrationIn, IntegrationName, IntegrationOut, TokenOut

router = APIRouter(prefix="/v1/orgs/{org}/integrations", tags=["integrations"])
oauth_router = APIRouter(prefix="/v1/integrations/oauth", tags=["integrations"])
runs_router = APIRouter(prefix="/v1/runs", tags=["integrations"])


def _out(state: AppState, row: Integration) -> IntegrationOut:
    return IntegrationOut(
        id=row.id,
        name=row.name,
        provider=row.provider,
        client_id=row.client_id,
        scopes=list(row.scopes or []),
        authorize_url=row.authorize_url,
        token_url=row.token_url,
        revoke_url=row.revoke_url,
        redirect_uri=flow.redirect_uri(state.settings),
        status=row.status,
        connected_by=row.connected_by,
        connected_at=row.connected_at,
        expires_at=row.access_expires_at,
        last_error=row.last_error,
        created_at=row.created_at,
    )


def _env(ctx: RequestContext, state: AppState) -> flow.Env:
    return flow.Env(state.settings, state.hasher, state.vault, ctx.actor)


@router.post(
    "",
    status_code=201,
    summary="Register an OAuth integration (GitHub, Slack, Linear, Google or any OAuth 2.0)",
)
def create_integration(
    org: str, body: IntegrationIn, principal: Caller, db: DB, state: State
) -> IntegrationOut:
    row = integrations.create(db, state.vault, state.settings, principal, org, body)
    return _out(state, row)


@router.get("", summary="The organisation's integrations (never a token or secret)")
def list_integrations(
    org: str,
    principal: Caller,
    db: DB,
    state: State,
    limit: Limit = DEFAULT_PAGE,
    cursor: Cursor = None,
) -> ListOf[IntegrationOut]:
    page = integrations.list_integrations(db, principal, org, limit=limit, cursor=cursor)
    return ListOf[IntegrationOut](
        data=[_out(state, r) for r in page.data], next_cursor=page.next_cursor
    )


@router.get("/{integration}", summary="One integration (`int_…`)")
def get_integration(
    org: str, integration: str, principal: Caller, db: DB, state: State
) -> IntegrationOut:
    return _out(state, integrations.get(db, principal, org, integration))


@router.delete(
    "/{integration}",
    status_code=204,
    summary="Revoke the grant at the provider, then delete the integration and its tokens",
)
def delete_integration(
    org: str, integration: str, principal: Caller, db: DB, state: State
) -> Response:
    integrations.delete_integration(db, state.vault, state.settings, principal, org, integration)
    return Response(status_code=204)


ReturnTo = Annotated[
    str,
    Query(
        min_length=1,
        max_length=2000,
        description="Where to send the browser afterwards: a relative path or this server's "
        "own origin. It gets `?integration=…&status=connected` or `?error=<code>`.",
    ),
]


def _redirect(env: flow.Env, target: flow.Redirect) -> Response:
    response = RedirectResponse(target.location, status_code=302)
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    if target.browser is not None:
        response.set_cookie(
            env.cookie_name,
            target.browser,
            max_age=flow.STATE_TTL,
            path="/",
            secure=env.secure,
            httponly=True,
            samesite="lax",
        )
    return response


@router.get(
    "/{integration}/connect",
    status_code=302,
    response_class=Response,
    responses={302: {"description": "To the provider's consent page (state + PKCE S256)."}},
    summary="Connect: send the person's browser to the provider to grant access",
)
def connect(
    org: str,
    integration: str,
    request: Request,
    principal: Caller,
    ctx: Ctx,
    state: State,
    return_to: ReturnTo = "/console/",
) -> Response:
    env = _env(ctx, state)
    db = ctx.db
    begin_write(db)  # a GET that writes: the request in flight and its audit event
    target = flow.start(
        db,
        env,
        principal,
        org,
        integration,
        return_to=return_to,
        cookie=request.cookies.get(env.cookie_name),
    )
    return _redirect(env, target)


@oauth_router.get(
    "/callback",
    status_code=302,
    response_class=Response,
    responses={302: {"description": "To `return_to` with `?status=connected` or `?error=`."}},
    summary="Where the provider sends the browser back (state checked once, code exchanged)",
)
def callback(
    request: Request,
    ctx: Ctx,
    state: State,
    code: Annotated[str | None, Query(max_length=4000)] = None,
    state_: Annotated[str | None, Query(alias="state", max_length=200)] = None,
    error: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    env = _env(ctx, state)
    db = ctx.db
    begin_write(db)
    params = {
        k: v for k, v in (("code", code), ("state", state_), ("error", error)) if v is not None
    }
    target = flow.callback(db, env, params, request.cookies.get(env.cookie_name))
    return _redirect(env, target)


@runs_router.post(
    "/{run}/integrations/{name}/token",
    summary="A short-lived access token of an integration the run's agent is connected to "
    "(run token; audited; never the refresh token)",
)
async def run_token(
    run: str,
    name: Annotated[IntegrationName, Path()],
    principal: Caller,
    ctx: Ctx,
    state: State,
) -> TokenOut:
    db = ctx.reader  # reads outside a write; the audit event goes as the request's unit
    # In a worker thread: a due refresh calls the provider, or waits for another's.
    token = await run_in_threadpool(
        integration_tokens.run_token, db, state.integration_tokens, principal, run, name
    )
    return TokenOut(access_token=token.access_token, expires_at=token.expires_at)

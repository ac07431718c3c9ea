"""Route dependencies: the request context, its unit of work and the caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from bastion.api.context import SCOPE_KEY, RequestContext
from bastion.api.state import AppState
from bastion.authz.principal import Principal
from bastion.core.errors import TooManyRequests, Unauthenticated
from bastion.core.pagination import DEFAULT_LIMIT, MAX_LIMIT
from bastion.identity.authenticate import Authenticated, authenticate, authenticate_cached

bearer = HTTPBearer(auto_error=False, description="API key (`bsk_…`) or session token (`bss_…`).")


async def get_ctx(request: Request) -> RequestContext:
    ctx: RequestContext = request.scope[SCOPE_KEY]
    return ctx


async def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.bastion
    return state


Ctx = Annotated[RequestContext, Depends(get_ctx)]
State = Annotated[AppState, Depends(get_state)]


async def get_db(ctx: Ctx) -> Session:
    return ctx.db  # opening a session does no I/O


DB = Annotated[Session, Depends(get_db)]


async def get_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    # Context and state straight from the request: each dependency level costs as much
    # as a cache-hit authentication on this path.
    ctx: RequestContext = request.scope[SCOPE_KEY]
    state: AppState = request.app.state.bastion
    token = credentials.credentials if credentials else None
    if state.auth_cache.local and state.limiter.local:
        # Embedded store and in-process counters: a cache hit is an HMAC and one local
        # primary-key read, cheaper than the hop to a worker thread.
        hit = authenticate_cached(token, ctx.actor, state.hasher, state.auth_cache)
        if hit is not None:
            return _admit(ctx, state, hit)
    return await run_in_threadpool(_authenticate, ctx, state, token)


def _authenticate(ctx: RequestContext, state: AppState, token: str | None) -> Principal:
    try:
        result = authenticate(ctx.db, token, ctx.actor, state.hasher, state.auth_cache)
    except Unauthenticated:
        # Bad credentials count against the address, so guessing is throttled too.
        allowed, quota = state.limiter.take(state.ip_quota, f"ip:{ctx.ip}")
        ctx.quota = quota
        if not allowed:
            raise TooManyRequests(
                "too many requests from this address", retry_after=quota.reset_after
            ) from None
        raise
    ctx.end_read()
    return _admit(ctx, state, result)


def _admit(ctx: RequestContext, state: AppState, result: Authenticated) -> Principal:
    """Record the caller and charge its request quota."""
    ctx.principal = result.principal
    if result.touch is not None:
        ctx.after_commit.append(result.touch)
    allowed, quota = state.limiter.take(state.api_quota, f"principal:{result.principal.id}")
    ctx.quota = quota
    if not allowed:
        raise TooManyRequests(
            "rate limit exceeded for this credential", retry_after=quota.reset_after
        )
    return result.principal


Caller = Annotated[Principal, Depends(get_principal)]

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size.")]
Cursor = Annotated[str | None, Query(max_length=512, description="From `next_cursor`.")]
DEFAULT_PAGE = DEFAULT_LIMIT

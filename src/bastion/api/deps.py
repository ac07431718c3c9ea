"""Route dependencies: the request context, its unit of work and the caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from bastion.api.context import SCOPE_KEY, RequestContext
from bastion.api.state import AppState
from bastion.core.errors import Forbidden, MfaEnrolmentRequired, TooManyRequests, Unauthenticated
from bastion.core.pagination import DEFAULT_LIMIT, MAX_LIMIT
from bastion.core.permissions import CredentialKind
from bastion.core.principal import Principal
from bastion.core.ratelimit import Quota
from bastion.core.schemas import QueryInt
from bastion.identity.authenticate import (
    authenticate,
    authenticate_cached,
    authenticate_cached_async,
)
from bastion.identity.credentials import Authenticated
from bastion.identity.mfa import challenges
from bastion.identity.tokens import TokenKind, parse

bearer = HTTPBearer(
    auto_error=False,
    description="API key (`bsk_…`), session token (`bss_…`) or OAuth access token (a JWT).",
)


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
    return await authenticate_request(
        request.scope[SCOPE_KEY],
        request.app.state.bastion,
        credentials.credentials if credentials else None,
        getattr(request.scope.get("route"), "path", ""),
    )


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer …` header, as `bearer` (FastAPI's
    `HTTPBearer`) reads it: for the lean routes, which do not run dependencies."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if not (scheme and token) or scheme.lower() != "bearer":
        return None
    return token


async def authenticate_request(
    ctx: RequestContext, state: AppState, token: str | None, route: str
) -> Principal:
    """The caller of a request to `route` (its path template), counted against its
    quota: the one way both the routes (`get_principal`) and the lean routes
    (`bastion.api.fast`) authenticate."""
    principal = await _caller(ctx, state, token)
    if principal.credential is CredentialKind.SCIM:
        # A SCIM token acts only on /scim/v2 of its organisation (`authenticate_scim`).
        raise Forbidden("SCIM tokens act only on /scim/v2")
    if principal.credential is CredentialKind.AGENT_RUN and route not in RUN_TOKEN_ROUTES:
        raise Forbidden("agent run tokens act only on their own run")
    if principal.mfa_pending and route not in MFA_ENROLMENT_ROUTES:
        raise MfaEnrolmentRequired(
            "your organisation requires a second factor: enrol one at /v1/me/mfa, then"
            " sign in again or step up with it"
        )
    return principal


async def authenticate_scim(ctx: RequestContext, state: AppState, token: str | None) -> Principal:
    """The caller of a `/scim/v2` request: a SCIM token (`bsp_…`) and nothing else (an API
    key or a session is refused as if it were no credential)."""
    parsed = parse(token) if token else None
    if parsed is None or parsed.kind is not TokenKind.SCIM:
        raise Unauthenticated("a SCIM token (bsp_…) is required")
    principal = await _caller(ctx, state, token)
    if principal.credential is not CredentialKind.SCIM:  # cannot happen: fail closed
        raise Unauthenticated("a SCIM token (bsp_…) is required")
    return principal


async def _caller(ctx: RequestContext, state: AppState, token: str | None) -> Principal:
    cache = state.auth_cache
    # A cache hit costs an HMAC and one primary-key read, done on the event loop (a local
    # file read for SQLite, an async query for PostgreSQL): no hop to a worker thread.
    if cache.local:
        hit = authenticate_cached(token, ctx.actor, state.hasher, cache)
    else:
        hit = await authenticate_cached_async(token, ctx.actor, state.hasher, cache)
    if hit is not None:
        verdict = await state.limiter.take_async(state.api_quota, _quota_key(hit))
        principal = _admit(ctx, hit, verdict)
    else:
        principal = await run_in_threadpool(_authenticate, ctx, state, token)
    return principal


# The only operations an agent run token may call (default deny); each checks that the
# run is the token's own, and reveal checks the secret was given to the run's agent.
RUN_TOKEN_ROUTES = frozenset(
    {
        "/v1/me",
        "/v1/runs/{run}",
        "/v1/runs/{run}/tool-calls",
        "/v1/runs/{run}/tool-calls/{call}",
        "/v1/runs/{run}/tool-calls/{call}/stream",
        "/v1/runs/{run}/integrations/{name}/token",
        "/v1/runs/{run}/mcp",  # the MCP gateway (bastion.api.mcp_gateway)
        "/v1/orgs/{org}/secrets/{name}/reveal",
        "/v1/runs/{run}/sandbox/exec",  # bastion.api.routers.sandboxes
        "/v1/runs/{run}/sandbox/{wks}/diff",
    }
)


# What a person whose organisation requires a second factor they have not used may
# call (with a password-only session, or with an enrolment `mfa_token`): enrol a
# factor, step up with it, sign out. Everything else is 403 `mfa_enrolment_required`.
MFA_ENROLMENT_ROUTES = frozenset(
    {
        "/v1/me/mfa",
        "/v1/me/mfa/totp",
        "/v1/me/mfa/totp/{factor}/confirm",
        "/v1/me/mfa/webauthn/registration-options",
        "/v1/me/mfa/webauthn",
        "/v1/me/mfa/{factor}",
        "/v1/me/mfa/recovery-codes",
        "/v1/auth/step-up",
        "/v1/auth/step-up/webauthn-options",
        "/v1/auth/logout",
    }
)


async def get_person(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    """The caller of the `/v1/me/mfa…` endpoints: a session as usual, or an enrolment
    `mfa_token` (`bsm_…`), which no other route accepts."""
    return await authenticate_person(
        request.scope[SCOPE_KEY],
        request.app.state.bastion,
        credentials.credentials if credentials else None,
        getattr(request.scope.get("route"), "path", ""),
    )


async def authenticate_person(
    ctx: RequestContext, state: AppState, token: str | None, route: str
) -> Principal:
    """`get_person` for a route (its path template): also used by the console."""
    if token is None or not token.startswith(TokenKind.MFA.value + "_"):
        return await authenticate_request(ctx, state, token, route)
    return await run_in_threadpool(_enrolment, ctx, state, token)


def _enrolment(ctx: RequestContext, state: AppState, token: str) -> Principal:
    allowed, quota = state.limiter.take(state.ip_quota, f"ip:{ctx.ip}")
    ctx.quota = quota
    if not allowed:
        raise TooManyRequests("too many requests from this address", retry_after=quota.reset_after)
    with state.sessions() as db:
        principal = challenges.enrolment_principal(db, token, ctx.actor, state.hasher)
    ctx.principal = principal
    return principal


def reauthenticate(request: Request, state: AppState) -> Principal:
    """The caller again, from the request's own credential: for a response that outlives
    its authentication (an event stream). Raises `Unauthenticated` once the credential
    is revoked or expired; roles and grants are the current ones. Run in a thread."""
    scheme, token = get_authorization_scheme_param(request.headers.get("authorization"))
    ctx: RequestContext = request.scope[SCOPE_KEY]
    with state.sessions() as db:
        result = authenticate(
            db, token if scheme.lower() == "bearer" else None, ctx.actor, state.hasher,
            state.auth_cache, jwt=state.access_tokens,
        )  # fmt: skip
    if result.principal.credential is CredentialKind.SCIM:
        raise Forbidden("SCIM tokens act only on /scim/v2")
    return result.principal


def _quota_key(result: Authenticated) -> str:
    return f"principal:{result.principal.id}"


def _authenticate(ctx: RequestContext, state: AppState, token: str | None) -> Principal:
    try:
        # Credentials are read on a reader of their own: a state-changing request's
        # transaction (a writer: on SQLite, BEGIN IMMEDIATE) starts only when the route
        # needs it, so the single writer slot is held for the work, not the sign-in.
        with state.sessions() as db:
            result = authenticate(
                db, token, ctx.actor, state.hasher, state.auth_cache, jwt=state.access_tokens
            )
    except Unauthenticated:
        # Bad credentials count against the address, so guessing is throttled too.
        allowed, quota = state.limiter.take(state.ip_quota, f"ip:{ctx.ip}")
        ctx.quota = quota
        if not allowed:
            raise TooManyRequests(
                "too many requests from this address", retry_after=quota.reset_after
            ) from None
        raise
    return _admit(ctx, result, state.limiter.take(state.api_quota, _quota_key(result)))


def _admit(ctx: RequestContext, result: Authenticated, verdict: tuple[bool, Quota]) -> Principal:
    """Record the caller and its request quota; refuse when the quota is spent."""
    ctx.principal = result.principal
    ctx.after_commit.extend(result.after_commit)
    allowed, quota = verdict
    ctx.quota = quota
    if not allowed:
        raise TooManyRequests(
            "rate limit exceeded for this credential", retry_after=quota.reset_after
        )
    return result.principal


Caller = Annotated[Principal, Depends(get_principal)]
# The `/v1/me/mfa…` endpoints: a session, or an enrolment mfa token.
Person = Annotated[Principal, Depends(get_person)]

Limit = Annotated[QueryInt, Query(ge=1, le=MAX_LIMIT, description="Page size.")]
Cursor = Annotated[str | None, Query(max_length=512, description="From `next_cursor`.")]
DEFAULT_PAGE = DEFAULT_LIMIT

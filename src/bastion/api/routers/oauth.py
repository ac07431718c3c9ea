"""OAuth 2.0 for machines: clients of service accounts (JSON, bearer-authenticated like
every org route) and the token, introspection and revocation endpoints (form-encoded,
client-authenticated, answering in OAuth's own error format, RFC 6749 §5.2)."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any
from urllib.parse import parse_qs, unquote

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from bastion.api.context import SCOPE_KEY, RequestContext
from bastion.api.deps import DB, DEFAULT_PAGE, Caller, Ctx, Cursor, Limit, State
from bastion.api.problems import ERROR_RESPONSES
from bastion.api.state import AppState
from bastion.core.errors import TooManyRequests
from bastion.core.schemas import ListOf
from bastion.oauth import errors, service
from bastion.oauth.errors import OAuthError
from bastion.oauth.models import OAuthClient
from bastion.oauth.schemas import (
    IntrospectionOut,
    OAuthClientCreate,
    OAuthClientCreated,
    OAuthClientOut,
    OAuthErrorOut,
    TokenOut,
)

clients_router = APIRouter(
    prefix="/v1/orgs/{org}/service-accounts/{account}/oauth-clients",
    tags=["oauth"],
    responses=ERROR_RESPONSES,
)


def _out(client: OAuthClient) -> OAuthClientOut:
    return OAuthClientOut(
        client_id=client.id,
        id=client.id,
        name=client.name,
        service_account_id=client.service_account_id,
        scopes=client.scopes,
        created_at=client.created_at,
        last_used_at=client.last_used_at,
    )


@clients_router.post(
    "", status_code=201, summary="Create an OAuth client for the service account (secret once)"
)
def create_client(
    org: str, account: str, body: OAuthClientCreate, principal: Caller, db: DB, state: State
) -> OAuthClientCreated:
    issued = service.create_client(
        db, principal, org, account, name=body.name, scopes=body.scopes, hasher=state.hasher
    )
    return OAuthClientCreated(**_out(issued.client).model_dump(), client_secret=issued.secret)


@clients_router.get("", summary="The service account's OAuth clients (never a secret)")
def list_clients(
    org: str,
    account: str,
    principal: Caller,
    db: DB,
    limit: Limit = DEFAULT_PAGE,
    cursor: Cursor = None,
) -> ListOf[OAuthClientOut]:
    page = service.list_clients(db, principal, org, account, limit=limit, cursor=cursor)
    return ListOf[OAuthClientOut](data=[_out(c) for c in page.data], next_cursor=page.next_cursor)


@clients_router.get("/{client}", summary="One OAuth client (never its secret)")
def get_client(org: str, account: str, client: str, principal: Caller, db: DB) -> OAuthClientOut:
    return _out(service.get_client(db, principal, org, account, client))


@clients_router.delete(
    "/{client}", status_code=204, summary="Delete an OAuth client; its tokens stop at once"
)
def delete_client(org: str, account: str, client: str, principal: Caller, db: DB) -> Response:
    service.delete_client(db, principal, org, account, client)
    return Response(status_code=204)


# --- the protocol endpoints ----------------------------------------------------------------

router = APIRouter(prefix="/v1/oauth", tags=["oauth"])

_FORM = "application/x-www-form-urlencoded"
_CLIENT_FIELDS = {
    "client_id": {"type": "string", "description": "With client_secret_post."},
    "client_secret": {"type": "string", "description": "With client_secret_post."},
}
_OAUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": OAuthErrorOut, "description": "RFC 6749 §5.2 error"},
    401: {"model": OAuthErrorOut, "description": "invalid_client (RFC 6749 §5.2)"},
    429: ERROR_RESPONSES.get(429, {"description": "Too many failed client authentications"}),
}


def _form_body(fields: dict[str, dict[str, Any]], required: list[str]) -> dict[str, Any]:
    """The OpenAPI request body of a form-encoded endpoint (parsed by hand: RFC 6749 asks
    for checks a generic form parser does not make, such as a repeated parameter)."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                _FORM: {
                    "schema": {
                        "type": "object",
                        "properties": {**fields, **_CLIENT_FIELDS},
                        "required": required,
                    }
                }
            },
        }
    }


class OAuthRequest:
    """A form-encoded OAuth request: its parameters and the client's credentials."""

    def __init__(self, params: dict[str, str], creds: service.ClientCredentials) -> None:
        self.params = params
        self.creds = creds

    def __repr__(self) -> str:
        return f"OAuthRequest(params={sorted(self.params)}, {self.creds!r})"


def _basic(header: str) -> service.ClientCredentials:
    """RFC 6749 §2.3.1: `Basic base64(urlencode(id) ":" urlencode(secret))`."""
    try:
        decoded = base64.b64decode(header.encode("ascii"), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError):
        raise OAuthError(
            errors.INVALID_CLIENT, "malformed Basic credentials", status=401, challenge=True
        ) from None
    client_id, sep, secret = decoded.partition(":")
    if not sep or not client_id:
        raise OAuthError(
            errors.INVALID_CLIENT, "malformed Basic credentials", status=401, challenge=True
        )
    return service.ClientCredentials(unquote(client_id), unquote(secret), "client_secret_basic")


async def read_oauth_request(request: Request) -> OAuthRequest:
    ctx: RequestContext = request.scope[SCOPE_KEY]
    state: AppState = request.app.state.bastion
    if ctx.headers.get(b"authorization") is not None:
        # Requests without a credential were counted against their address already.
        allowed, quota = state.limiter.take(state.ip_quota, f"ip:{ctx.ip}")
        ctx.quota = quota
        if not allowed:
            raise TooManyRequests(
                "too many requests from this address", retry_after=quota.reset_after
            )
    content_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if content_type != _FORM:
        raise OAuthError(errors.INVALID_REQUEST, f"send the parameters as {_FORM}")
    raw = await request.body()
    try:
        parsed = parse_qs(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(raw))
    except (UnicodeDecodeError, ValueError):
        raise OAuthError(errors.INVALID_REQUEST, "the form body does not parse") from None
    repeated = sorted(name for name, values in parsed.items() if len(values) > 1)
    if repeated:
        raise OAuthError(errors.INVALID_REQUEST, f"repeated parameter: {repeated[0][:40]}")
    params = {name: values[0] for name, values in parsed.items()}
    if any("\x00" in v for v in params.values()):
        raise OAuthError(errors.INVALID_REQUEST, "a parameter holds a NUL character")
    scheme, _, value = (request.headers.get("authorization") or "").partition(" ")
    basic = scheme.lower() == "basic"
    posted = "client_id" in params or "client_secret" in params
    if basic and posted:
        raise OAuthError(errors.INVALID_REQUEST, "use one client authentication method only")
    if basic:
        creds = _basic(value.strip())
    elif posted:
        creds = service.ClientCredentials(
            params.get("client_id", ""), params.get("client_secret", ""), "client_secret_post"
        )
    else:
        raise OAuthError(
            errors.INVALID_CLIENT,
            "authenticate the client (client_secret_basic or client_secret_post)",
            status=401,
            challenge=True,
        )
    return OAuthRequest(params, creds)


Form = Annotated[OAuthRequest, Depends(read_oauth_request)]


def _required(form: OAuthRequest, name: str) -> str:
    value = form.params.get(name)
    if not value:
        raise OAuthError(errors.INVALID_REQUEST, f"the {name} parameter is required")
    return value


@router.post(
    "/token",
    summary="An access token for a service account (client credentials, RFC 6749 §4.4)",
    responses={200: {"model": TokenOut, "description": "The access token"}, **_OAUTH_ERRORS},
    openapi_extra=_form_body(
        {
            "grant_type": {"type": "string", "enum": ["client_credentials"]},
            "scope": {"type": "string", "description": "Space-separated permission names."},
        },
        ["grant_type"],
    ),
)
def token(form: Form, ctx: Ctx, state: State) -> JSONResponse:
    grant_type = _required(form, "grant_type")
    issued = service.issue_token(
        ctx.db,
        ctx.actor,
        form.creds,
        grant_type=grant_type,
        scope=form.params.get("scope") or None,  # an empty scope is no scope
        signer=state.signer,
        where=state.oauth_audience,
        hasher=state.hasher,
        limiter=state.limiter,
        settings=state.settings,
    )
    out = TokenOut(
        access_token=issued.access_token,
        token_type="Bearer",  # noqa: S106 - RFC 6749 §7.1, not a credential
        expires_in=issued.expires_in,
        scope=issued.scope,
    )
    return JSONResponse(
        out.model_dump(exclude_none=True),
        headers={"cache-control": "no-store", "pragma": "no-cache"},
    )


@router.post(
    "/introspect",
    summary="Whether an access token is active, and its claims (RFC 7662)",
    responses=_OAUTH_ERRORS,
    response_model_exclude_none=True,
    openapi_extra=_form_body(
        {"token": {"type": "string"}, "token_type_hint": {"type": "string"}}, ["token"]
    ),
)
def introspect(form: Form, ctx: Ctx, state: State) -> IntrospectionOut:
    found = service.introspect(
        ctx.db,
        ctx.actor,
        form.creds,
        _required(form, "token"),
        signer=state.signer,
        where=state.oauth_audience,
        hasher=state.hasher,
        limiter=state.limiter,
        settings=state.settings,
    )
    return IntrospectionOut(**found)


@router.post(
    "/revoke",
    summary="Revoke an access token (RFC 7009): 200 whatever the token",
    responses=_OAUTH_ERRORS,
    openapi_extra=_form_body(
        {"token": {"type": "string"}, "token_type_hint": {"type": "string"}}, ["token"]
    ),
)
def revoke(form: Form, ctx: Ctx, state: State) -> Response:
    service.revoke(
        ctx.db,
        ctx.actor,
        form.creds,
        _required(form, "token"),
        signer=state.signer,
        where=state.oauth_audience,
        hasher=state.hasher,
        limiter=state.limiter,
        settings=state.settings,
    )
    return Response(status_code=200)

"""SSO: connections and verified domains of an organisation (`/v1/orgs/{org}/…`), and
the sign-in flow (`/v1/auth/sso/…`)."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import RedirectResponse

from bastion.api.context import RequestContext
from bastion.api.deps import DB, DEFAULT_PAGE, Caller, Ctx, Cursor, Limit, State
from bastion.api.state import AppState
from bastion.core.db import begin_write
from bastion.core.errors import InvalidInput, UnsupportedMediaType
from bastion.core.schemas import ListOf
from bastion.identity.schemas import LoginOut
from bastion.sso import connections, domains, flow, oidc_flow, saml_flow, saml_sp
from bastion.sso.models import SsoConnection, SsoDomain
from bastion.sso.schemas import (
    ConnectionIn,
    ConnectionOut,
    ConnectionUpdate,
    DomainIn,
    DomainOut,
    ExchangeIn,
    RoleMappingOut,
    TeamMappingOut,
)

connections_router = APIRouter(prefix="/v1/orgs/{org}/sso-connections", tags=["sso"])
domains_router = APIRouter(prefix="/v1/orgs/{org}/domains", tags=["sso"])
flow_router = APIRouter(prefix="/v1/auth/sso", tags=["sso"])

_SECRET_FIELDS = {"client_secret", "tenant", "type"}


def _connection_out(state: AppState, conn: SsoConnection) -> ConnectionOut:
    public = state.settings.public_url
    is_saml = conn.type == "saml"
    return ConnectionOut(
        id=conn.id,
        type=conn.type,
        name=conn.name,
        preset=conn.preset,
        issuer=conn.issuer,
        client_id=conn.client_id,
        client_secret_set=conn.client_secret_id is not None,
        scopes=list(conn.scopes or []),
        idp_metadata_xml=conn.idp_metadata_xml,
        idp_metadata_url=conn.idp_metadata_url,
        groups_attribute=conn.groups_attribute,
        role_mapping=[RoleMappingOut(**m) for m in conn.role_mapping or []],
        team_mapping=[TeamMappingOut(**m) for m in conn.team_mapping or []],
        default_role=conn.default_role,
        jit=conn.jit,
        redirect_uri=public + flow.OIDC_CALLBACK_PATH if conn.type == "oidc" else None,
        email_attribute=conn.email_attribute,
        allow_idp_initiated=conn.allow_idp_initiated,
        sp_entity_id=saml_sp.entity_id(public, conn.id) if is_saml else None,
        acs_url=saml_sp.acs_url(public, conn.id) if is_saml else None,
        sp_certificate=conn.sp_cert_pem if is_saml else None,
        idp_metadata_fetched_at=conn.idp_metadata_fetched_at if is_saml else None,
        start_url=f"{public}{flow.START_PATH}?connection={conn.id}",
        created_at=conn.created_at,
        updated_at=conn.updated_at,
    )


def _domain_out(row: SsoDomain) -> DomainOut:
    return DomainOut(
        id=row.id,
        domain=row.domain,
        verified=row.verified_domain is not None,
        txt_record=domains.txt_record(row),
        verified_at=row.verified_at,
        created_at=row.created_at,
    )


@connections_router.post("", status_code=201, summary="Add an SSO connection (needs step-up)")
def create_connection(
    org: str, body: ConnectionIn, principal: Caller, db: DB, state: State
) -> ConnectionOut:
    values = body.model_dump(exclude={"client_secret", "tenant"}, mode="json")
    conn = connections.create(
        db,
        state.vault,
        principal,
        org,
        values,
        tenant=body.tenant,
        client_secret_value=body.client_secret.get_secret_value() if body.client_secret else None,
        outbound=saml_sp.Outbound.of(state.settings),
    )
    return _connection_out(state, conn)


@connections_router.get("", summary="List the organisation's SSO connections")
def list_connections(
    org: str,
    principal: Caller,
    db: DB,
    state: State,
    limit: Limit = DEFAULT_PAGE,
    cursor: Cursor = None,
) -> ListOf[ConnectionOut]:
    page = connections.list_page(db, principal, org, limit=limit, cursor=cursor)
    return ListOf[ConnectionOut](
        data=[_connection_out(state, c) for c in page.data], next_cursor=page.next_cursor
    )


@connections_router.get("/{conn}", summary="One SSO connection (never its client secret)")
def get_connection(org: str, conn: str, principal: Caller, db: DB, state: State) -> ConnectionOut:
    return _connection_out(state, connections.get(db, principal, org, conn))


@connections_router.patch("/{conn}", summary="Change an SSO connection (needs step-up)")
def update_connection(
    org: str, conn: str, body: ConnectionUpdate, principal: Caller, db: DB, state: State
) -> ConnectionOut:
    values = body.model_dump(exclude={"client_secret", "tenant"}, exclude_unset=True, mode="json")
    updated = connections.update(
        db,
        state.vault,
        principal,
        org,
        conn,
        values,
        tenant=body.tenant,
        client_secret_value=body.client_secret.get_secret_value() if body.client_secret else None,
        outbound=saml_sp.Outbound.of(state.settings),
    )
    return _connection_out(state, updated)


@connections_router.delete("/{conn}", status_code=204, summary="Remove an SSO connection")
def delete_connection(org: str, conn: str, principal: Caller, db: DB) -> Response:
    connections.delete(db, principal, org, conn)
    return Response(status_code=204)


@domains_router.post("", status_code=201, summary="Claim a domain; verify it by DNS TXT next")
def add_domain(org: str, body: DomainIn, principal: Caller, db: DB) -> DomainOut:
    return _domain_out(domains.add(db, principal, org, body.domain))


@domains_router.get("", summary="List the organisation's domains")
def list_domains(
    org: str, principal: Caller, db: DB, limit: Limit = DEFAULT_PAGE, cursor: Cursor = None
) -> ListOf[DomainOut]:
    page = domains.list_page(db, principal, org, limit=limit, cursor=cursor)
    return ListOf[DomainOut](data=[_domain_out(d) for d in page.data], next_cursor=page.next_cursor)


@domains_router.get("/{dom}", summary="One domain and its TXT record")
def get_domain(org: str, dom: str, principal: Caller, db: DB) -> DomainOut:
    return _domain_out(domains.get(db, principal, org, dom))


@domains_router.post("/{dom}/verify", summary="Look the domain's TXT record up (DNS)")
def verify_domain(org: str, dom: str, principal: Caller, db: DB, state: State) -> DomainOut:
    row = domains.verify(db, principal, org, dom, nameserver=state.settings.dns_resolver)
    return _domain_out(row)


@domains_router.delete("/{dom}", status_code=204, summary="Remove a domain")
def delete_domain(org: str, dom: str, principal: Caller, db: DB) -> Response:
    domains.delete(db, principal, org, dom)
    return Response(status_code=204)


# --- the flow ------------------------------------------------------------------------------


def _env(ctx: RequestContext, state: AppState) -> flow.Env:
    return flow.Env(state.settings, state.hasher, state.vault, state.sso_rp, ctx.actor)


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
            samesite="none" if target.cross_site_post and env.secure else "lax",
        )
    return response


Email = Annotated[str | None, Query(max_length=320, description="The person's email.")]
ConnectionId = Annotated[str | None, Query(max_length=64, description="An `ssoc_…` id.")]
ReturnTo = Annotated[
    str,
    Query(
        min_length=1,
        max_length=2000,
        description="A relative path, or a URL on an origin of BASTION_ALLOWED_RETURN_ORIGINS.",
    ),
]


@flow_router.get(
    "/start",
    status_code=302,
    response_class=Response,
    responses={302: {"description": "To the identity provider (or back with `?error=`)."}},
    summary="Start signing in with SSO: by email (its verified domain) or connection",
)
def start(
    request: Request,
    ctx: Ctx,
    state: State,
    return_to: ReturnTo = "/console/",
    email: Email = None,
    connection: ConnectionId = None,
) -> Response:
    env = _env(ctx, state)
    db = ctx.db
    begin_write(db)  # a GET that writes: the request in flight and its audit event
    target = flow.start(
        db,
        env,
        email=email,
        connection_id=connection,
        return_to=return_to,
        cookie=request.cookies.get(env.cookie_name),
    )
    return _redirect(env, target)


@flow_router.get(
    "/oidc/callback",
    status_code=302,
    response_class=Response,
    responses={302: {"description": "To `return_to` with `?code=` or `?error=`."}},
    summary="Where the OpenID provider sends the browser back",
)
def oidc_callback(
    request: Request,
    ctx: Ctx,
    state: State,
    code: Annotated[str | None, Query(max_length=2000)] = None,
    state_: Annotated[str | None, Query(alias="state", max_length=200)] = None,
    error: Annotated[str | None, Query(max_length=200)] = None,
    iss: Annotated[str | None, Query(max_length=500)] = None,
) -> Response:
    env = _env(ctx, state)
    db = ctx.db
    begin_write(db)
    params = {
        k: v
        for k, v in (("code", code), ("state", state_), ("error", error), ("iss", iss))
        if v is not None
    }
    target = oidc_flow.oidc_callback(db, env, params, request.cookies.get(env.cookie_name))
    return _redirect(env, target)


@flow_router.post("/exchange", summary="Exchange the one-time code of an SSO sign-in for a session")
def exchange(body: ExchangeIn, request: Request, ctx: Ctx, state: State) -> LoginOut:
    env = _env(ctx, state)
    result = flow.exchange(
        ctx.db,
        env,
        body.code.get_secret_value(),
        request.cookies.get(env.cookie_name),
        from_browser=request.headers.get("origin") is not None,
    )
    return LoginOut(token=result.token, expires_at=result.expires_at, user_id=result.user_id)


# --- SAML --------------------------------------------------------------------------------

SAML_METADATA_TYPE = "application/samlmetadata+xml"
_FORM = "application/x-www-form-urlencoded"
_ACS_FIELDS = {"SAMLResponse": 400_000, "RelayState": 200}  # base64 of 256 KiB; 80 bytes


async def _saml_post(request: Request) -> dict[str, str]:
    """The IdP's HTTP-POST binding: a form with `SAMLResponse` and `RelayState`."""
    content_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if content_type != _FORM:
        raise UnsupportedMediaType(f"send the SAML response form-encoded ({_FORM})")
    body = await request.body()
    try:
        fields = parse_qs(body.decode("ascii"), max_num_fields=10, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        raise InvalidInput.field("SAMLResponse", "not a form-encoded SAML post") from None
    found: dict[str, str] = {}
    for name, limit in _ACS_FIELDS.items():
        values = fields.get(name, [])
        if len(values) > 1:
            raise InvalidInput.field(name, "given more than once")
        if values:
            if len(values[0]) > limit:
                raise InvalidInput.field(name, f"longer than {limit} characters")
            found[name] = values[0]
    if not found.get("SAMLResponse"):
        raise InvalidInput.field("SAMLResponse", "required")
    return found


_ACS_BODY = {
    "required": True,
    "content": {
        _FORM: {
            "schema": {
                "type": "object",
                "properties": {
                    name: {"type": "string", "maxLength": limit}
                    for name, limit in _ACS_FIELDS.items()
                },
                "required": ["SAMLResponse"],
            }
        }
    },
}


@flow_router.get(
    "/{conn}/saml/metadata",
    response_class=Response,
    responses={200: {"content": {SAML_METADATA_TYPE: {}}, "description": "SP metadata"}},
    summary="A SAML connection's service-provider metadata (public, for the IdP)",
)
def saml_metadata(conn: str, ctx: Ctx, state: State) -> Response:
    xml = saml_flow.sp_metadata_document(ctx.db, state.settings.public_url, conn)
    return Response(xml, media_type=SAML_METADATA_TYPE)


@flow_router.post(
    "/{conn}/saml/acs",
    status_code=302,
    response_class=Response,
    responses={302: {"description": "To `return_to` with `?code=` or `?error=`."}},
    openapi_extra={"requestBody": _ACS_BODY},
    summary="Where the SAML IdP posts its response (HTTP-POST binding)",
)
def saml_acs(
    conn: str,
    request: Request,
    ctx: Ctx,
    state: State,
    form: Annotated[dict[str, str], Depends(_saml_post)],
) -> Response:
    env = _env(ctx, state)
    db = ctx.db
    begin_write(db)
    target = saml_flow.acs(
        db,
        env,
        conn,
        form.get("SAMLResponse"),
        form.get("RelayState"),
        request.cookies.get(env.cookie_name),
    )
    return _redirect(env, target)

"""The MCP server registry: register, list, change and remove an organisation's upstream
MCP servers, and what the gateway reads of them.

A server's URL passes the outbound guard when it is saved, as webhook destinations do:
https:// (http:// only to a destination the operator lists in
`BASTION_OUTBOUND_PLAINTEXT_ALLOW`), never an internal address unless allowlisted
(`BASTION_OUTBOUND_ALLOW`); the gateway's client checks every connection again
(`bastion.mcp.transport`). Static headers are sealed in the vault (`bastion.secrets.sealed`)
and opened only by the gateway, in memory, while it speaks to the server. Or the server
names an OAuth integration (`integration`): the gateway adds its current access token as
the bearer (`bastion.mcp.upstream`), fetched from `bastion.integrations.service`, which
refreshes it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.audit import service as audit
from bastion.core.db import get_in_org
from bastion.core.errors import Conflict, InvalidInput
from bastion.core.events import EventType
from bastion.core.ids import new_id
from bastion.core.netguard import OutboundRefused, check_plaintext, vetted_addresses
from bastion.core.pagination import Page, newest_first
from bastion.core.permissions import Permission
from bastion.core.principal import Principal
from bastion.identity import rights
from bastion.integrations import service as integrations
from bastion.mcp.models import McpServer
from bastion.mcp.schemas import McpServerIn, McpServerPatch
from bastion.secrets import sealed
from bastion.secrets.vault import Vault

SCOPE = "mcp_server"
PREFIX = "mcs"


@dataclass(frozen=True)
class Upstream:
    """What the gateway needs to reach one server. `headers` are the opened static
    headers: in memory only, never logged (`repr=False`). `credential_source` is the
    seam for an OAuth integration's access token (another domain, registered by the
    app): None today, static headers only."""

    id: str
    org_id: str
    name: str
    url: str
    version: int
    headers: dict[str, str] = field(repr=False, default_factory=dict)
    credential_source: str | None = None  # an integration's name: its token is the bearer

    @property
    def key(self) -> tuple[str, int]:
        """Changes whenever the server's URL or headers do: a pooled session is for one."""
        return self.id, self.version


def destination(url: str) -> tuple[str, int]:
    """Host and port of an http(s) URL; ValueError (words naming no input) otherwise."""
    try:
        parsed = httpx.URL(url)
    except Exception:
        raise ValueError("not a valid URL") from None
    if parsed.scheme not in ("https", "http") or not parsed.host:
        raise ValueError("must be an absolute https:// URL")
    if parsed.userinfo:
        raise ValueError("must not carry credentials (use headers)")
    if parsed.fragment:
        raise ValueError("must not have a fragment")
    return parsed.host, parsed.port or (443 if parsed.scheme == "https" else 80)


def check_url(url: str, allow: Sequence[str], plaintext: Sequence[str]) -> None:
    try:
        host, port = destination(url)
        addresses = vetted_addresses(host, port, allow)
        if not url.lower().startswith("https://"):
            check_plaintext(host, port, plaintext, addresses)
    except ValueError as exc:
        raise InvalidInput.field("url", str(exc)) from None
    except OutboundRefused as exc:
        raise InvalidInput.field("url", exc.reason) from None


def _find(db: Session, org_id: str, server_id: str) -> McpServer:
    return get_in_org(db, McpServer, server_id, org_id, prefix=PREFIX, noun="MCP server")


def _name_free(db: Session, org_id: str, name: str, but: str | None = None) -> None:
    stmt = select(McpServer.id).where(McpServer.org_id == org_id, McpServer.name == name)
    taken = db.execute(stmt).scalar_one_or_none()
    if taken is not None and taken != but:
        raise Conflict("an MCP server with this name already exists")


def _seal(db: Session, vault: Vault, server: McpServer, headers: dict[str, str]) -> None:
    """Seal `headers` in place of the server's former ones, which are destroyed (a
    replaced credential's ciphertext does not outlive it); none: no secret at all."""
    server.header_names = sorted(headers)
    sealed.destroy(db, server.headers_secret_id)
    server.headers_secret_id = None
    if headers:
        server.headers_secret_id = sealed.create(
            db,
            vault,
            server.org_id,
            name=f"mcp_server/{server.id}",
            scope_type=SCOPE,
            scope_id=server.id,
            description="managed by Bastion: an MCP server's static headers",
            value=json.dumps(headers, sort_keys=True).encode(),
        )


def _bind(
    db: Session,
    principal: Principal,
    server: McpServer,
    integration: str | None,
    headers: Iterable[str],
) -> None:
    """Make `integration` (or none) the server's bearer credential: an integration of the
    organisation, bound by someone who may hand it on, never beside a static
    `Authorization` header."""
    if integration is not None:
        principal.require(Permission.INTEGRATIONS_USE)
        if not integrations.existing_names(db, server.org_id, [integration]):
            raise InvalidInput.field("integration", "no integration of this name")
        if any(h.lower() == "authorization" for h in headers):
            raise InvalidInput.field(
                "integration", "not with a static Authorization header (one or the other)"
            )
    server.integration = integration
    server.integration_by = (principal.user_id or principal.id) if integration else None


def _manager(principal: Principal, org_id: str) -> None:
    principal.require_org(org_id)
    principal.require(Permission.MCP_SERVERS_MANAGE)


def create_server(
    db: Session,
    vault: Vault,
    principal: Principal,
    org_id: str,
    body: McpServerIn,
    *,
    allow: Sequence[str],
    plaintext: Sequence[str] = (),
) -> McpServer:
    _manager(principal, org_id)
    check_url(body.url, allow, plaintext)
    _name_free(db, org_id, body.name)
    server = McpServer(
        id=new_id(PREFIX),
        org_id=org_id,
        name=body.name,
        url=body.url,
        header_names=[],
        headers_secret_id=None,
        created_by=principal.user_id or principal.id,
        version=1,
    )
    _bind(db, principal, server, body.integration, body.headers)
    db.add(server)
    if body.headers:
        _seal(db, vault, server, dict(body.headers))
    audit.record(
        db,
        type=EventType.MCP_SERVER_CREATED,
        actor=principal.actor,
        org_id=org_id,
        resource=("mcp_server", server.id),
        metadata={
            "name": server.name,
            "host": destination(server.url)[0],
            "header_names": server.header_names,
            "integration": server.integration,
        },
    )
    return server


def list_servers(
    db: Session, principal: Principal, org_id: str, *, limit: int, cursor: str | None
) -> Page[McpServer]:
    principal.require_org(org_id)
    principal.require(Permission.MCP_SERVERS_READ)
    stmt = select(McpServer).where(McpServer.org_id == org_id)
    return newest_first(db, stmt, McpServer.id, limit=limit, cursor=cursor)


def get_server(db: Session, principal: Principal, org_id: str, server_id: str) -> McpServer:
    principal.require_org(org_id)
    principal.require(Permission.MCP_SERVERS_READ)
    return _find(db, org_id, server_id)


def update_server(
    db: Session,
    vault: Vault,
    principal: Principal,
    org_id: str,
    server_id: str,
    body: McpServerPatch,
    *,
    allow: Sequence[str],
    plaintext: Sequence[str] = (),
) -> McpServer:
    _manager(principal, org_id)
    server = _find(db, org_id, server_id)
    changed = sorted(body.model_dump(exclude_unset=True, exclude_none=True))
    if body.name is not None and body.name != server.name:
        _name_free(db, org_id, body.name, but=server.id)
        server.name = body.name
    if body.url is not None:
        check_url(body.url, allow, plaintext)
        server.url = body.url
    if body.headers is not None:
        _seal(db, vault, server, dict(body.headers))
    if "integration" in body.model_fields_set:
        _bind(db, principal, server, body.integration, server.header_names)
        changed = sorted({*changed, "integration"})
    elif server.integration is not None and "authorization" in map(str.lower, server.header_names):
        raise InvalidInput.field(
            "headers", "not an Authorization header: the integration's token is the bearer"
        )
    server.version += 1
    audit.record(
        db,
        type=EventType.MCP_SERVER_UPDATED,
        actor=principal.actor,
        org_id=org_id,
        resource=("mcp_server", server.id),
        metadata={
            "fields": changed,
            "version": server.version,
            "host": destination(server.url)[0],
            "header_names": server.header_names,
            "integration": server.integration,
        },
    )
    return server


def delete_server(db: Session, principal: Principal, org_id: str, server_id: str) -> None:
    _manager(principal, org_id)
    server = _find(db, org_id, server_id)
    sealed.destroy(db, server.headers_secret_id)
    db.delete(server)
    audit.record(
        db,
        type=EventType.MCP_SERVER_DELETED,
        actor=principal.actor,
        org_id=org_id,
        resource=("mcp_server", server_id),
        metadata={"name": server.name},
    )


# --- for agents and the gateway --------------------------------------------------------


def is_server_id(connection: str) -> bool:
    return connection.startswith(PREFIX + "_")


def existing_server_ids(db: Session, org_id: str, ids: Iterable[str]) -> set[str]:
    wanted = [i for i in ids if is_server_id(i)]
    if not wanted:
        return set()
    stmt = select(McpServer.id).where(McpServer.org_id == org_id, McpServer.id.in_(wanted))
    return set(db.execute(stmt).scalars())


def upstreams(db: Session, vault: Vault, org_id: str, ids: Iterable[str]) -> list[Upstream]:
    """The organisation's servers among `ids`, headers opened (unreadable ones: the
    server is left out, so its tools are refused rather than called without them). A
    server whose integration's binder no longer holds `integrations:use` is left out
    too: its token is not handed on."""
    wanted = [i for i in ids if is_server_id(i)]
    if not wanted:
        return []
    stmt = select(McpServer).where(McpServer.org_id == org_id, McpServer.id.in_(wanted))
    found = []
    for server in db.execute(stmt).scalars():
        headers: dict[str, str] = {}
        if server.headers_secret_id is not None:
            try:
                headers = json.loads(sealed.read_current(db, vault, server.headers_secret_id))
            except (sealed.Unreadable, ValueError):
                continue
        if server.integration is not None and not integrations.may_hand_on(
            rights.current_permissions(db, org_id, server.integration_by or "")
        ):
            continue
        found.append(
            Upstream(
                server.id,
                org_id,
                server.name,
                server.url,
                server.version,
                headers,
                credential_source=server.integration,
            )
        )
    return found

"""`bastion sso …`: an organisation's SSO connections and verified email domains from
the host — create (OIDC or SAML, as `POST /v1/orgs/{org}/sso-connections` takes it),
list, show, delete. The client secret is read from standard input or a file, never from
the command line (it would be in the shell's history and the process list)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from bastion.cli.common import (
    EXIT_USAGE,
    Json,
    all_pages,
    emit,
    fail,
    group,
    host_principal,
    iso,
    settings,
    table,
    unit_of_work,
    vault,
)

app = group("SSO connections and verified domains.")
Org = Annotated[str, typer.Option("--org", help="Organisation id (org_…).")]


def _connection(conn: Any, public_url: str | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": conn.id,
        "type": conn.type,
        "name": conn.name,
        "preset": conn.preset,
        "issuer": conn.issuer,
        "client_id": conn.client_id,
        "enabled": getattr(conn, "enabled", None),
        "created_at": iso(getattr(conn, "created_at", None)),
    }
    if public_url is None:
        return row
    from bastion.sso import flow, saml_sp

    row["client_secret_set"] = conn.client_secret_id is not None
    row["scopes"] = list(conn.scopes or [])
    row["default_role"] = conn.default_role
    row["jit"] = conn.jit
    if conn.type == "oidc":
        row["redirect_uri"] = public_url + flow.OIDC_CALLBACK_PATH
    else:
        row["sp_entity_id"] = saml_sp.entity_id(public_url, conn.id)
        row["acs_url"] = saml_sp.acs_url(public_url, conn.id)
    row["start_url"] = f"{public_url}{flow.START_PATH}?connection={conn.id}"
    return row


def _pairs(option: str, values: list[str] | None, key: str, value: str) -> list[dict[str, str]]:
    """`GROUP=VALUE` options as the API's mapping objects."""
    out = []
    for item in values or []:
        group_name, sep, target = item.partition("=")
        if not sep or not group_name or not target:
            fail(f"{option}: {item!r} is not GROUP={value.upper()}", EXIT_USAGE)
        out.append({key: group_name, value: target})
    return out


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"{what}: cannot read {path}: {type(exc).__name__}", EXIT_USAGE)


def _secret(from_stdin: bool, path: Path | None) -> str | None:
    if from_stdin and path is not None:
        fail("--client-secret-stdin or --client-secret-file, not both", EXIT_USAGE)
    if from_stdin:
        secret = sys.stdin.readline().rstrip("\r\n")
    elif path is not None:
        secret = _read(path, "--client-secret-file").rstrip("\r\n")
    else:
        return None
    if not secret:
        fail("client_secret: empty", EXIT_USAGE)
    return secret


@app.command("create")
def sso_create(
    org: Org,
    type: Annotated[str, typer.Option("--type", help="oidc or saml.")],
    name: Annotated[str, typer.Option(help="A name for the connection.")],
    preset: Annotated[
        str | None, typer.Option(help="okta, entra, google, onelogin or auth0.")
    ] = None,
    tenant: Annotated[
        str | None, typer.Option(help="With a preset whose issuer names a tenant.")
    ] = None,
    issuer: Annotated[str | None, typer.Option(help="OIDC issuer (discovery).")] = None,
    client_id: Annotated[str | None, typer.Option(help="OIDC client id.")] = None,
    client_secret_stdin: Annotated[
        bool, typer.Option("--client-secret-stdin", help="Read the client secret from stdin.")
    ] = False,
    client_secret_file: Annotated[
        Path | None, typer.Option(help="Read the client secret from this file.")
    ] = None,
    scope: Annotated[
        list[str] | None,
        typer.Option("--scope", metavar="SCOPE", help="An OIDC scope (repeatable)."),
    ] = None,
    idp_metadata_file: Annotated[
        Path | None, typer.Option(help="SAML: the IdP's metadata XML, from this file.")
    ] = None,
    idp_metadata_url: Annotated[
        str | None, typer.Option(help="SAML: where the IdP publishes its metadata.")
    ] = None,
    groups_attribute: Annotated[
        str | None, typer.Option(help="The claim or attribute with the groups.")
    ] = None,
    role_mapping: Annotated[
        list[str] | None,
        typer.Option(metavar="GROUP=ROLE", help="Map an IdP group to a role (repeatable)."),
    ] = None,
    team_mapping: Annotated[
        list[str] | None,
        typer.Option(
            metavar="GROUP=TEAM_ID", help="Add an IdP group's members to a team (repeatable)."
        ),
    ] = None,
    default_role: Annotated[str, typer.Option(help="The role of a user no group maps.")] = (
        "member"
    ),
    jit: Annotated[
        bool, typer.Option("--jit/--no-jit", help="Create unknown users of verified domains.")
    ] = True,
    email_attribute: Annotated[
        str | None, typer.Option(help="SAML: the attribute with the e-mail address.")
    ] = None,
    allow_idp_initiated: Annotated[
        bool, typer.Option("--allow-idp-initiated", help="SAML: accept IdP-started sign-ins.")
    ] = False,
    json: Json = False,
) -> None:
    """Create an SSO connection (OIDC or SAML; audited). The client secret is sealed in
    the vault and never shown; give it on stdin (--client-secret-stdin) or in a file."""
    from bastion.sso import connections, saml_sp
    from bastion.sso.schemas import ConnectionIn

    cfg = settings()  # no data directory: say so before anything else
    body: dict[str, Any] = {
        "type": type,
        "name": name,
        "preset": preset,
        "tenant": tenant,
        "issuer": issuer,
        "client_id": client_id,
        "client_secret": _secret(client_secret_stdin, client_secret_file),
        "scopes": scope or None,
        "idp_metadata_xml": _read(idp_metadata_file, "--idp-metadata-file")
        if idp_metadata_file is not None
        else None,
        "idp_metadata_url": idp_metadata_url,
        "groups_attribute": groups_attribute,
        "role_mapping": _pairs("--role-mapping", role_mapping, "group", "role"),
        "team_mapping": _pairs("--team-mapping", team_mapping, "group", "team_id"),
        "default_role": default_role,
        "jit": jit,
        "email_attribute": email_attribute,
        "allow_idp_initiated": allow_idp_initiated,
    }
    try:
        valid = ConnectionIn.model_validate({k: v for k, v in body.items() if v is not None})
    except ValidationError as exc:  # the field and the reason, never the value given
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "body"
        fail(f"{field}: {first['msg']}", EXIT_USAGE)
    secret = valid.client_secret.get_secret_value() if valid.client_secret else None
    with unit_of_work(cfg) as db:
        conn = connections.create(
            db,
            vault(cfg),
            host_principal(org),
            org,
            valid.model_dump(exclude={"client_secret", "tenant"}, mode="json"),
            tenant=valid.tenant,
            client_secret_value=secret,
            outbound=saml_sp.Outbound.of(cfg),
        )
        row = _connection(conn, cfg.public_url)
    where = row.get("redirect_uri") or row.get("acs_url")
    emit(row, json, f"SSO connection {row['id']} ({row['type']}) created; at the IdP: {where}")


@app.command("list")
def sso_list(org: Org, json: Json = False) -> None:
    """List the organisation's SSO connections (never their secrets)."""
    from bastion.sso import connections

    with unit_of_work(settings()) as db:
        principal = host_principal(org)
        rows = [
            _connection(c)
            for c in all_pages(
                lambda cursor: connections.list_page(db, principal, org, limit=100, cursor=cursor)
            )
        ]
    emit({"data": rows}, json, table(rows, ("id", "type", "name", "issuer", "enabled")))


@app.command("show")
def sso_show(
    connection: Annotated[str, typer.Argument(metavar="CONNECTION_ID", help="ssoc_… id.")],
    org: Org,
    json: Json = False,
) -> None:
    """Show one SSO connection."""
    from bastion.sso import connections

    with unit_of_work(settings()) as db:
        row = _connection(connections.get(db, host_principal(org), org, connection))
    emit(row, json, "\n".join(f"{k}: {v}" for k, v in row.items()))


@app.command("delete")
def sso_delete(
    connection: Annotated[str, typer.Argument(metavar="CONNECTION_ID", help="ssoc_… id.")],
    org: Org,
    json: Json = False,
) -> None:
    """Delete an SSO connection (audited); its users sign in with a password or not at
    all, as the organisation's policy says."""
    from bastion.sso import connections

    with unit_of_work(settings()) as db:
        connections.delete(db, host_principal(org), org, connection)
    emit({"id": connection, "status": "deleted"}, json, f"SSO connection {connection} deleted")


@app.command("domains")
def sso_domains(org: Org, json: Json = False) -> None:
    """List the organisation's email domains and whether each is verified."""
    from bastion.sso import domains

    with unit_of_work(settings()) as db:
        principal = host_principal(org)
        rows = [
            {
                "id": d.id,
                "domain": d.domain,
                "verified_at": iso(getattr(d, "verified_at", None)),
                "txt_record": domains.txt_record(d),
            }
            for d in all_pages(
                lambda cursor: domains.list_page(db, principal, org, limit=100, cursor=cursor)
            )
        ]
    emit({"data": rows}, json, table(rows, ("id", "domain", "verified_at")))

"""`bastion scim …`, `bastion oauth …`: an organisation's identity provisioning from the
host — SCIM tokens and service accounts' OAuth clients (`bastion sso …`: cli/sso.py)."""

from __future__ import annotations

from typing import Annotated

import typer

from bastion.cli.common import (
    Json,
    all_pages,
    emit,
    group,
    hasher,
    host_principal,
    iso,
    settings,
    table,
    unit_of_work,
)

Org = Annotated[str, typer.Option("--org", help="Organisation id (org_…).")]
Account = Annotated[str, typer.Option("--account", help="Service account id (sa_…).")]

scim = group("SCIM provisioning tokens.")
oauth = group("Service accounts' OAuth clients (client-credentials grant).")


@scim.command("create")
def scim_create(
    org: Org,
    name: Annotated[str, typer.Option(help="Which identity provider uses it.")],
    json: Json = False,
) -> None:
    """Create a SCIM token for the organisation's identity provider (shown once)."""
    from bastion.scim import service

    cfg = settings()
    with unit_of_work(cfg) as db:
        issued = service.create_token(db, host_principal(org), org, name=name, hasher=hasher(cfg))
        token_id, secret = issued.token.id, issued.secret
    emit(
        {"id": token_id, "token": secret},
        json,
        f"SCIM token {token_id} created (shown once):\n{secret}",
    )


@scim.command("list")
def scim_list(org: Org, json: Json = False) -> None:
    """List the organisation's SCIM tokens (never the tokens themselves)."""
    from bastion.scim import service

    with unit_of_work(settings()) as db:
        principal = host_principal(org)
        rows = [
            {
                "id": t.id,
                "name": t.name,
                "created_at": iso(t.created_at),
                "revoked_at": iso(getattr(t, "revoked_at", None)),
                "last_used_at": iso(getattr(t, "last_used_at", None)),
            }
            for t in all_pages(
                lambda cursor: service.list_tokens(db, principal, org, limit=100, cursor=cursor)
            )
        ]
    emit({"data": rows}, json, table(rows, ("id", "name", "created_at", "revoked_at")))


@scim.command("revoke")
def scim_revoke(
    token: Annotated[str, typer.Argument(metavar="TOKEN_ID", help="sct_… id.")],
    org: Org,
    json: Json = False,
) -> None:
    """Revoke a SCIM token now, on every worker (audited)."""
    from bastion.scim import service

    with unit_of_work(settings()) as db:
        service.revoke_token(db, host_principal(org), org, token)
    emit({"id": token, "status": "revoked"}, json, f"SCIM token {token} revoked")


@oauth.command("create")
def oauth_create(
    org: Org,
    account: Account,
    name: Annotated[str, typer.Option(help="A name for the client.")],
    scope: Annotated[
        list[str] | None,
        typer.Option("--scope", help="A permission the client may ask for (repeatable)."),
    ] = None,
    json: Json = False,
) -> None:
    """Create an OAuth client for a service account; the secret is shown once."""
    from bastion.oauth import service

    cfg = settings()
    with unit_of_work(cfg) as db:
        issued = service.create_client(
            db, host_principal(org), org, account, name=name, scopes=scope, hasher=hasher(cfg)
        )
        client_id = issued.client.id
        secret = issued.secret
    emit(
        {"client_id": client_id, "client_secret": secret},
        json,
        f"OAuth client {client_id} created; its secret (shown once):\n{secret}",
    )


@oauth.command("list")
def oauth_list(org: Org, account: Account, json: Json = False) -> None:
    """List a service account's OAuth clients (never their secrets)."""
    from bastion.oauth import service

    with unit_of_work(settings()) as db:
        principal = host_principal(org)
        rows = [
            {
                "id": c.id,
                "name": c.name,
                "scopes": list(c.scopes or []),
                "created_at": iso(c.created_at),
            }
            for c in all_pages(
                lambda cursor: service.list_clients(
                    db, principal, org, account, limit=100, cursor=cursor
                )
            )
        ]
    emit({"data": rows}, json, table(rows, ("id", "name", "created_at")))


@oauth.command("delete")
def oauth_delete(
    client: Annotated[str, typer.Argument(metavar="CLIENT_ID", help="oac_… id.")],
    org: Org,
    account: Account,
    json: Json = False,
) -> None:
    """Delete an OAuth client: every token it obtained stops working at once."""
    from bastion.oauth import service

    with unit_of_work(settings()) as db:
        service.delete_client(db, host_principal(org), org, account, client)
    emit({"id": client, "status": "deleted"}, json, f"OAuth client {client} deleted")

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

import typer

from bastion.cli.common import (
    CLI_ACTOR,
    Json,
    all_pages,
    emit,
    fail,
    group,
    hasher,
    host_principal,
    settings,
    table,
    unit_of_work,
)
from bastion.core.clock import utcnow
from bastion.identity import apikeys

app = group("API keys.")
Org = Annotated[str, typer.Option("--org", help="Organisation id (org_…).")]


@app.command("list")
def list_keys(org: Org, json: Json = False) -> None:
    """List an organisation's API keys (never their secrets), newest first."""
    cfg = settings()
    now = utcnow()
    with unit_of_work(cfg) as db:
        principal = host_principal(org)
        keys = all_pages(
            lambda cursor: apikeys.list_keys(db, principal, org, limit=100, cursor=cursor)
        )
        rows: list[dict[str, Any]] = [
            {
                "id": k.id,
                "name": k.name,
                "role": k.role,
                "status": apikeys.key_status(k, now),
                "prefix": apikeys.display_prefix(k),
                "expires_at": k.expires_at.isoformat() if k.expires_at else None,
                "last_used_at": k.last_used_at.isoformat() if k.last_used_at else None,
            }
            for k in keys
        ]
    emit({"data": rows}, json, table(rows, ("id", "name", "role", "status", "expires_at")))


@app.command("create")
def create(
    org: Org,
    name: Annotated[str, typer.Option(help="A name for the key.")],
    role: Annotated[str, typer.Option(help="Built-in role or custom role id.")],
    expires_in: Annotated[
        int | None, typer.Option(min=60, help="Lifetime in seconds (default: no expiry).")
    ] = None,
    json: Json = False,
) -> None:
    """Create an organisation API key. The key is printed once."""
    from bastion.tenancy.models import Organization

    cfg = settings()
    expires_at = utcnow() + timedelta(seconds=expires_in) if expires_in else None
    with unit_of_work(cfg) as db:
        if db.get(Organization, org) is None:
            fail(f"organisation {org} not found")
        issued = apikeys.create_key(
            db, CLI_ACTOR, org, name=name, role=role, expires_at=expires_at, hasher=hasher(cfg)
        )
    emit(
        {"id": issued.key.id, "key": issued.token},
        json,
        f"API key {issued.key.id} created (shown once):\n{issued.token}",
    )


@app.command("revoke")
def revoke(
    key_id: Annotated[str, typer.Argument(metavar="KEY_ID", help="API key id (key_…).")],
    org: Org,
    json: Json = False,
) -> None:
    """Revoke an API key now (audited as `api_key.revoked`). Revoking a revoked key is
    a no-op."""
    cfg = settings()
    with unit_of_work(cfg) as db:
        apikeys.revoke_key(db, host_principal(org), org, key_id)
    emit({"id": key_id, "status": "revoked"}, json, f"API key {key_id} revoked")

from __future__ import annotations

import sys
from typing import Annotated

import typer

from bastion.cli import encryption_key
from bastion.cli.common import (
    CLI_ACTOR,
    Json,
    emit,
    fail,
    group,
    hasher,
    settings,
    table,
    unit_of_work,
)
from bastion.core.keyring import ROOT_KEY_FILE
from bastion.identity import service as users
from bastion.secrets.vault import LocalKeyProvider, Vault
from bastion.tenancy import service as tenancy

app = group("Organisations.")
app.add_typer(encryption_key.app, name="encryption-key")


@app.command("list")
def list_orgs(json: Json = False) -> None:
    """List every organisation of this instance, oldest first."""
    from sqlalchemy import select

    from bastion.tenancy.models import Organization

    cfg = settings()
    with unit_of_work(cfg) as db:
        rows = [
            {"id": o.id, "name": o.name, "status": o.status, "created_at": o.created_at.isoformat()}
            for o in db.execute(select(Organization).order_by(Organization.id)).scalars()
        ]
    emit({"data": rows}, json, table(rows, ("id", "name", "status", "created_at")))


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Organisation name.")],
    admin_email: Annotated[str, typer.Option(help="Email of the first admin.")],
    admin_password_stdin: Annotated[
        bool,
        typer.Option("--admin-password-stdin", help="Read the admin's password from stdin."),
    ] = False,
    json: Json = False,
) -> None:
    """Create an organisation and its first admin. Without --admin-password-stdin the admin
    is invited and a one-time setup token is printed."""
    cfg = settings()
    password = None
    if admin_password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            fail("no password on stdin")
    with unit_of_work(cfg) as db:
        org = tenancy.create_org(db, CLI_ACTOR, name=name)
        created = users.create_user(
            db,
            CLI_ACTOR,
            org.id,
            email=admin_email,
            name="",
            role="admin",
            password=password,
            hasher=hasher(cfg),
            setup_ttl=cfg.setup_token_ttl,
        )
    data = {"org_id": org.id, "user_id": created.user.id}
    if created.setup_token:
        data["setup_token"] = created.setup_token
    human = f"organisation {org.id} created; admin {created.user.id} <{admin_email}>"
    if created.setup_token:
        human += f"\nsetup token (shown once, 72 h): {created.setup_token}"
    emit(data, json, human)


@app.command("delete")
def delete(
    org_id: Annotated[str, typer.Argument(help="Organisation id (org_...).")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    json: Json = False,
) -> None:
    """Delete an organisation: every credential of it stops working at once and its data
    keys are destroyed, so its secrets can never be decrypted again. Irreversible."""
    cfg = settings()
    if not yes and not typer.confirm(f"Delete {org_id} and shred its secrets for good?"):
        fail("not confirmed")
    vault = Vault(LocalKeyProvider(cfg.data_dir / ROOT_KEY_FILE))
    with unit_of_work(cfg) as db:
        shredded = tenancy.delete_org(db, vault, CLI_ACTOR, org_id)
    emit(
        {"org_id": org_id, "status": "deleted", "data_keys_destroyed": shredded},
        json,
        f"organisation {org_id} deleted; {shredded} data keys destroyed",
    )


def _encryption_key() -> None:
    from bastion.cli import encryption_key

    app.add_typer(encryption_key.app, name="encryption-key")


_encryption_key()

from __future__ import annotations

import sys
from typing import Annotated

import typer

from bastion.cli.common import CLI_ACTOR, emit, fail, hasher, settings, unit_of_work
from bastion.core.keyring import ROOT_KEY_FILE
from bastion.identity import service as users
from bastion.secrets.vault import LocalKeyProvider, Vault
from bastion.tenancy import service as tenancy

app = typer.Typer(help="Organisations.", no_args_is_help=True)


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Organisation name.")],
    admin_email: Annotated[str, typer.Option(help="Email of the first admin.")],
    admin_password_stdin: Annotated[
        bool, typer.Option(help="Read the admin's password from stdin.")
    ] = False,
    json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Create an organisation and its first admin. Without --admin-password-stdin the admin
    is invited and a one-time setup token is printed."""
    password = None
    if admin_password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            fail("no password on stdin")
    cfg = settings()
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
    json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Delete an organisation: every credential of it stops working at once and its data
    keys are destroyed, so its secrets can never be decrypted again. Irreversible."""
    if not yes and not typer.confirm(f"Delete {org_id} and shred its secrets for good?"):
        fail("not confirmed")
    cfg = settings()
    vault = Vault(LocalKeyProvider(cfg.data_dir / ROOT_KEY_FILE))
    with unit_of_work(cfg) as db:
        shredded = tenancy.delete_org(db, vault, CLI_ACTOR, org_id)
    emit(
        {"org_id": org_id, "status": "deleted", "data_keys_destroyed": shredded},
        json,
        f"organisation {org_id} deleted; {shredded} data keys destroyed",
    )

from __future__ import annotations

import contextlib
import json as json_module
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from bastion.cli import encryption_key
from bastion.cli.common import (
    CLI_ACTOR,
    EXIT_USAGE,
    Json,
    database_url,
    directory,
    emit,
    fail,
    group,
    hasher,
    settings,
    table,
    unit_of_work,
)
from bastion.core.config import Settings
from bastion.core.db import orgmove, regions
from bastion.core.ids import new_id
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
    region: Annotated[
        str | None,
        typer.Option(
            help="The region whose database holds every row of the organisation, for good "
            "(BASTION_REGIONS); default: the first region."
        ),
    ] = None,
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
    names = cfg.region_names
    chosen = region or names[0]
    if chosen not in names:
        fail(f"no region {chosen!r}: the regions are {', '.join(names)}", EXIT_USAGE)
    org_id = new_id("org")
    with contextlib.ExitStack() as stack:
        if cfg.regions:  # routed before any row is written; undone if the org is not
            found = stack.enter_context(directory(cfg))
            found.register_org(org_id, chosen)
            stack.callback(found.unregister_if_absent, org_id)
        stack.enter_context(regions.in_region(chosen))
        org, created = _create(cfg, name, admin_email, password, chosen, org_id)
    data = {"org_id": org.id, "user_id": created.user.id, "region": chosen}
    if created.setup_token:
        data["setup_token"] = created.setup_token
    human = f"organisation {org.id} created in {chosen}; admin {created.user.id} <{admin_email}>"
    if created.setup_token:
        human += f"\nsetup token (shown once, 72 h): {created.setup_token}"
    emit(data, json, human)


def _create(
    cfg: Settings, name: str, admin_email: str, password: str | None, region: str, org_id: str
) -> tuple[Any, Any]:
    with unit_of_work(cfg) as db:
        org = tenancy.create_org(db, CLI_ACTOR, name=name, region=region, org_id=org_id)
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
    return org, created


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


@app.command("export")
def export(
    org_id: Annotated[str, typer.Argument(help="Organisation id (org_...).")],
    output: Annotated[Path, typer.Option(help="Where to write the export (JSON, mode 0600).")],
    json: Json = False,
) -> None:
    """Write every row of an organisation to a file, to move it to another region with
    `bastion org import --region`. Nothing is changed. The file holds the organisation's
    data (secrets still sealed under the instance's keys): keep it as safe as a backup."""
    cfg = settings()
    from sqlalchemy import create_engine

    engine = create_engine(database_url(cfg))
    try:
        document = orgmove.export_org(engine, org_id)
    except LookupError:
        fail(f"no organisation {org_id}")
    finally:
        engine.dispose()
    output.touch(mode=0o600)
    output.write_text(json_module.dumps(document))
    rows = sum(len(r) for r in document["tables"].values())
    emit({"org_id": org_id, "rows": rows, "output": str(output)}, json, f"{rows} rows written")


@app.command("import")
def import_(
    source: Annotated[Path, typer.Argument(help="A file from `bastion org export`.")],
    region: Annotated[str, typer.Option(help="The region to move the organisation to.")],
    json: Json = False,
) -> None:
    """Move an exported organisation into `region`: its rows are written there (all or
    nothing), the directory routes it there, then every row of it is deleted from the
    region it came from, so none is left behind. Stop serving writes to the
    organisation (e.g. revoke its keys) between export and import: later writes in the old
    region are deleted with it."""
    cfg = settings()
    if not cfg.regions or region not in cfg.regions:
        fail(f"no region {region!r} in BASTION_REGIONS", EXIT_USAGE)
    document = json_module.loads(source.read_text())
    org_id = str(document.get("org_id", ""))
    with directory(cfg) as found:
        was = found.region_of(org_id)
        if was == region:
            fail(f"{org_id} is in {region} already")
        written = orgmove.import_org(found.engines[region], document, region)
        found.move_org(org_id, region)
        removed = orgmove.delete_org_rows(found.engines[was], org_id) if was else 0
        left = orgmove.count_org_rows(found.engines[was], org_id) if was else 0
    emit(
        {"org_id": org_id, "region": region, "from": was, "rows": written, "left_behind": left},
        json,
        f"{org_id} moved from {was} to {region}: {written} rows written, {removed} removed,"
        f" {left} left behind",
    )

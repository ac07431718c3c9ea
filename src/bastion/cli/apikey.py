from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer

from bastion.cli.common import CLI_ACTOR, emit, fail, hasher, settings, unit_of_work
from bastion.core.clock import utcnow
from bastion.identity import apikeys

app = typer.Typer(help="API keys.", no_args_is_help=True)


@app.command("create")
def create(
    org: Annotated[str, typer.Option(help="Organisation id (org_…).")],
    name: Annotated[str, typer.Option(help="A name for the key.")],
    role: Annotated[str, typer.Option(help="Built-in role or custom role id.")],
    expires_in: Annotated[int | None, typer.Option(min=60, help="Lifetime in seconds.")] = None,
    json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
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

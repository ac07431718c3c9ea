"""`bastion org encryption-key …`: an organisation's customer-managed key from the host
(docs/customer-managed-keys.md). The configuration, credentials included, is read as a
JSON object from standard input, never from the command line (it would be in the shell's
history and the process list)."""

from __future__ import annotations

import json as jsonlib
import sys
from typing import Annotated, Any

import typer

from bastion.cli.common import (
    Json,
    emit,
    fail,
    group,
    host_principal,
    settings,
    unit_of_work,
    vault,
)
from bastion.secrets import encryption_key as cmk

app = group("An organisation's customer-managed key.")
Org = Annotated[str, typer.Argument(help="Organisation id (org_...).")]


def _emit(view: cmk.KeyView, as_json: bool) -> None:
    data: dict[str, Any] = {
        "provider": view.provider,
        "status": view.status,
        "reason": view.reason,
        "last_checked_at": view.last_checked_at.isoformat() if view.last_checked_at else None,
    }
    human = f"{view.provider}: {view.status}" + (f" ({view.reason})" if view.reason else "")
    emit(data, as_json, human)


@app.command("show")
def show(org_id: Org, json: Json = False) -> None:
    """The organisation's key provider and status (never its settings)."""
    cfg = settings()
    with unit_of_work(cfg) as db:
        view = cmk.describe(db, host_principal(org_id), org_id)
    _emit(view, json)


@app.command("set")
def set_key(
    org_id: Org,
    provider: Annotated[str, typer.Option(help="vault_transit or pkcs11.")],
    json: Json = False,
) -> None:
    """Wrap the organisation's data keys under its own key. Reads the provider's
    configuration as a JSON object on stdin, e.g. for vault_transit
    {"address": "https://vault:8200", "token": "…", "key_name": "acme"}."""
    cfg = settings()
    try:
        config = jsonlib.loads(sys.stdin.read())
    except ValueError:
        fail("stdin is not a JSON object")
    if not isinstance(config, dict) or not all(isinstance(v, str) for v in config.values()):
        fail("stdin must be a JSON object of strings")
    opened = vault(cfg)
    with unit_of_work(cfg) as db:
        view = cmk.configure(db, opened, host_principal(org_id), org_id, provider, config)
    _emit(view, json)


@app.command("lock")
def lock(org_id: Org, json: Json = False) -> None:
    """Make every server drop the organisation's cached data keys (within 2 s)."""
    cfg = settings()
    with unit_of_work(cfg) as db:
        view = cmk.lock(db, vault(cfg), host_principal(org_id), org_id)
    _emit(view, json)


@app.command("remove")
def remove(org_id: Org, json: Json = False) -> None:
    """Go back to the instance root key (the customer's key must still answer)."""
    cfg = settings()
    with unit_of_work(cfg) as db:
        view = cmk.remove(db, vault(cfg), host_principal(org_id), org_id)
    _emit(view, json)

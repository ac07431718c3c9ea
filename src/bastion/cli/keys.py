"""Vault keys. Root key: `bastion keys rotate` adds a version, `bastion keys rewrap`
re-wraps every organisation's data key under it (servers keep serving), `bastion keys
retire VERSION` removes a version no data key needs any more. Organisation data key:
`bastion keys rotate-org --org ORG` adds a version and re-encrypts that org's secrets."""

from __future__ import annotations

import base64
import json as jsonlib
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from sqlalchemy import func, select

from bastion.cli.common import CLI_ACTOR, emit, err, fail, settings, unit_of_work
from bastion.core.config import ConfigError
from bastion.core.db import make_engine, make_sessionmaker
from bastion.core.keyring import ROOT_KEY_FILE, read_keyring, rotate_keyring
from bastion.identity import authcache
from bastion.secrets import service as secrets
from bastion.secrets.models import OrgKey
from bastion.secrets.vault import LocalKeyProvider, Vault, rewrap

app = typer.Typer(help="Root keys of the secrets vault.", no_args_is_help=True)
Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@app.command("rotate")
def rotate(json: Json = False) -> None:
    """Add a new root-key version and make it active. Then run `bastion keys rewrap`."""
    cfg = settings()
    version = rotate_keyring(cfg.data_dir / ROOT_KEY_FILE)
    emit({"active_version": version}, json, f"root key version {version} is now active")


@app.command("rewrap")
def rewrap_keys(json: Json = False) -> None:
    """Re-wrap every organisation data key under the active root-key version, one
    organisation per transaction, with a progress bar."""
    cfg = settings()
    provider = LocalKeyProvider(cfg.data_dir / ROOT_KEY_FILE)
    engine = make_engine(cfg.resolved_database_url)
    authcache.install()
    sessions = make_sessionmaker(engine, write=True)
    try:
        with sessions() as db:
            total = db.execute(
                select(func.count())
                .select_from(OrgKey)
                .where(OrgKey.root_version != provider.active_version())
            ).scalar_one()
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            console=err,
            transient=True,
            disable=json,
        ) as bar:
            task = bar.add_task("re-wrapping data keys", total=total)
            done = rewrap(sessions, provider, progress=lambda n: bar.advance(task, n))
    finally:
        engine.dispose()
    active = provider.active_version()
    emit(
        {"rewrapped": done, "active_version": active},
        json,
        f"{done} organisation data keys now wrapped by root key version {active}",
    )


def _bar(json: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=err,
        transient=True,
        disable=json,
    )


@app.command("rotate-org")
def rotate_org(
    org: Annotated[str, typer.Option("--org", help="Organisation id (org_...).")],
    background: Annotated[
        bool,
        typer.Option("--background", help="Only rotate; leave re-encryption to the servers."),
    ] = False,
    json: Json = False,
) -> None:
    """Give an organisation a new data key: new writes use it at once; its secret versions
    are re-encrypted under it (here, with a progress bar, alongside any server doing the
    same), then the older key is destroyed. Servers keep serving throughout."""
    cfg = settings()
    vault = Vault(LocalKeyProvider(cfg.data_dir / ROOT_KEY_FILE))
    with unit_of_work(cfg) as db:
        state = secrets.rotate_data_key(db, vault, CLI_ACTOR, org)
    data: dict[str, object] = {"org_id": org, "active_version": state.active_version}
    if background:
        data["pending"] = state.pending
        emit(data, json, f"data key version {state.active_version} active for {org}")
        return
    engine = make_engine(cfg.resolved_database_url)
    try:
        with _bar(json) as bar:
            task = bar.add_task("re-encrypting secrets", total=state.pending)
            done = secrets.reencrypt_org(
                make_sessionmaker(engine, write=True),
                vault,
                org,
                progress=lambda n: bar.advance(task, n),
            )
    finally:
        engine.dispose()
    data |= {"reencrypted": done.moved, "unreadable": done.unreadable}
    data["destroyed_versions"] = list(done.destroyed)
    human = f"{done.moved} secret versions re-encrypted under data key {state.active_version}"
    if done.unreadable:
        human += f"; {done.unreadable} unreadable, so the older key is kept"
    emit(data, json, human)
    if done.unreadable:
        raise typer.Exit(1)


@app.command("retire")
def retire(
    version: Annotated[int, typer.Argument(help="Root-key version to remove.")],
    json: Json = False,
) -> None:
    """Remove a root-key version from the keyring file. Refused while it is the active
    version or any organisation data key is still wrapped by it (run `bastion keys
    rewrap` first). Backups whose data keys it wraps can no longer be opened."""
    cfg = settings()
    path = cfg.data_dir / ROOT_KEY_FILE
    try:
        keys = read_keyring(path)
    except ConfigError as exc:
        fail(str(exc))
    if version not in keys.versions:
        fail(f"root key version {version} is not in the keyring")
    if version == keys.active:
        fail(f"root key version {version} is the active version: rotate first")
    engine = make_engine(cfg.resolved_database_url)
    try:
        with make_sessionmaker(engine)() as db:
            wrapped = db.execute(
                select(func.count()).select_from(OrgKey).where(OrgKey.root_version == version)
            ).scalar_one()
    finally:
        engine.dispose()
    if wrapped:
        fail(
            f"{wrapped} organisation data keys are still wrapped by root key version "
            f"{version}: run `bastion keys rewrap` first"
        )
    remaining = {v: k for v, k in keys.versions.items() if v != version}
    _replace_keyring(path, keys.active, remaining)
    emit(
        {"retired": version, "versions": sorted(remaining), "active_version": keys.active},
        json,
        f"root key version {version} removed from {path.name}",
    )


def _replace_keyring(path: Path, active: int, versions: dict[int, bytes]) -> None:
    """Write the keyring atomically, mode 0600 from the start."""
    payload = {
        "active": active,
        "versions": {str(v): base64.b64encode(k).decode() for v, k in sorted(versions.items())},
    }
    staging = path.with_suffix(".retiring")
    staging.unlink(missing_ok=True)
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(jsonlib.dumps(payload))
    os.replace(staging, path)

"""Root-key rotation: `bastion keys rotate` adds a root-key version; `bastion keys
rewrap` re-wraps every organisation's data key under it (servers keep serving)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from sqlalchemy import func, select

from bastion.cli.common import emit, err, settings
from bastion.core.db import make_engine, make_sessionmaker
from bastion.core.keyring import ROOT_KEY_FILE, rotate_keyring
from bastion.identity import authcache
from bastion.secrets.models import OrgKey
from bastion.secrets.vault import LocalKeyProvider, rewrap

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

"""Shared CLI plumbing: settings, a unit of work, JSON or human output, exit codes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import typer
from rich.console import Console
from sqlalchemy.orm import Session

import bastion.registry  # noqa: F401 - every domain's registrations, before any command
from bastion.core import revisions
from bastion.core.config import ConfigError, Settings, load_settings
from bastion.core.context import Actor
from bastion.core.db import begin_write, make_engine, make_sessionmaker
from bastion.core.errors import BastionError
from bastion.core.keyring import load_pepper
from bastion.identity.tokens import TokenHasher

err = Console(stderr=True)
out = Console()

CLI_ACTOR = Actor(type="system", id="cli")

EXIT_USAGE = 2
EXIT_FAILURE = 1


def fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def hasher(cfg: Settings) -> TokenHasher:
    try:
        return TokenHasher(load_pepper(cfg))
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)


def settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)


@contextmanager
def unit_of_work(cfg: Settings) -> Iterator[Session]:
    """One transaction; committed only if the block finishes without error."""
    engine = make_engine(cfg.resolved_database_url)
    revisions.install()  # servers' cached credentials see what the CLI changes
    try:
        with make_sessionmaker(engine)() as db:
            begin_write(db)
            try:
                yield db
                db.commit()
            except BastionError as exc:
                db.rollback()
                fail(exc.detail)
    finally:
        engine.dispose()


def emit(data: dict[str, Any], as_json: bool, human: str) -> None:
    if as_json:
        typer.echo(json.dumps(data))
    else:
        out.print(human, highlight=False)

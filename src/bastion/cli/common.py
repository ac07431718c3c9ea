"""Shared CLI plumbing: settings, a unit of work, JSON or human output, exit codes.

Exit codes (docs/cli.md): 0 success; 1 the work failed (a broken chain, an object not
found, a refused change, an unreachable database); 2 usage or configuration (a bad
option, no data directory, a missing or unsafe key); 130 interrupted."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from sqlalchemy.orm import Session

import bastion.registry  # noqa: F401 - every domain's registrations, before any command
from bastion.core import revisions
from bastion.core.config import ConfigError, Settings, load_settings
from bastion.core.context import Actor
from bastion.core.db import begin_write, make_engine, make_sessionmaker, regions
from bastion.core.errors import BastionError
from bastion.core.keyring import ROOT_KEY_FILE, load_pepper
from bastion.core.pagination import Page
from bastion.core.permissions import ALL_PERMISSIONS, CredentialKind
from bastion.core.principal import Principal
from bastion.identity.tokens import TokenHasher

if TYPE_CHECKING:
    from bastion.secrets.vault import Vault

try:  # typer (>= 0.22) runs commands on a click of its own
    from typer._click.globals import get_current_context as _current_command
except ImportError:  # pragma: no cover - older typer
    from click import get_current_context as _current_command  # type: ignore[no-redef]

T = TypeVar("T")

err = Console(stderr=True)
out = Console()

CLI_ACTOR = Actor(type="system", id="cli")

EXIT_USAGE = 2
EXIT_FAILURE = 1
EXIT_INTERRUPTED = 130

# `--json` on every command: one JSON document on stdout, nothing else there.
Json = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]


def group(help: str) -> typer.Typer:
    """A command group: plain help (no `<bool>` placeholders, no truncated flags, the
    defaults shown), `bastion X` alone shows its help."""
    return typer.Typer(
        help=help,
        no_args_is_help=True,
        rich_markup_mode=None,
        pretty_exceptions_enable=False,
        context_settings=HELP_SETTINGS,
    )


HELP_SETTINGS: dict[str, Any] = {
    "help_option_names": ["-h", "--help"],
    "show_default": True,
    "max_content_width": 100,
}


def fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def hasher(cfg: Settings) -> TokenHasher:
    try:
        return TokenHasher(load_pepper(cfg))
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)


def settings(*, initialised: bool = True) -> Settings:
    """The instance's settings; with `initialised`, the data directory (and, for the
    default SQLite database, its file) must exist, else one line saying how to fix it."""
    try:
        cfg = load_settings()
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    if initialised:
        where = cfg.data_dir.resolve()
        if not where.is_dir():
            fail(
                f"no Bastion data directory at {where}: run `bastion init` or set "
                "BASTION_DATA_DIR (the directory `bastion serve` uses)",
                EXIT_USAGE,
            )
        if not cfg.database_url and not (where / "bastion.db").is_file():
            fail(f"no database in {where}: run `bastion init`", EXIT_USAGE)
    return cfg


def host_principal(org_id: str) -> Principal:
    """The operator at the host, for the services that take a principal: every
    permission in `org_id`, audited as the CLI (actor `system:cli`). Whoever runs the
    CLI holds the instance's keys and database already."""
    return Principal(
        principal_type="system",
        id=CLI_ACTOR.id or "cli",
        org_id=org_id,
        role="admin",
        credential=CredentialKind.API_KEY,
        role_permissions=ALL_PERMISSIONS,
        actor=CLI_ACTOR,
    )


def database_url(cfg: Settings) -> str:
    """The database a command works in: the only one, or (`BASTION_REGIONS`) the region
    of the organisation the command names (`--org`, an `ORG_ID` argument), of the region
    set (`regions.CURRENT`, e.g. `org create --region`), else the first region."""
    if not cfg.regions:
        return cfg.resolved_database_url
    region = regions.CURRENT.get()
    if region is None:
        click_ctx = _current_command(silent=True)
        params = click_ctx.params if click_ctx is not None else {}
        org_id = params.get("org") or params.get("org_id")
        if isinstance(org_id, str):
            with directory(cfg) as found:
                region = found.region_of(org_id)
    name = region or next(iter(cfg.regions))
    if name not in cfg.regions:
        fail(f"no region {name!r} in BASTION_REGIONS", EXIT_USAGE)
    return cfg.regions[name].resolved_database_url


@contextmanager
def directory(cfg: Settings) -> Iterator[regions.Regions]:
    """The routing directory and each region's engine, for a command (disposed after)."""
    found = regions.Regions(
        make_engine(cfg.resolved_database_url),
        {n: make_engine(r.resolved_database_url) for n, r in cfg.regions.items()},
        hasher=lambda email: hasher(cfg).keyed(regions.EMAIL_PURPOSE, email)[0],
    )
    try:
        yield found
    finally:
        found.dispose()


@contextmanager
def unit_of_work(cfg: Settings) -> Iterator[Session]:
    """One transaction; committed only if the block finishes without error."""
    engine = make_engine(database_url(cfg))
    revisions.install()  # servers' cached credentials see what the CLI changes
    try:
        with contextlib.ExitStack() as stack, make_sessionmaker(engine)() as db:
            if cfg.regions:  # an email claimed across regions (`regions.claim_email`)
                db.info[regions.REGIONS_INFO] = stack.enter_context(directory(cfg))
            begin_write(db)
            try:
                yield db
                db.commit()
            except BastionError as exc:
                db.rollback()
                fail(exc.detail)
    finally:
        engine.dispose()


def vault(cfg: Settings) -> Vault:
    """The instance's vault as the server opens it (root key, outbound policy of the
    customer-managed key providers)."""
    from bastion.secrets.cmk import ProviderPolicy
    from bastion.secrets.vault import LocalKeyProvider, Vault

    return Vault(
        LocalKeyProvider(cfg.data_dir / ROOT_KEY_FILE),
        policy=ProviderPolicy(
            allow=tuple(cfg.outbound_allow),
            plaintext=tuple(cfg.outbound_plaintext_allow),
            pkcs11_libraries=tuple(cfg.pkcs11_libraries),
        ),
    )


def iso(value: Any) -> str | None:
    """A time as RFC 3339 for `--json`, or None."""
    return value.isoformat() if value is not None else None


def emit(data: dict[str, Any], as_json: bool, human: str) -> None:
    if as_json:
        typer.echo(json.dumps(data))
    else:
        out.print(human, highlight=False, soft_wrap=True)


def table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    """Rows as aligned plain-text columns (a header line, then one line each)."""
    if not rows:
        return "(none)"
    cells = [[str(r.get(c) if r.get(c) is not None else "-") for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def all_pages(fetch: Callable[[str | None], Page[T]]) -> list[T]:
    """Every item of a paged service listing."""
    items: list[T] = []
    cursor = None
    while True:
        page = fetch(cursor)
        items.extend(page.data)
        cursor = page.next_cursor
        if not cursor:
            return items


def progress_bar(json: bool) -> Progress:
    """A progress bar for long work on standard error (n of m), gone when done; none
    with --json, whose answer is the whole output."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=err,
        transient=True,
        disable=json,
    )

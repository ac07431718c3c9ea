"""`bastion` command line: bootstrap and operate an instance without HTTP.

Every failure is one line on stderr saying what is wrong and how to fix it, with the
exit codes of docs/cli.md; `--debug` (or BASTION_DEBUG=1) shows the traceback instead."""

from __future__ import annotations

import errno
import json as json_module
import os
import socket
import ssl
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Annotated

import typer

from bastion.cli import (
    apikey,
    audit,
    compliance,
    doctor,
    keys,
    org,
    privacy,
    provisioning,
    sso,
    user,
)
from bastion.cli.common import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    HELP_SETTINGS,
    Json,
    emit,
    err,
    fail,
    settings,
)
from bastion.core.config import ConfigError, Settings
from bastion.core.keyring import (
    AUDIT_SIGNING_KEY_FILE,
    PEPPER_FILE,
    ROOT_KEY_FILE,
    create_keyring,
    load_pepper,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from uvicorn import Config

app = typer.Typer(
    help="Bastion: security and compliance control plane for AI agents. Every command "
    "reads its configuration from BASTION_* environment variables (BASTION_DATA_DIR: "
    "the data directory, default ./.bastion). Exit codes: 0 ok, 1 failed, 2 usage or "
    "configuration, 130 interrupted.",
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings=HELP_SETTINGS,
)
app.add_typer(org.app, name="org")
app.add_typer(user.app, name="user")
app.add_typer(apikey.app, name="apikey")
app.add_typer(audit.app, name="audit")
app.add_typer(keys.app, name="keys")
app.add_typer(compliance.app, name="compliance")
app.add_typer(privacy.app, name="privacy")
app.add_typer(sso.app, name="sso")
app.add_typer(provisioning.scim, name="scim")
app.add_typer(provisioning.oauth, name="oauth")
app.command("doctor")(doctor.doctor)


def _version() -> str:
    try:
        return version("bastion")
    except PackageNotFoundError:  # pragma: no cover - run from a source tree
        return "unknown"


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"bastion {_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show the traceback of an unexpected error.")
    ] = False,
) -> None:
    if debug:
        os.environ["BASTION_DEBUG"] = "1"


def _upgrade(url: str, json: bool) -> int:
    """Apply every pending migration, one revision at a time, with a progress bar."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from bastion.migrations.runner import pending, upgrade

    todo = pending(url)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=err,
        transient=True,
        disable=json or not todo,
    ) as bar:
        task = bar.add_task("migrating", total=len(todo))
        for revision in todo:
            bar.update(task, description=f"migrating to {revision}")
            upgrade(url, revision)
            bar.advance(task)
    return len(todo)


def _upgrade_all(cfg: Settings, json: bool) -> int:
    """`_upgrade` the database; with `BASTION_REGIONS`, each region's (then its residency
    guards) and the directory's routing tables instead."""
    if not cfg.regions:
        return _upgrade(cfg.resolved_database_url, json)
    from bastion.core.db import make_engine
    from bastion.core.db.regions import DIRECTORY, install_guards

    applied = 0
    for region in cfg.regions.values():
        applied += _upgrade(region.resolved_database_url, json)
        engine = make_engine(region.resolved_database_url)
        try:
            install_guards(engine)
        finally:
            engine.dispose()
    engine = make_engine(cfg.resolved_database_url)
    try:
        DIRECTORY.create_all(engine)
    finally:
        engine.dispose()
    return applied


@app.command()
def init(json: Json = False) -> None:
    """Create the data directory, key files (mode 0600) and the database at schema head.
    Safe to run again."""
    cfg = settings(initialised=False)
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(cfg.data_dir, 0o700)
    created = []
    for name in (PEPPER_FILE, ROOT_KEY_FILE, AUDIT_SIGNING_KEY_FILE):
        if create_keyring(cfg.data_dir / name):
            created.append(str(cfg.data_dir / name))
    try:
        load_pepper(cfg)
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    applied = _upgrade_all(cfg, json)
    where = str(cfg.data_dir.resolve())
    emit(
        {"data_dir": where, "created": created, "migrations_applied": applied},
        json,
        "\n".join(
            [*(f"created {c}" for c in created), f"database ready at schema head in {where}"]
        ),
    )


@app.command()
def migrate(json: Json = False) -> None:
    """Upgrade the database schema to head, with a progress bar."""
    applied = _upgrade_all(settings(), json)
    emit({"migrations_applied": applied}, json, f"database at schema head ({applied} applied)")


def _port_free(host: str, port: int) -> str | None:
    """None when `host:port` can be bound now; else why not (one line)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"cannot resolve {host}: {exc.strerror}"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return f"{host}:{port} is already in use: stop what listens there or pass --port"
            return f"cannot bind {host}:{port}: {exc.strerror}"
    return None


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option(help="Address to bind (default: BASTION_HOST, 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port to bind (default: BASTION_PORT, 8400).")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(min=1, max=64, help="Worker processes (default: BASTION_WORKERS, 1)."),
    ] = None,
    json: Json = False,
) -> None:
    """Serve the HTTP API: over TLS (TLS 1.2+, ECDHE with AEAD ciphers) when
    BASTION_TLS_CERTFILE and BASTION_TLS_KEYFILE are set. In production
    (BASTION_ENV=production) plain HTTP is refused unless a TLS-terminating proxy in
    front is declared (BASTION_TLS_TERMINATED_BY_PROXY=true)."""
    import uvicorn
    from sqlalchemy import create_engine

    from bastion.migrations.runner import current_revision, head_revision

    cfg = settings()
    _check_transport(cfg)
    try:
        load_pepper(cfg)
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    engine = create_engine(cfg.resolved_database_url)
    try:
        with engine.connect() as conn:
            at = current_revision(conn)
    except Exception:
        fail("database unreachable; check BASTION_DATABASE_URL and run `bastion init`")
    finally:
        engine.dispose()
    if at != head_revision():
        fail(f"database schema is at {at}, not head: run `bastion migrate`")
    bind_host, bind_port = host or cfg.host, port or cfg.port
    busy = _port_free(bind_host, bind_port)
    if busy is not None:
        fail(busy)
    scheme = "https" if cfg.tls_enabled else "http"
    listening = f"{scheme}://{bind_host}:{bind_port}"
    if json:
        typer.echo(json_module.dumps({"listening": listening, "docs": f"{listening}/docs"}))
    else:
        err.print(f"Bastion listening on {listening} (docs at /docs)", highlight=False)
    trusted = cfg.tls_terminated_by_proxy and bool(cfg.forwarded_allow_ips)
    _metrics_dir(cfg, workers or cfg.workers)
    uvicorn.run(
        "bastion.api.app:create_served_app",
        factory=True,
        host=bind_host,
        port=bind_port,
        workers=workers or cfg.workers,
        log_level="warning",
        access_log=False,
        # X-Forwarded-Proto/For only from the declared proxy's addresses.
        proxy_headers=trusted,
        forwarded_allow_ips=",".join(cfg.forwarded_allow_ips) if trusted else "",
        server_header=False,
        ssl_certfile=str(cfg.tls_certfile) if cfg.tls_enabled else None,
        ssl_keyfile=str(cfg.tls_keyfile) if cfg.tls_enabled else None,
        ssl_context_factory=_ssl_context if cfg.tls_enabled else None,
    )


def _metrics_dir(cfg: Settings, workers: int) -> None:
    """Several workers: prometheus-client's multiprocess mode, in a directory emptied
    now (samples of a previous run must not count), unless one is set already."""
    if workers <= 1 or os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    import shutil

    where = cfg.data_dir / "metrics"
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(mode=0o700)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(where.resolve())


def _check_transport(cfg: Settings) -> None:
    """Refuse a half TLS configuration, and plain HTTP in production without a
    TLS-terminating proxy declared in front."""
    if (cfg.tls_certfile is None) != (cfg.tls_keyfile is None):
        fail("set both BASTION_TLS_CERTFILE and BASTION_TLS_KEYFILE, or neither", EXIT_USAGE)
    if cfg.env == "production" and not cfg.served_over_https:
        fail(
            "refusing to serve plain HTTP in production: set BASTION_TLS_CERTFILE and "
            "BASTION_TLS_KEYFILE, or put a TLS-terminating proxy in front and declare it "
            "with BASTION_TLS_TERMINATED_BY_PROXY=true",
            EXIT_USAGE,
        )


def _ssl_context(config: Config, default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    """uvicorn's `ssl_context_factory`: our TLS settings (`core.tls`), not uvicorn's or
    the Python build's defaults. Module-level, so worker processes can import it."""
    from bastion.core.tls import server_context

    if config.ssl_certfile is None:  # `serve` sets both whenever it sets this factory
        raise RuntimeError("TLS without a certificate file")
    return server_context(config.ssl_certfile, config.ssl_keyfile)


def _explain(exc: BaseException) -> str:
    """One line for an unexpected error: what went wrong and, where known, the fix."""
    from sqlalchemy.exc import OperationalError, ProgrammingError

    first = (str(exc).strip().splitlines() or [""])[0]
    if isinstance(exc, OperationalError | ProgrammingError):
        reason = (str(exc.orig).strip().splitlines() or [""])[0] if exc.orig else first
        return (
            f"database error ({reason}): check BASTION_DATABASE_URL and BASTION_DATA_DIR, "
            "run `bastion init` (or `bastion migrate`), or `bastion doctor`"
        )
    if isinstance(exc, PermissionError):
        return f"permission denied: {exc.filename or first}: run as the user that owns the data"
    if isinstance(exc, OSError):
        return f"{exc.strerror or first}: {exc.filename}" if exc.filename else first
    return f"{type(exc).__name__}: {first} (run with --debug for the traceback)"


def main() -> None:
    """The `bastion` entry point: the Typer app, with every unexpected error turned into
    one line (exit 1) unless --debug or BASTION_DEBUG=1."""
    debug = "--debug" in sys.argv[1:] or os.environ.get("BASTION_DEBUG") == "1"
    try:
        app(prog_name="bastion")
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:
        if debug or os.environ.get("BASTION_DEBUG") == "1":
            raise
        err.print(f"[bold red]error:[/] {_explain(exc)}", highlight=False, soft_wrap=True)
        sys.exit(EXIT_FAILURE)


if __name__ == "__main__":
    main()

"""`bastion` command line: bootstrap and operate an instance without HTTP."""

from __future__ import annotations

import os
import ssl
from typing import TYPE_CHECKING, Annotated

import typer

from bastion.cli import apikey, audit, compliance, keys, org
from bastion.cli.common import EXIT_USAGE, err, fail, out, settings
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
    help="Bastion: security and compliance control plane for AI agents.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(org.app, name="org")
app.add_typer(apikey.app, name="apikey")
app.add_typer(audit.app, name="audit")
app.add_typer(keys.app, name="keys")
app.add_typer(compliance.app, name="compliance")


@app.command()
def init() -> None:
    """Create the data directory, key files (mode 0600) and the database at schema head.
    Safe to run again."""
    from bastion.migrations.runner import upgrade

    cfg = settings()
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(cfg.data_dir, 0o700)
    for name in (PEPPER_FILE, ROOT_KEY_FILE, AUDIT_SIGNING_KEY_FILE):
        if create_keyring(cfg.data_dir / name):
            out.print(f"created {cfg.data_dir / name}")
    try:
        load_pepper(cfg)
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    upgrade(cfg.resolved_database_url)
    out.print(f"database ready at schema head in {cfg.data_dir}")


@app.command()
def migrate() -> None:
    """Upgrade the database schema to head."""
    from bastion.migrations.runner import upgrade

    upgrade(settings().resolved_database_url)
    out.print("database at schema head")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to bind.")] = None,
    workers: Annotated[int | None, typer.Option(min=1, max=64, help="Worker processes.")] = None,
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
    scheme = "https" if cfg.tls_enabled else "http"
    err.print(f"Bastion listening on {scheme}://{bind_host}:{bind_port} (docs at /docs)")
    trusted = cfg.tls_terminated_by_proxy and bool(cfg.forwarded_allow_ips)
    uvicorn.run(
        "bastion.api.app:create_app",
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


if __name__ == "__main__":
    app()

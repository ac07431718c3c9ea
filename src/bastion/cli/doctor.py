"""`bastion doctor`: check a deployment and say what to fix.

Each check answers ok, warn or fail with one line of detail and, when not ok, the fix.
Checks: configuration loads; the data directory and key files exist, are readable and
private (no group or other permission bits); the database answers and its schema is at
head; Redis answers (when configured); TLS (both files or neither, readable, the
certificate within its validity; plain HTTP refused in production without a declared
proxy); SMTP answers (when configured); the clock agrees with the database's; the
public URL is sane for the environment. Exit 1 when any check fails."""

from __future__ import annotations

import smtplib
import ssl
import stat
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import typer

from bastion.cli.common import EXIT_FAILURE, Json, emit
from bastion.core.config import ConfigError, Settings, load_settings
from bastion.core.keyring import AUDIT_SIGNING_KEY_FILE, PEPPER_FILE, ROOT_KEY_FILE, read_keyring

CLOCK_SKEW_WARN_SECONDS = 2.0
CLOCK_SKEW_FAIL_SECONDS = 30.0
PROBE_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # "ok" | "warn" | "fail"
    detail: str
    fix: str | None = None


def _private(path: Path) -> str | None:
    """Why `path`'s permissions are unsafe, or None."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        return f"mode {mode:04o} lets others read it"
    return None


def check_data_dir(cfg: Settings) -> list[Check]:
    where = cfg.data_dir.resolve()
    if not where.is_dir():
        return [
            Check(
                "data_dir",
                "fail",
                f"no data directory at {where}",
                "run `bastion init`, or set BASTION_DATA_DIR to the server's data directory",
            )
        ]
    checks = []
    unsafe = _private(where)
    checks.append(
        Check("data_dir", "warn", f"{where}: {unsafe}", f"chmod 700 {where}")
        if unsafe
        else Check("data_dir", "ok", str(where))
    )
    names = [ROOT_KEY_FILE, AUDIT_SIGNING_KEY_FILE]
    if cfg.pepper is None:
        names.insert(0, PEPPER_FILE)
    for name in names:
        path = where / name
        label = f"key:{name}"
        if not path.is_file():
            checks.append(Check(label, "fail", f"{path} is missing", "run `bastion init`"))
            continue
        unsafe = _private(path)
        if unsafe:
            checks.append(Check(label, "fail", f"{path}: {unsafe}", f"chmod 600 {path}"))
            continue
        try:
            keys = read_keyring(path)
        except (ConfigError, OSError) as exc:
            checks.append(
                Check(label, "fail", f"{path}: {exc}", "restore the file from your backup")
            )
            continue
        checks.append(Check(label, "ok", f"{path} (active version {keys.active})"))
    return checks


def check_database(cfg: Settings) -> tuple[list[Check], float | None]:
    """The database check and the clock skew against it (seconds; None: not measured)."""
    from sqlalchemy import create_engine, text

    from bastion.migrations.runner import current_revision, head_revision

    url = cfg.resolved_database_url
    engine = create_engine(url, connect_args={"connect_timeout": 5} if "postgres" in url else {})
    skew = None
    try:
        with engine.connect() as conn:
            at = current_revision(conn)
            if conn.dialect.name == "postgresql":
                before = datetime.now(UTC)
                db_now = conn.execute(text("SELECT clock_timestamp()")).scalar_one()
                after = datetime.now(UTC)
                skew = (db_now - (before + (after - before) / 2)).total_seconds()
    except Exception as exc:
        reason = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [""])[0]
        return [
            Check(
                "database",
                "fail",
                f"unreachable: {reason}",
                "check BASTION_DATABASE_URL (and that the server runs), then `bastion init`",
            )
        ], None
    finally:
        engine.dispose()
    head = head_revision()
    if at != head:
        return [
            Check("database", "fail", f"schema at {at}, head is {head}", "run `bastion migrate`")
        ], skew
    return [Check("database", "ok", f"{engine.dialect.name}, schema at head ({head})")], skew


def check_clock(skew: float | None) -> Check:
    if skew is None:
        return Check("clock", "ok", "same host clock as the database (SQLite)")
    detail = f"{skew:+.2f} s against the database"
    fix = "synchronise both hosts' clocks with NTP (chrony, systemd-timesyncd)"
    if abs(skew) >= CLOCK_SKEW_FAIL_SECONDS:
        return Check("clock", "fail", detail, fix)
    if abs(skew) >= CLOCK_SKEW_WARN_SECONDS:
        return Check("clock", "warn", detail, fix)
    return Check("clock", "ok", detail)


def check_redis(cfg: Settings) -> Check | None:
    url = cfg.redis_url_value
    if not url:
        return None
    import redis

    client = redis.Redis.from_url(url, socket_timeout=PROBE_TIMEOUT_SECONDS)
    try:
        client.ping()
    except redis.RedisError as exc:
        return Check("redis", "fail", f"no answer: {type(exc).__name__}", "check BASTION_REDIS_URL")
    finally:
        client.close()
    return Check("redis", "ok", "answers PING")


def check_tls(cfg: Settings) -> Check:
    if (cfg.tls_certfile is None) != (cfg.tls_keyfile is None):
        return Check(
            "tls",
            "fail",
            "only one of BASTION_TLS_CERTFILE and BASTION_TLS_KEYFILE is set",
            "set both, or neither",
        )
    if cfg.tls_certfile is not None and cfg.tls_keyfile is not None:
        from cryptography import x509

        try:
            cert = x509.load_pem_x509_certificate(cfg.tls_certfile.read_bytes())
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
                cfg.tls_certfile, cfg.tls_keyfile
            )
        except (OSError, ValueError, ssl.SSLError) as exc:
            return Check(
                "tls",
                "fail",
                f"certificate or key unusable: {exc}",
                "check the files and that the key matches the certificate",
            )
        now = datetime.now(UTC)
        if not cert.not_valid_before_utc <= now < cert.not_valid_after_utc:
            return Check(
                "tls",
                "fail",
                f"certificate valid {cert.not_valid_before_utc:%Y-%m-%d} to "
                f"{cert.not_valid_after_utc:%Y-%m-%d}, not now",
                "renew the certificate",
            )
        days = (cert.not_valid_after_utc - now).days
        if days < 14:
            return Check("tls", "warn", f"certificate expires in {days} days", "renew it")
        return Check("tls", "ok", f"served over TLS; certificate valid {days} more days")
    if cfg.tls_terminated_by_proxy:
        return Check("tls", "ok", "TLS terminated by the declared proxy in front")
    if cfg.env == "production":
        return Check(
            "tls",
            "fail",
            "plain HTTP in production",
            "set BASTION_TLS_CERTFILE and BASTION_TLS_KEYFILE, or declare a TLS-terminating "
            "proxy with BASTION_TLS_TERMINATED_BY_PROXY=true",
        )
    return Check("tls", "warn", "plain HTTP (development)", "use TLS in production")


def check_smtp(cfg: Settings) -> Check | None:
    if not cfg.smtp_host:
        return None
    where = f"{cfg.smtp_host}:{cfg.smtp_port}"
    try:
        client: smtplib.SMTP
        if cfg.smtp_tls:
            client = smtplib.SMTP_SSL(cfg.smtp_host, cfg.smtp_port, timeout=PROBE_TIMEOUT_SECONDS)
        else:
            client = smtplib.SMTP(cfg.smtp_host, cfg.smtp_port, timeout=PROBE_TIMEOUT_SECONDS)
        with client:
            code, _ = client.ehlo()
    except (OSError, smtplib.SMTPException) as exc:
        return Check(
            "smtp", "fail", f"{where} does not answer: {exc}", "check BASTION_SMTP_HOST and _PORT"
        )
    if code != 250:
        return Check("smtp", "fail", f"{where} refused EHLO ({code})", "check the mail server")
    return Check("smtp", "ok", f"{where} answers EHLO")


def check_public_url(cfg: Settings) -> Check:
    url = cfg.public_url
    parts = urlsplit(url)
    local = parts.hostname in ("localhost", "127.0.0.1", "::1")
    if cfg.env == "production":
        if parts.scheme != "https":
            return Check(
                "public_url",
                "fail",
                f"{url} is not https in production",
                "set BASTION_PUBLIC_URL to the https origin users reach",
            )
        if local:
            return Check(
                "public_url",
                "fail",
                f"{url} is a loopback address in production",
                "set BASTION_PUBLIC_URL to the origin users reach (links in mail use it)",
            )
    elif local:
        return Check(
            "public_url",
            "warn",
            f"{url} (links in mails and SSO redirects point at this host only)",
            "set BASTION_PUBLIC_URL to the origin users reach",
        )
    return Check("public_url", "ok", url)


def run_checks() -> list[Check]:
    try:
        cfg = load_settings()
    except ConfigError as exc:
        return [Check("config", "fail", str(exc), "fix the BASTION_* variable it names")]
    checks = [Check("config", "ok", f"environment {cfg.env}")]
    checks += check_data_dir(cfg)
    database, skew = check_database(cfg)
    checks += database
    if database[0].status != "fail" or skew is not None:
        checks.append(check_clock(skew))
    for optional in (check_redis(cfg), check_smtp(cfg)):
        if optional is not None:
            checks.append(optional)
    checks += [check_tls(cfg), check_public_url(cfg)]
    return checks


def doctor(json: Json = False) -> None:
    """Check this deployment (keys, database schema, Redis, TLS, SMTP, clock, public URL)
    and say what to fix. Exit 1 when a check fails (warnings do not)."""
    checks = run_checks()
    failed = any(c.status == "fail" for c in checks)
    lines = []
    for c in checks:
        line = f"{c.status.upper():4}  {c.name:22} {c.detail}"
        if c.fix:
            line += f"\n      {'':22} fix: {c.fix}"
        lines.append(line)
    emit({"ok": not failed, "checks": [asdict(c) for c in checks]}, json, "\n".join(lines))
    raise typer.Exit(EXIT_FAILURE if failed else 0)

"""Typed settings from the environment (`BASTION_*`) or a `.env`-style config file.

Built once in the app factory or CLI command, never at import time. Fails closed: a
placeholder or short secret stops the process with a clear message.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_WORDS = ("changeme", "change-me", "placeholder", "secret", "password", "example", "xxx")
MIN_SECRET_CHARS = 32


class ConfigError(Exception):
    """The configuration cannot be used; the message says what to fix."""


def check_secret(name: str, value: str) -> None:
    lowered = value.lower()
    if len(value) < MIN_SECRET_CHARS:
        raise ConfigError(f"{name} is too short: use at least {MIN_SECRET_CHARS} characters")
    if any(word in lowered for word in PLACEHOLDER_WORDS) or len(set(value)) < 8:
        raise ConfigError(f"{name} looks like a placeholder: generate a random value")


REGION_NAME = r"^[a-z][a-z0-9-]{0,31}$"
DEFAULT_REGION = "default"


class RegionConfig(BaseModel):
    """One region of `BASTION_REGIONS`: its database and, optionally, its Redis."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    database_url: str = Field(repr=False)
    redis_url: SecretStr | None = None

    @property
    def resolved_database_url(self) -> str:
        return _driver_url(self.database_url)


def _driver_url(url: str) -> str:
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="BASTION_", env_file=os.environ.get("BASTION_CONFIG_FILE"), extra="ignore"
    )

    data_dir: Path = Path(".bastion")
    database_url: str | None = Field(default=None, repr=False)
    redis_url: SecretStr | None = None
    # Data residency (docs/residency.md): region name -> its database URL, or
    # {"database_url": ..., "redis_url": ...}. Set, `database_url` is the global
    # directory (routing data only) and every organisation's rows live in its region's
    # database. Unset: one region, `default`, in `database_url` (today's shape).
    regions: dict[str, RegionConfig] = Field(default_factory=dict, repr=False)
    # Prefix of rate-limit keys in Redis, so several instances can share one server.
    rate_limit_namespace: str = "bastion"
    host: str = "127.0.0.1"
    port: int = 8400
    workers: Annotated[int, Field(ge=1, le=64)] = 1
    tls_certfile: Path | None = None
    tls_keyfile: Path | None = None
    # "production" refuses to serve plain HTTP unless a TLS-terminating proxy in front is
    # declared (`tls_terminated_by_proxy`). Only from `forwarded_allow_ips` (addresses or
    # CIDRs of that proxy) are X-Forwarded-Proto/For believed; nobody's when empty.
    env: Literal["development", "production"] = "development"
    tls_terminated_by_proxy: bool = False
    forwarded_allow_ips: list[str] = Field(default_factory=list)
    # Proxies (addresses or CIDRs) whose X-Forwarded-For Bastion believes when it decides
    # a request's client address (IP allowlists, throttling, audit): only when the peer
    # is one of them, and then the rightmost address that is not one of them. Nobody's
    # when empty: the peer is the client.
    trusted_proxies: list[str] = Field(default_factory=list)
    # The origin of every absolute link Bastion sends (password-reset emails, SSO), and
    # the WebAuthn origin (its host is the RP ID; browsers refuse an IP address there,
    # hence localhost): scheme, host and port only.
    public_url: str = "http://localhost:8400"

    # Overrides the pepper keyring file (for orchestrators that inject secrets by env).
    pepper: SecretStr | None = None

    # Database writes: a writer waits at most this long for the database (the writer slot
    # on SQLite, row locks on PostgreSQL) or a pooled connection, then answers 503
    # (seconds); a transaction holding the writer longer than the hold limit is rolled
    # back (SQLite: by a watchdog; PostgreSQL: idle_in_transaction_session_timeout).
    database_write_wait: Annotated[float, Field(gt=0, le=60)] = 5.0
    database_write_hold_limit: Annotated[float, Field(ge=1, le=3600)] = 30.0
    # SQLite durability: FULL syncs the write-ahead log at every commit, so an
    # acknowledged change (and its audit event) survives a power loss; NORMAL is faster
    # (about 0.4 ms less per commit) but may lose the last commits on power loss (never on
    # a process crash). An audit trail promises durability after acknowledgement.
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    # PostgreSQL connections per server process: the ORM pool's steady size and how many
    # more it may open under bursts, plus the hot-path readers' own few. A server with N
    # workers opens at most N x (size + overflow + 4); keep that under PostgreSQL's
    # max_connections across every replica (or put PgBouncer in front).
    database_pool_size: Annotated[int, Field(ge=1, le=200)] = 10
    database_pool_overflow: Annotated[int, Field(ge=0, le=200)] = 20

    body_limit_bytes: Annotated[int, Field(ge=1024)] = 1024 * 1024

    # Sandboxes (bastion.sandboxes, docs/sandboxes.md): the backend executing runs'
    # commands; where workspaces' bases are kept (default: DATA_DIR/sandboxes); the
    # largest gzip tar a workspace's base may be uploaded as, and what it may unpack to.
    sandbox_backend: Literal["bwrap", "gvisor", "kubernetes"] = "bwrap"
    sandbox_dir: Path | None = None
    sandbox_upload_limit_bytes: Annotated[int, Field(ge=1024)] = 64 * 1024 * 1024
    sandbox_base_max_bytes: Annotated[int, Field(ge=1024)] = 1024 * 1024 * 1024
    sandbox_base_max_files: Annotated[int, Field(ge=1)] = 100_000
    # Kubernetes backend: namespace and runtime class of the rendered SandboxClaims.
    sandbox_k8s_namespace: str = "bastion-sandboxes"
    sandbox_k8s_runtime_class: str = "gvisor"
    # The hot routes (`/v1/me`, authorization checks, the tool-call gate) served without
    # the framework's routing and dependencies, to the same answers (`bastion.api.fast`);
    # off, they take the framework's path like every other route.
    fast_path: bool = True
    session_idle_timeout: Annotated[int, Field(ge=60)] = 30 * 60
    session_absolute_timeout: Annotated[int, Field(ge=300)] = 12 * 60 * 60
    setup_token_ttl: Annotated[int, Field(ge=300)] = 72 * 60 * 60

    # OAuth 2.0 access tokens (client credentials): their lifetime in seconds (5 to 60
    # minutes). A previous signing key verifies tokens for this long after a rotation.
    oauth_token_ttl: Annotated[int, Field(ge=300, le=3600)] = 15 * 60

    login_failures_per_account: Annotated[int, Field(ge=1)] = 10
    login_failures_per_ip: Annotated[int, Field(ge=1)] = 50
    login_failure_window: Annotated[int, Field(ge=1)] = 15 * 60
    api_requests_per_minute: Annotated[int, Field(ge=1)] = 6000
    idempotency_ttl: Annotated[int, Field(ge=60)] = 24 * 60 * 60

    argon2_time_cost: Annotated[int, Field(ge=1, le=20)] = 3
    argon2_memory_kib: Annotated[int, Field(ge=8, le=4 * 1024 * 1024)] = 64 * 1024
    argon2_parallelism: Annotated[int, Field(ge=1, le=16)] = 2

    # Seconds between automatic signed checkpoints of every audit chain with new events.
    audit_checkpoint_interval: Annotated[int, Field(ge=5)] = 300
    # Audit sinks: how often the delivery loop looks for work (seconds).
    audit_sink_poll_interval: Annotated[float, Field(gt=0, le=60)] = 2.0
    # Outbound destinations that may be internal (host names or CIDRs), e.g.
    # '["127.0.0.1/32", "siem.internal"]'. Everything else internal is refused (SSRF).
    outbound_allow: list[str] = Field(default_factory=list)
    # Outbound destinations that may be sent to without encryption (http://, syslog over
    # plain TCP, SMTP without TLS): host names, host:port, addresses or CIDRs, e.g.
    # '["127.0.0.0/8", "syslog.internal:514"]'. Everything else needs verified TLS.
    outbound_plaintext_allow: list[str] = Field(default_factory=list)
    # PKCS#11 libraries an organisation's customer-managed key may name (loading one runs
    # its code in the server: the operator decides), e.g.
    # '["/usr/lib/softhsm/libsofthsm2.so"]'. Empty: the `pkcs11` provider is refused.
    pkcs11_libraries: list[str] = Field(default_factory=list)
    # A proxy all outbound HTTP goes through (webhooks, SIEM HTTP sinks, Slack and
    # webhook alerts), e.g. http://user:pass@proxy.internal:3128. HTTP(S)_PROXY from the
    # environment is never used. Destinations are still vetted against the SSRF policy.
    outbound_proxy: SecretStr | None = None
    # Alerts: how often rules are evaluated (seconds), and the SMTP server for email.
    alert_poll_interval: Annotated[float, Field(gt=0, le=60)] = 5.0
    # Approvals: how often expiries are recorded and escalations announced (seconds).
    approval_sweep_interval: Annotated[float, Field(gt=0, le=60)] = 2.0
    # Approvals: how often approvers' notifications (email, Slack) are sent (seconds), and
    # the Slack Web API they go to (`chat.postMessage` with the organisation's bot token).
    approval_notify_interval: Annotated[float, Field(gt=0, le=60)] = 2.0
    # Approvals: how long finished notices (sent, or given up) of closed approvals are
    # kept (days) before the notifier's hourly purge removes them.
    approval_notice_retention_days: Annotated[int, Field(ge=1, le=3650)] = 30
    slack_api_url: str = "https://slack.com/api"
    # Where Slack's `response_url`s point: a click's answer is posted only to a URL under it.
    slack_response_url_prefix: str = "https://hooks.slack.com/"
    # Compliance: how often access reviews past their due date get `on_due` and reviewers
    # are reminded (seconds), and how often every organisation's controls are evaluated
    # and their history stored (seconds; 0: only when asked, e.g. by a report).
    access_review_sweep_interval: Annotated[float, Field(gt=0, le=3600)] = 60.0
    compliance_evaluate_interval: Annotated[int, Field(ge=0)] = 3600
    smtp_host: str | None = None
    smtp_port: Annotated[int, Field(ge=1, le=65535)] = 25
    smtp_from: str = "bastion@localhost"
    # SMTP is encrypted and its certificate verified: STARTTLS (default) or implicit TLS
    # (`smtp_tls`, port 465); `smtp_ca_file` trusts a private CA. Plain SMTP only with
    # both off and the server in BASTION_OUTBOUND_PLAINTEXT_ALLOW, and never with a login.
    smtp_starttls: bool = True
    smtp_tls: bool = False
    smtp_ca_file: Path | None = None
    smtp_username: str | None = Field(default=None, repr=False)
    smtp_password: SecretStr | None = None
    # Webhooks: how often outbound deliveries are sent (seconds); attempts per delivery;
    # consecutive failed attempts after which a subscription is disabled; retry backoff
    # (exponential with full jitter) base and cap in seconds; the per-request timeout;
    # and how long inbound events and the outbound delivery log are kept (days).
    webhook_poll_interval: Annotated[float, Field(gt=0, le=60)] = 2.0
    webhook_max_attempts: Annotated[int, Field(ge=1, le=50)] = 8
    webhook_disable_after_failures: Annotated[int, Field(ge=1)] = 20
    webhook_retry_base_seconds: Annotated[float, Field(gt=0)] = 10.0
    webhook_retry_max_seconds: Annotated[float, Field(gt=0)] = 3600.0
    webhook_timeout_seconds: Annotated[float, Field(gt=0, le=60)] = 10.0
    webhook_retention_days: Annotated[int, Field(ge=1, le=3650)] = 30

    # SSO: the DNS resolver domain verification asks (`host:port`, e.g. a private
    # resolver or a test server); empty: the system's. Origins other than
    # `public_url` that an SSO sign-in may return to (`return_to`), e.g. a console
    # served elsewhere: scheme, host and port each.
    dns_resolver: str | None = None
    allowed_return_origins: list[str] = Field(default_factory=list)
    # Seconds the identity provider's discovery document and keys are kept, and the
    # least seconds between two fetches of its keys for an unknown key id.
    sso_metadata_ttl: Annotated[int, Field(ge=60, le=86_400)] = 3600
    sso_jwks_refetch_interval: Annotated[float, Field(ge=0, le=3600)] = 30.0
    sso_http_timeout: Annotated[float, Field(gt=0, le=60)] = 10.0

    log_level: str = "info"
    log_json: bool = True
    # BASTION_LOG_FORMAT: json (one object a line) or text; set, it overrides log_json.
    log_format: Literal["json", "text"] | None = None
    # GET /metrics (Prometheus) answers a scraper sending this bearer token; unset: off.
    metrics_token: SecretStr | None = None
    # OpenTelemetry: a span per request (the `otel` extra; exporter by OTEL_* variables).
    otel_traces: bool = False

    @field_validator("pepper")
    @classmethod
    def _pepper_is_strong(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            try:
                check_secret("BASTION_PEPPER", value.get_secret_value())
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("regions", mode="before")
    @classmethod
    def _regions_shape(cls, value: object) -> object:
        if isinstance(value, dict):
            return {
                name: {"database_url": entry} if isinstance(entry, str) else entry
                for name, entry in value.items()
            }
        return value

    @field_validator("regions")
    @classmethod
    def _region_names(cls, value: dict[str, RegionConfig]) -> dict[str, RegionConfig]:
        for name, entry in value.items():
            if not re.match(REGION_NAME, name):
                raise ValueError("region names are lowercase letters, digits and '-' (<= 32)")
            if not entry.database_url.strip():
                raise ValueError(f"region {name} needs a database URL")
        urls = [entry.resolved_database_url for entry in value.values()]
        if len(set(urls)) != len(urls):
            raise ValueError("each region needs a database of its own")
        return value

    @field_validator("metrics_token")
    @classmethod
    def _metrics_token_is_strong(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters (e.g. `openssl rand -hex 32`)")
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url_is_an_origin(cls, value: str) -> str:
        parsed = urlsplit(value.strip())
        try:
            port = parsed.port
        except ValueError:
            raise ValueError("must be an origin such as https://bastion.example.com") from None
        extra = parsed.path not in ("", "/") or parsed.query or parsed.fragment
        if parsed.scheme not in ("http", "https") or not parsed.hostname or extra:
            raise ValueError("must be an origin such as https://bastion.example.com")
        if parsed.username is not None or parsed.password is not None:
            raise ValueError("must not carry credentials")
        host = parsed.hostname
        if ":" in host:
            host = f"[{host}]"
        return f"{parsed.scheme}://{host}" + (f":{port}" if port is not None else "")

    @field_validator("dns_resolver")
    @classmethod
    def _resolver_is_host_port(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        host, sep, port = value.strip().rpartition(":")
        host = host.strip("[]")
        try:
            ipaddress.ip_address(host)
            number = int(port)
        except ValueError:
            raise ValueError("must be an address and port, e.g. 10.0.0.2:53") from None
        if not sep or not 0 < number < 65536:
            raise ValueError("must be an address and port, e.g. 10.0.0.2:53")
        return value.strip()

    @field_validator("allowed_return_origins")
    @classmethod
    def _return_origins(cls, value: list[str]) -> list[str]:
        origins = []
        for entry in value:
            parsed = urlsplit(entry.strip())
            extra = parsed.path not in ("", "/") or parsed.query or parsed.fragment
            if parsed.scheme not in ("http", "https") or not parsed.hostname or extra:
                raise ValueError("must list origins such as https://console.example.com")
            origins.append(f"{parsed.scheme}://{parsed.netloc}".lower())
        return origins

    @field_validator("forwarded_allow_ips", "trusted_proxies")
    @classmethod
    def _forwarders_are_addresses(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError("must list addresses or CIDR networks (not '*')") from None
        return value

    @field_validator("outbound_proxy")
    @classmethod
    def _proxy_is_http(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        parsed = urlsplit(value.get_secret_value())
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            # Never echo the value: it may carry the proxy's password.
            raise ValueError("must be an http:// or https:// URL with a host")
        return value

    @property
    def proxy_url(self) -> str | None:
        """`outbound_proxy` in clear, for the transports that use it."""
        return self.outbound_proxy.get_secret_value() if self.outbound_proxy else None

    @property
    def tls_enabled(self) -> bool:
        return self.tls_certfile is not None and self.tls_keyfile is not None

    @property
    def served_over_https(self) -> bool:
        """Clients reach the API over HTTPS: served with TLS, or behind a declared
        TLS-terminating proxy (then HSTS is sent)."""
        return self.tls_enabled or self.tls_terminated_by_proxy

    @property
    def resolved_database_url(self) -> str:
        """The database: of everything (one region), or the directory (`regions` set)."""
        if self.database_url:
            return _driver_url(self.database_url)
        return f"sqlite:///{(self.data_dir / 'bastion.db').resolve()}"

    @property
    def region_names(self) -> tuple[str, ...]:
        """The regions organisations may be created in (`default` with one region)."""
        return tuple(self.regions) or (DEFAULT_REGION,)

    @property
    def log_as_json(self) -> bool:
        return self.log_format == "json" if self.log_format is not None else self.log_json

    @property
    def redis_url_value(self) -> str | None:
        return self.redis_url.get_secret_value() if self.redis_url else None


def load_settings(**overrides: object) -> Settings:
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        # Each bad setting and why, never its value: it may be a secret (the pepper, a
        # proxy URL with its password).
        problems = "; ".join(
            f"BASTION_{'_'.join(str(p) for p in error['loc']).upper()}: {error['msg']}"
            for error in exc.errors(include_input=False, include_url=False)
        )
        raise ConfigError(f"invalid settings: {problems}") from None
    except ValueError as exc:
        raise ConfigError(str(exc)) from None

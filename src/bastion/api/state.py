"""Everything the app factory builds once per process, reachable from each request."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from limits import RateLimitItem
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from bastion.agents.gate import Gate
from bastion.agents.waiting import Waiters
from bastion.authz import access
from bastion.authz.engine import Engine as AuthzEngine
from bastion.core.clientip import TrustedProxies
from bastion.core.config import Settings
from bastion.core.db import DirectReader
from bastion.core.db.regions import Regions, RoutedGroupCommit
from bastion.core.groupcommit import GroupCommit
from bastion.core.keyring import Keyring
from bastion.core.mail import Mailer, SmtpConfig
from bastion.core.ratelimit import RateLimiter, per_window
from bastion.core.signing import InstanceSigner
from bastion.identity.authcache import AuthCache
from bastion.identity.tokens import TokenHasher
from bastion.integrations import flow as integration_flow
from bastion.integrations.service import TokenBroker
from bastion.oauth.service import AccessTokenVerifier
from bastion.oauth.tokens import Audience
from bastion.sandboxes import backends as sandbox_backends
from bastion.sandboxes.provider import SandboxProvider
from bastion.secrets.vault import Vault
from bastion.sso.oidc import RelyingParty

T = TypeVar("T")


@dataclass
class AppState:
    settings: Settings
    engine: Engine = field(repr=False)
    sessions: sessionmaker[Session] = field(repr=False)
    # Sessions for state-changing requests: on SQLite their transactions BEGIN IMMEDIATE.
    write_sessions: sessionmaker[Session] = field(repr=False)
    hasher: TokenHasher = field(repr=False)
    auth_cache: AuthCache = field(repr=False)
    limiter: RateLimiter = field(repr=False)
    # The instance signing keys: audit checkpoints, OAuth access tokens, reports.
    signer: InstanceSigner = field(repr=False)
    root_keys: Keyring = field(repr=False)
    authz: AuthzEngine = field(repr=False)
    vault: Vault = field(repr=False)
    direct: DirectReader = field(repr=False)  # hot-path reads outside the ORM pool
    # Data residency (`BASTION_REGIONS`): the directory and each region's database;
    # None with one region (then everything is in `engine`).
    regions: Regions | None = field(default=None, repr=False)
    api_quota: RateLimitItem = field(init=False)
    ip_quota: RateLimitItem = field(init=False)
    waiters: Waiters = field(init=False, repr=False)
    source_rights: access.SourceRights = field(init=False, repr=False)
    gate: Gate = field(init=False, repr=False)
    # The write path of requests that read first and write as one unit (see
    # `bastion.core.groupcommit`): one writer thread per process.
    writer: GroupCommit = field(init=False, repr=False)
    # Email sent for a person (password-reset links), off the request (`core.mail`).
    mailer: Mailer = field(init=False, repr=False)
    # Whose X-Forwarded-For names the client (`BASTION_TRUSTED_PROXIES`).
    proxies: TrustedProxies = field(init=False)
    # OAuth access tokens: who issues them (BASTION_PUBLIC_URL) and their verifier, which
    # authentication is handed (a JWT bearer credential is refused without it).
    oauth_audience: Audience = field(init=False)
    access_tokens: AccessTokenVerifier = field(init=False, repr=False)
    # The OpenID Connect relying party: providers' discovery documents and keys, cached.
    sso_rp: RelyingParty = field(init=False, repr=False)
    # OAuth integrations' access tokens: handed out, cached briefly, refreshed under a lease.
    integration_tokens: TokenBroker = field(init=False, repr=False)
    # The sandbox backend runs execute in (`BASTION_SANDBOX_BACKEND`, bastion.sandboxes).
    sandboxes: SandboxProvider = field(init=False, repr=False)

    def __post_init__(self) -> None:
        per_minute = self.settings.api_requests_per_minute
        self.api_quota = per_window(per_minute, 60)
        self.waiters = Waiters(self.sessions)
        if self.regions is None:
            self.writer = GroupCommit(self.write_sessions)
        else:  # one writer thread per region: a batch never spans two databases
            regions = self.regions
            self.writer = RoutedGroupCommit(
                {n: GroupCommit(regions.sessions(n, write=True)) for n in regions.names}, regions
            )
        self.source_rights = access.SourceRights(self.authz, self.sessions)
        self.gate = Gate(
            self.sessions,
            self.writer,
            self.authz.revisions,
            self.source_rights.of_agent,
            local=self.authz.local,
        )
        # Anonymous and per-address ceiling: generous, it guards the sign-in surface.
        self.ip_quota = per_window(per_minute * 4, 60)
        s = self.settings
        self.mailer = Mailer(
            SmtpConfig(
                host=s.smtp_host,
                port=s.smtp_port,
                sender=s.smtp_from,
                starttls=s.smtp_starttls,
                tls=s.smtp_tls,
                ca_file=str(s.smtp_ca_file) if s.smtp_ca_file else None,
                username=s.smtp_username,
                password=s.smtp_password.get_secret_value() if s.smtp_password else None,
                plaintext_allow=tuple(s.outbound_plaintext_allow),
            )
        )
        self.proxies = TrustedProxies(s.trusted_proxies)
        self.oauth_audience = Audience(s.public_url)
        self.access_tokens = AccessTokenVerifier(self.signer, self.oauth_audience)
        self.sso_rp = RelyingParty(s)
        self.sandboxes = sandbox_backends.make(s)
        self.integration_tokens = TokenBroker(
            self.sessions, self.write_sessions, self.vault, integration_flow.outbound(s)
        )

    @property
    def audit_signer(self) -> InstanceSigner:
        """The signer of audit checkpoints: the instance signing keys."""
        return self.signer

    async def read(self, work: Callable[[], T]) -> T:
        """Run a request's short synchronous read (a few primary-key or indexed lookups,
        a decryption): on the event loop when the database is a local SQLite file, where
        a read never waits for a writer (WAL) and costs less than the hop to a worker
        thread; in a worker thread for a database across the network."""
        if self.direct.local:
            return work()
        return await run_in_threadpool(work)

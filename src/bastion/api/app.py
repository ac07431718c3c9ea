"""The application factory. Nothing is built at import time."""

from __future__ import annotations

import asyncio
import contextvars
import gc
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, FastAPI
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Receive, Scope, Send

import bastion.registry  # noqa: F401 - every domain's registrations, before the first request
from bastion import __version__
from bastion.alerts import service as alert_service
from bastion.alerts.deliver import Notifier
from bastion.api import console_edge, docs, errors, mcp_gateway, metrics
from bastion.api.background import Occasional, run_periodically
from bastion.api.middleware import BastionMiddleware
from bastion.api.problems import ERROR_RESPONSES
from bastion.api.routers import (
    access,
    agents,
    alerts,
    apikeys,
    approvals,
    audit,
    auth,
    compliance,
    encryption_key,
    integrations,
    me,
    meta,
    mfa,
    oauth,
    orgs,
    privacy,
    roles,
    sandboxes,
    scim,
    secrets,
    service_accounts,
    slack,
    sso,
    teams,
    users,
    webhooks,
    workflows,
)
from bastion.api.state import AppState
from bastion.approvals import service as approval_service
from bastion.approvals.notify import deliver as approval_notify
from bastion.audit import checkpoints, sinks
from bastion.authz.engine import Engine as AuthzEngine
from bastion.compliance import reviews as access_reviews
from bastion.compliance import service as compliance_service
from bastion.console import build_app as build_console
from bastion.core import revisions
from bastion.core.config import Settings, load_settings
from bastion.core.db import AsyncDirectReader, DirectReader, make_engine, make_sessionmaker
from bastion.core.db.regions import (
    CURRENT,
    EMAIL_PURPOSE,
    Regions,
    RoutedAsyncDirectReader,
    RoutedDirectReader,
)
from bastion.core.keyring import ROOT_KEY_FILE, load_pepper, read_keyring
from bastion.core.logging import configure_logging
from bastion.core.ratelimit import RateLimiter
from bastion.core.signing import SIGNING_KEY_FILE, InstanceSigner
from bastion.identity import passwords
from bastion.identity.authcache import AuthCache
from bastion.identity.tokens import TokenHasher
from bastion.privacy import retention as privacy_retention
from bastion.sandboxes import execs as sandbox_execs
from bastion.secrets import cmk
from bastion.secrets import service as secrets_service
from bastion.secrets.cmk import ProviderPolicy
from bastion.secrets.vault import LocalKeyProvider, Vault
from bastion.webhooks import outbound as webhook_outbound

DESCRIPTION = """
Bastion is the security and compliance control plane for AI agent platforms.

Authenticate with `Authorization: Bearer <token>`: an API key (`bsk_…`), a session
token (`bss_…`) from `POST /v1/auth/login`, or an OAuth access token (a JWT) from
`POST /v1/oauth/token` (client credentials of a service account). Errors are RFC 9457
problem documents (OAuth's own endpoints answer RFC 6749 errors). Lists take `limit`
and `cursor` and return `{"data": [...], "next_cursor": ...}`. POST accepts an
`Idempotency-Key` header.
"""


def _engine(settings: Settings, url: str) -> Engine:
    return make_engine(
        url,
        write_wait=settings.database_write_wait,
        write_hold_limit=settings.database_write_hold_limit,
        sqlite_synchronous=settings.sqlite_synchronous,
        pool_size=settings.database_pool_size,
        pool_overflow=settings.database_pool_overflow,
    )


def build_state(settings: Settings) -> AppState:
    pepper = load_pepper(settings)
    passwords.configure(
        settings.argon2_time_cost, settings.argon2_memory_kib, settings.argon2_parallelism
    )
    hasher = TokenHasher(pepper)
    revisions.install()
    regions = build_regions(settings, hasher) if settings.regions else None
    sessions: sessionmaker[Session]
    write_sessions: sessionmaker[Session]
    if regions is None:
        engine = _engine(settings, settings.resolved_database_url)
        direct = DirectReader(engine)  # one per process: its PostgreSQL connections are bounded
        async_direct = AsyncDirectReader(engine) if engine.dialect.name == "postgresql" else None
        sessions = make_sessionmaker(engine)
        write_sessions = make_sessionmaker(engine, write=True)
    else:  # data residency: everything follows the request's (or worker's) region
        engine = regions.engines[regions.home]
        direct = RoutedDirectReader(
            {n: DirectReader(e) for n, e in regions.engines.items()}, regions
        )
        async_direct = (
            RoutedAsyncDirectReader(
                {n: AsyncDirectReader(e) for n, e in regions.engines.items()}, regions
            )
            if engine.dialect.name == "postgresql"
            else None
        )
        sessions = regions.routed()
        write_sessions = regions.routed(write=True)
    return AppState(
        settings=settings,
        engine=engine,
        sessions=sessions,
        write_sessions=write_sessions,
        hasher=hasher,
        auth_cache=AuthCache(direct, async_direct),
        limiter=RateLimiter(settings.redis_url_value, settings.rate_limit_namespace),
        signer=InstanceSigner(read_keyring(settings.data_dir / SIGNING_KEY_FILE)),
        root_keys=read_keyring(settings.data_dir / ROOT_KEY_FILE),
        authz=AuthzEngine(direct),
        vault=Vault(
            LocalKeyProvider(settings.data_dir / ROOT_KEY_FILE),
            policy=ProviderPolicy(
                allow=tuple(settings.outbound_allow),
                plaintext=tuple(settings.outbound_plaintext_allow),
                pkcs11_libraries=tuple(settings.pkcs11_libraries),
            ),
        ),
        direct=direct,
        regions=regions,
    )


def build_regions(settings: Settings, hasher: TokenHasher) -> Regions:
    """The directory (`BASTION_DATABASE_URL`) and each region's engine."""
    return Regions(
        _engine(settings, settings.resolved_database_url),
        {
            name: _engine(settings, region.resolved_database_url)
            for name, region in settings.regions.items()
        },
        hasher=lambda email: hasher.keyed(EMAIL_PURPOSE, email)[0],
    )


RETENTION_EVERY_SECONDS = 3600  # retention of every data class: about hourly
INTEGRATION_REFRESH_EVERY_SECONDS = 30.0  # tokens are refreshed minutes before expiry

Worker = Coroutine[Any, Any, None]
SANDBOX_SWEEP_EVERY_SECONDS = 5.0


def _maintain_audit(state: AppState) -> Worker:
    """Every `audit_checkpoint_interval` seconds, sign each audit chain with new events;
    about hourly, apply retention. Several workers may race: checkpoints are idempotent
    per (chain, seq) and a purge only ever removes what a checkpoint anchors."""

    def checkpoint() -> None:
        with state.write_sessions() as db:
            checkpoints.create_all(db, state.signer)
            db.commit()

    def purge() -> None:
        # Each organisation's data classes (`privacy.purged`), then the audit chains.
        privacy_retention.purge_all(state.write_sessions)

    return run_periodically(
        "audit maintenance round",
        lambda: state.settings.audit_checkpoint_interval,
        checkpoint,
        logger="bastion.audit",
        occasionally=Occasional(purge, every=RETENTION_EVERY_SECONDS),
    )


def _deliver_audit_sinks(state: AppState) -> Worker:
    """Every `audit_sink_poll_interval` seconds, send each due sink's new events. Leases
    keep workers and replicas from sending one sink twice at once."""
    stores = sinks.Stores(read=state.sessions, write=state.write_sessions)

    def round_() -> int:
        settings = state.settings
        return sinks.deliver_due(
            stores,
            state.root_keys,
            settings.outbound_allow,
            settings.proxy_url,
            settings.outbound_plaintext_allow,
        )

    return run_periodically(
        "audit sink delivery round",
        lambda: state.settings.audit_sink_poll_interval,
        round_,
        logger="bastion.audit",
    )


def _sweep_approvals(state: AppState) -> Worker:
    """Every `approval_sweep_interval` seconds, record expired approvals and announce
    escalations. Expiry is already in force before this runs (evaluated at read time)."""

    def round_() -> None:
        with state.write_sessions() as db:
            approval_service.sweep(db)
            db.commit()

    return run_periodically(
        "approval sweep",
        lambda: state.settings.approval_sweep_interval,
        round_,
        logger="bastion.approvals",
    )


def approval_channels(state: AppState) -> approval_notify.Channels:
    s = state.settings
    return approval_notify.Channels(
        vault=state.vault,
        smtp=state.mailer.config,
        public_url=s.public_url,
        slack_api_url=s.slack_api_url,
        allow=s.outbound_allow,
        proxy=s.proxy_url,
        plaintext=s.outbound_plaintext_allow,
    )


def _notify_approvers(state: AppState) -> Worker:
    """Every `approval_notify_interval` seconds, tell approvers of new and escalated
    requests by email and Slack (after commit; leases keep workers apart; retried);
    about hourly, purge finished notices past `approval_notice_retention_days`."""
    channels = approval_channels(state)

    def round_() -> int:
        return approval_notify.deliver_due(state.write_sessions, channels)

    def purge() -> int:
        days = state.settings.approval_notice_retention_days
        return approval_notify.purge_finished(state.write_sessions, days)

    return run_periodically(
        "approval notification round",
        lambda: state.settings.approval_notify_interval,
        round_,
        logger="bastion.approvals",
        occasionally=Occasional(purge, every=RETENTION_EVERY_SECONDS),
    )


def notifier(state: AppState) -> Notifier:
    s = state.settings
    return Notifier(
        keys=state.root_keys,
        allow=s.outbound_allow,
        proxy=s.proxy_url,
        plaintext=s.outbound_plaintext_allow,
        smtp_host=s.smtp_host,
        smtp_port=s.smtp_port,
        smtp_from=s.smtp_from,
        smtp_starttls=s.smtp_starttls,
        smtp_tls=s.smtp_tls,
        smtp_ca_file=str(s.smtp_ca_file) if s.smtp_ca_file else None,
        smtp_username=s.smtp_username,
        smtp_password=s.smtp_password.get_secret_value() if s.smtp_password else None,
    )


def _evaluate_alerts(state: AppState) -> Worker:
    """Every `alert_poll_interval` seconds, evaluate alert rules and send notifications."""
    outgoing = notifier(state)

    def round_() -> int:
        return alert_service.run_round(state.sessions, state.write_sessions, outgoing)

    return run_periodically(
        "alert round", lambda: state.settings.alert_poll_interval, round_, logger="bastion.alerts"
    )


def _maintain_compliance(state: AppState) -> Worker:
    """Every `access_review_sweep_interval` seconds, apply `on_due` to access reviews
    past their due date and remind reviewers; every `compliance_evaluate_interval`
    seconds (soon after start; never when 0), evaluate every organisation's controls
    and store their history (what `control_failing` alerts watch)."""

    def sweep() -> int:
        return access_reviews.sweep(state.write_sessions, read_sessions=state.sessions)

    def evaluate() -> int:
        if not state.settings.compliance_evaluate_interval:
            return 0
        return compliance_service.evaluate_round(
            state.write_sessions, state.signer.public_keys, state.sessions
        )

    return run_periodically(
        "compliance round",
        lambda: state.settings.access_review_sweep_interval,
        sweep,
        logger="bastion.compliance",
        occasionally=Occasional(
            evaluate, every=state.settings.compliance_evaluate_interval or 3600, at_start=True
        ),
    )


def _reencrypt_secrets(state: AppState) -> Worker:
    """Every few seconds, move secret versions onto their organisation's newest data key
    after a rotation (small batches, compare-and-set per row: several workers may run
    it at once), then destroy the older keys."""

    def round_() -> int:
        return secrets_service.reencrypt_round(state.sessions, state.write_sessions, state.vault)

    return run_periodically(
        "secrets re-encryption round",
        lambda: secrets_service.REENCRYPT_EVERY_SECONDS,
        round_,
        logger="bastion.secrets",
    )


def _check_customer_keys(state: AppState) -> Worker:
    """Every `CHECK_EVERY_SECONDS`, probe each organisation's customer-managed key (one
    unwrap of its canary) and record what is seen: a revocation is audited and alerted
    on even when no secret is read, and a restored key shows `active` again."""

    def round_() -> int:
        return cmk.check_all(state.sessions, state.write_sessions, state.vault.customer)

    return run_periodically(
        "customer key check",
        lambda: cmk.CHECK_EVERY_SECONDS,
        round_,
        logger="bastion.secrets",
    )


def _deliver_webhooks(state: AppState) -> Worker:
    """Every `webhook_poll_interval` seconds, send due outbound webhook deliveries (leases
    keep workers and replicas from sending one twice at once); about hourly, purge
    webhook events, replay keys and delivery logs past their retention, the first time
    soon after start."""
    policy = webhook_outbound.DeliveryPolicy.from_settings(state.settings)

    def round_() -> int:
        return webhook_outbound.deliver_due(state.write_sessions, state.vault, policy)

    def purge() -> None:
        webhook_outbound.purge_expired(state.write_sessions, policy.retention_days)

    return run_periodically(
        "webhook delivery round",
        lambda: state.settings.webhook_poll_interval,
        round_,
        logger="bastion.webhooks",
        occasionally=Occasional(purge, every=RETENTION_EVERY_SECONDS, at_start=True),
    )


def _refresh_integrations(state: AppState) -> Worker:
    """Every `INTEGRATION_REFRESH_EVERY_SECONDS`, refresh integration tokens close to
    expiry (a row lease per integration keeps workers and replicas to one refresh)."""
    return run_periodically(
        "integration token refresh round",
        lambda: INTEGRATION_REFRESH_EVERY_SECONDS,
        state.integration_tokens.refresh_due,
        logger="bastion.integrations",
    )


def _region_contexts(state: AppState) -> list[contextvars.Context]:
    """Where background workers run: once per region, each with its region set (its
    rounds' threads inherit it), so one region's database down stops only its own
    rounds; once, as before, with a single region."""
    if state.regions is None:
        return [contextvars.copy_context()]
    contexts = []
    for name in state.regions.names:
        context = contextvars.copy_context()
        context.run(CURRENT.set, name)
        contexts.append(context)
    return contexts


def _sweep_sandboxes(state: AppState) -> Worker:
    """Every `SANDBOX_SWEEP_EVERY_SECONDS`, destroy the forks of runs that ended (their
    diff kept), forget old diffs and remove deleted workspaces' files; nothing when
    this instance's sandbox backend cannot run."""

    def round_() -> None:
        if state.sandboxes.unavailable() is not None:
            return
        with state.write_sessions() as db:
            sandbox_execs.sweep(db, state.sandboxes)
            db.commit()

    return run_periodically(
        "sandbox sweep",
        lambda: SANDBOX_SWEEP_EVERY_SECONDS,
        round_,
        logger="bastion.sandboxes",
    )


def create_served_app() -> FastAPI:
    """The app of each `bastion serve` worker process: `create_app`, then every object
    built so far (~420,000: modules, the app, its routes and schemas) frozen out of the
    garbage collector. A full collection walks every tracked object — ~60-120 ms of CPU
    on the benchmark machine, during which the worker answers nothing — and the startup's
    objects live as long as the process anyway. Frozen, a full collection walks only what
    requests left behind. (Steady writes rarely trigger one: 3,000 team creates in process
    saw none; caches that grow over hours do.) Not in `create_app`: a process that builds
    many apps (the test suite) would keep each one's cycles forever."""
    app = create_app()
    gc.collect()  # the startup's garbage goes first, so nothing freed stays frozen
    gc.freeze()
    return app


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    configure_logging(settings.log_level, settings.log_as_json)
    state = build_state(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        workers = (
            _maintain_audit,
            _sweep_approvals,
            _notify_approvers,
            _deliver_audit_sinks,
            _evaluate_alerts,
            _deliver_webhooks,
            _reencrypt_secrets,
            _check_customer_keys,
            _refresh_integrations,
            _maintain_compliance,
            _sweep_sandboxes,
        )
        tasks = [
            asyncio.create_task(worker(state), context=context)
            for context in _region_contexts(state)
            for worker in workers
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await gateway.aclose()
            await anyio.to_thread.run_sync(state.writer.close)
            await anyio.to_thread.run_sync(state.mailer.close)
            state.direct.close()
            await state.auth_cache.aclose()
            if state.regions is not None:
                state.regions.dispose()
            else:
                state.engine.dispose()

    app = BastionAPI(
        lifespan=lifespan,
        title="Bastion",
        version=__version__,
        description=DESCRIPTION,
        openapi_url="/openapi.json",
        docs_url=None,  # served by `bastion.api.docs`, without a CDN
        redoc_url=None,
    )
    app.state.bastion = state
    errors.install(app)
    app.include_router(meta.router)
    app.include_router(docs.router)
    app.include_router(metrics.install(state))
    routers = _api_routers()
    for router in routers[:2]:  # the hot paths first: authorization questions, the gate
        app.include_router(router, responses=ERROR_RESPONSES)
    gateway = mcp_gateway.mount(app, state)  # /v1/runs/{run}/mcp and the MCP server registry
    for router in routers[2:]:
        app.include_router(router, responses=ERROR_RESPONSES)
    app.include_router(oauth.clients_router)  # OAuth's own error format (RFC 6749)
    app.include_router(oauth.router)
    app.mount("/scim/v2", scim.build_app(state))
    app.mount("/console", build_console(console_edge.build(state)))
    app.front = BastionMiddleware(app.framework, state=state, gateway=gateway)
    return app


def _api_routers() -> tuple[APIRouter, ...]:
    """The API's routers with problem-document errors. Routes are matched in order: the
    hot paths (authorization questions, the tool-call gate) come first."""
    return (
        access.authz_router,
        agents.runs_router,
        *(m.router for m in (auth, me, mfa, orgs, users, teams, roles, apikeys)),
        service_accounts.router,
        audit.router,
        mfa.auth_router,
        audit.checkpoints_router,
        audit.signing_keys_router,
        audit.sinks_router,
        alerts.alert_rules_router,
        alerts.alerts_router,
        access.sources_router,
        secrets.router,
        secrets.key_router,
        encryption_key.router,
        agents.router,
        agents.hub_router,
        agents.org_runs_router,
        workflows.router,
        approvals.policies_router,
        approvals.router,
        slack.router,
        webhooks.endpoints_router,
        webhooks.subscriptions_router,
        webhooks.hooks_router,
        sso.connections_router,
        sso.domains_router,
        sso.flow_router,
        scim.router,
        integrations.router,
        integrations.oauth_router,
        integrations.runs_router,
        privacy.router,
        privacy.types_router,
        privacy.retention_router,
        compliance.router,
        compliance.reviews_router,
        sandboxes.router,
        sandboxes.runs_router,
    )


class BastionAPI(FastAPI):
    """FastAPI with `BastionMiddleware` in front of the whole framework rather than
    inside its middleware stack: every HTTP request enters the middleware first, which
    serves the hot routes itself (`bastion.api.fast`) and hands the rest to `framework`
    (FastAPI as usual: its routing, exception handlers and Starlette's stack). Issue 13:
    the stack's layers cost the lean routes ~15 µs each for nothing."""

    front: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.front is not None and scope["type"] == "http":
            await self.front(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)

    async def framework(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(scope, receive, send)

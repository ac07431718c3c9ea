"""Access tokens for whoever may have them (a run, the MCP gateway), refreshed ahead of
expiry by one worker at a time.

The lease: a refresh first claims the integration's row — one compare-and-set UPDATE
(`refresh_lease_until` in the past, the token version it read) committed on its own —
then calls the provider, then stores the new tokens (access and possibly rotated
refresh token together) and ends the lease in one transaction with the audit event.
Whoever loses the claim, in this process or another replica, waits for the new version
instead of refreshing again: the provider sees one refresh (with rotating refresh
tokens, a second one would present a spent token and end the grant). The lease outlives
the provider's timeout, so it cannot expire under a refresh in flight.

A refresh the provider refuses (`invalid_grant`, a revoked app …) marks the integration
`disconnected` and audits `integration.disconnected`, which the `integration_disconnected`
alert rule watches. One that cannot reach the provider leaves it connected and retries.

Tokens are cached per process briefly, by (integration, token version): a refresh or a
deletion changes what the row says, and the row is read on every request."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from bastion.audit import service as audit
from bastion.core.clock import as_utc, utcnow
from bastion.core.context import SYSTEM
from bastion.core.crypto import random_token
from bastion.core.errors import NotFound
from bastion.core.events import EventType
from bastion.integrations import provider, vaulting
from bastion.integrations.errors import NotConnected, ProviderError, ProviderUnavailable
from bastion.integrations.models import Integration
from bastion.secrets import sealed
from bastion.secrets.vault import Vault

LEASE_SECONDS = 60  # > the provider timeout: a lease never ends under a refresh in flight
REFRESH_AHEAD_SECONDS = 300  # the background round refreshes tokens this close to expiry
MIN_VALID_SECONDS = 60  # a token handed out is good for at least this long
CACHE_SECONDS = 30
WAIT_SECONDS = provider.TIMEOUT_SECONDS + 5  # for another worker's refresh
POLL_SECONDS = 0.05
ROUND_BATCH = 50

Sessions = Callable[[], Session]


@dataclass(frozen=True)
class Token:
    """A short-lived access token (never the refresh token)."""

    access_token: str = field(repr=False)
    expires_at: datetime | None
    integration_id: str


class TokenBroker:
    """One per process: hands out access tokens, refreshing them under the lease."""

    def __init__(
        self, read: Sessions, write: Sessions, vault: Vault, outbound: provider.Outbound
    ) -> None:
        self._read, self._write, self._vault, self._outbound = read, write, vault, outbound
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, int], tuple[Token, float]] = {}

    def __repr__(self) -> str:
        return "TokenBroker()"

    # --- handing out ------------------------------------------------------------------

    def access_token(self, org_id: str, name: str) -> Token:
        """The integration's current access token, refreshed first when it expires within
        `MIN_VALID_SECONDS`. No authorization here: the caller decided who may have it.
        Raises `NotFound` (no such integration in the organisation), `NotConnected`, or
        `ProviderUnavailable` when a due refresh cannot reach the provider and the token
        has expired."""
        deadline = time.monotonic() + WAIT_SECONDS
        refreshed = False  # once a refresh happened, a token still "due" is used as it is
        while True:
            with self._read() as db:
                row = _find(db, org_id, name)
                if row.status != "connected":
                    raise NotConnected("the integration is not connected: connect it again")
                if refreshed or not row.refreshable or not _due(row, MIN_VALID_SECONDS):
                    if _expired(row):
                        raise NotConnected("the access token expired and cannot be refreshed")
                    return self._token(db, row)
                integration_id, version = row.id, row.token_version
            outcome = self.refresh(integration_id, version)
            refreshed = outcome == "done"
            if outcome == "busy":
                if time.monotonic() > deadline:
                    raise ProviderUnavailable("the token is being refreshed: try again")
                time.sleep(POLL_SECONDS)
            elif outcome == "unavailable":
                with self._read() as db:
                    row = _find(db, org_id, name)
                    if row.status == "connected" and not _expired(row):
                        return self._token(db, row)  # still valid: the round retries
                raise ProviderUnavailable("the provider did not answer the refresh: try again")

    def _token(self, db: Session, row: Integration) -> Token:
        key = (row.id, row.token_version)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and hit[1] > now:
                return hit[0]
        try:
            tokens = vaulting.read_tokens(db, self._vault, row)
        except sealed.Unreadable:
            raise NotConnected(
                "the integration's tokens cannot be read: connect it again"
            ) from None
        token = Token(tokens.access_token, row.access_expires_at, row.id)
        until = now + CACHE_SECONDS
        if row.access_expires_at is not None:
            left = (as_utc(row.access_expires_at) - utcnow()).total_seconds() - MIN_VALID_SECONDS
            until = min(until, now + max(left, 0))
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key] = (token, until)
        return token

    # --- refreshing -------------------------------------------------------------------

    def refresh(self, integration_id: str, version: int) -> str:
        """Refresh the integration's tokens if its row is still at `version` and nobody
        holds the lease. Returns "done" (refreshed, or someone else already did, or it
        is gone or disconnected: read again), "busy" (another worker is refreshing) or
        "unavailable" (the provider could not be reached; the lease is released)."""
        owner = random_token(16)
        now = utcnow()
        with self._write() as db:
            claimed = db.execute(
                update(Integration)
                .where(
                    Integration.id == integration_id,
                    Integration.status == "connected",
                    Integration.token_version == version,
                    or_(
                        Integration.refresh_lease_until.is_(None),
                        Integration.refresh_lease_until < now,
                    ),
                )
                .values(
                    refresh_lease_until=now + timedelta(seconds=LEASE_SECONDS),
                    refresh_lease_owner=owner,
                )
                .execution_options(synchronize_session=False)
            )
            db.commit()
        if int(getattr(claimed, "rowcount", 0) or 0) != 1:
            with self._read() as db:
                row = db.get(Integration, integration_id)
                moved = row is None or row.status != "connected" or row.token_version != version
            return "done" if moved else "busy"
        with self._read() as db:
            row = db.get(Integration, integration_id)
            if row is None:
                return "done"
            try:
                old = vaulting.read_tokens(db, self._vault, row)
                client = provider.Client(
                    row.provider,
                    row.client_id,
                    vaulting.client_secret(db, self._vault, row),
                    row.token_url,
                    row.revoke_url,
                )
            except sealed.Unreadable:
                old, client = None, None
        if old is None or client is None or old.refresh_token is None:
            self._finish(
                integration_id, owner, None, ProviderError("tokens_unreadable", definitive=True)
            )
            return "done"
        try:
            fresh = provider.refresh(self._outbound, client, old.refresh_token)
        except ProviderError as failure:
            self._finish(integration_id, owner, None, failure)
            return "done" if failure.definitive else "unavailable"
        self._finish(integration_id, owner, fresh, None)
        return "done"

    def _finish(
        self,
        integration_id: str,
        owner: str,
        fresh: provider.TokenSet | None,
        failure: ProviderError | None,
    ) -> None:
        """Store the new tokens (or the failure) and end the lease, with the audit event."""
        with self._write() as db:
            row = db.get(Integration, integration_id)
            if row is None:
                return
            audit.lock_chain(db, row.org_id)  # before the row, as every writer does
            row = db.get(Integration, integration_id, with_for_update=True, populate_existing=True)
            if row is None:
                return
            now = utcnow()
            if row.refresh_lease_owner == owner:
                row.refresh_lease_until, row.refresh_lease_owner = None, None
            row.updated_at = now
            if fresh is not None:
                # Even had the lease been lost, these are the newest tokens the provider
                # issued: keeping them is what never loses a rotated refresh token.
                vaulting.store_tokens(db, self._vault, row, fresh)
                row.last_error = None
                audit.record(
                    db,
                    type=EventType.INTEGRATION_TOKEN_REFRESHED,
                    actor=SYSTEM,
                    org_id=row.org_id,
                    resource=("integration", row.id),
                    metadata={"name": row.name, "token_version": row.token_version},
                )
            elif failure is not None and failure.definitive:
                row.status, row.last_error = "disconnected", failure.code
                audit.record(
                    db,
                    type=EventType.INTEGRATION_DISCONNECTED,
                    actor=SYSTEM,
                    org_id=row.org_id,
                    resource=("integration", row.id),
                    reason=failure.code,
                    metadata={"name": row.name, "provider": row.provider, "error": failure.code},
                )
            elif failure is not None:
                row.last_error = failure.code
            db.commit()

    def refresh_due(self, ahead_seconds: int = REFRESH_AHEAD_SECONDS) -> int:
        """The background round: refresh every connected integration whose token expires
        within `ahead_seconds` (and nobody is refreshing). Returns how many it refreshed
        or found refreshed."""
        now = utcnow()
        with self._read() as db:
            due = list(
                db.execute(
                    select(Integration.id, Integration.token_version)
                    .where(
                        Integration.status == "connected",
                        Integration.refreshable.is_(True),
                        Integration.access_expires_at < now + timedelta(seconds=ahead_seconds),
                        or_(
                            Integration.refresh_lease_until.is_(None),
                            Integration.refresh_lease_until < now,
                        ),
                    )
                    .order_by(Integration.access_expires_at)
                    .limit(ROUND_BATCH)
                ).all()
            )
        return sum(
            1 for integration_id, version in due if self.refresh(integration_id, version) == "done"
        )


def _find(db: Session, org_id: str, name: str) -> Integration:
    row = db.execute(
        select(Integration).where(Integration.org_id == org_id, Integration.name == name)
    ).scalar_one_or_none()
    if row is None:
        raise NotFound("integration not found")
    return row


def _due(row: Integration, seconds: int) -> bool:
    if row.access_expires_at is None:
        return False
    return as_utc(row.access_expires_at) - utcnow() < timedelta(seconds=seconds)


def _expired(row: Integration) -> bool:
    return row.access_expires_at is not None and as_utc(row.access_expires_at) <= utcnow()

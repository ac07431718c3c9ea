"""Outbound webhooks: Bastion's own events to subscribers, and verified inbound events to
an endpoint's `forward_url`, both signed per Standard Webhooks.

Delivery is an outbox. `enqueue` writes one `WebhookDelivery` row per matching
subscription in the caller's transaction, so an event is sent if and only if the change
it reports commits. `deliver_due` (the background loop, or a test) claims due rows with
a lease, so several workers or replicas never send one row at once, and sends them with
`webhook-id` (the delivery id, the same on every attempt), `webhook-timestamp` and
`webhook-signature`. A 2xx answer is success; anything else, a refused destination or a
transport error is a failed attempt, retried with exponential backoff and full jitter up
to `max_attempts`. A subscription that fails `disable_after` attempts in a row is
disabled (and audited) until someone re-enables it. Every attempt is logged with its
status code, error and duration. Destinations pass the SSRF guard at creation, and every
connection goes to an address the guard vetted when it was opened (no second DNS lookup
between the check and the connection: see `bastion.core.netguard.GuardedTransport`).
Destinations are https:// unless the operator allows plain http:// to them
(`BASTION_OUTBOUND_PLAINTEXT_ALLOW`), checked at creation and again for every attempt.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

import httpx
import structlog
from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from bastion import __version__
from bastion.audit import service as audit
from bastion.audit.siem_transport import backoff_delay
from bastion.core import metrics
from bastion.core.clock import as_utc, rfc3339, utcnow
from bastion.core.config import Settings
from bastion.core.context import SYSTEM
from bastion.core.events import EventType, Outcome
from bastion.core.ids import new_id
from bastion.core.netguard import PLAINTEXT, GuardedTransport, OutboundRefused, deadline
from bastion.privacy import service as privacy
from bastion.secrets import sealed
from bastion.secrets.errors import KeyUnavailable
from bastion.secrets.vault import Vault
from bastion.webhooks import sealing
from bastion.webhooks.models import (
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEndpointSecret,
    WebhookEvent,
    WebhookReplayKey,
    WebhookSubscription,
)
from bastion.webhooks.verify import sign_standard

__all__ = [
    "DeliveryPolicy",
    "deliver_due",
    "enqueue",
    "matches",
    "purge_expired",
]

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
BATCH = 100
SENDERS = 8
_USER_AGENT = f"Bastion-Webhooks/{__version__}"
Sessions = Callable[[], Session]
log = structlog.get_logger("bastion.webhooks")


# --- enqueue (in the caller's transaction) ---------------------------------------------


def matches(patterns: Sequence[str], event_type: str) -> bool:
    """`*` matches everything, `approval.*` every type under `approval.`, anything else
    only itself."""
    for pattern in patterns:
        if pattern in ("*", event_type):
            return True
        if pattern.endswith(".*") and event_type.startswith(pattern[:-1]):
            return True
    return False


def enqueue(db: Session, org_id: str, event_type: str, payload: Mapping[str, Any]) -> list[str]:
    """Queue `event_type` with `payload` for every enabled subscription of `org_id` whose
    patterns match, inside the caller's transaction (nothing is sent unless it commits).

    The receiver gets the JSON body `{"type": event_type, "timestamp": <RFC 3339>,
    "data": payload}`; `payload` must be JSON-serialisable and must not hold secrets.
    Returns the delivery ids (empty when nothing subscribes). Example, from the approvals
    service: `outbound.enqueue(db, org_id, "approval.requested", {"id": apr.id, ...})`.
    """
    subscriptions = db.execute(
        select(WebhookSubscription.id, WebhookSubscription.events).where(
            WebhookSubscription.org_id == org_id, WebhookSubscription.enabled.is_(True)
        )
    ).all()
    wanted = [sub_id for sub_id, patterns in subscriptions if matches(patterns, event_type)]
    if not wanted:
        return []
    # The organisation's `webhook_payloads` data policies: what they find is replaced
    # before the payload is stored (and sent).
    data = privacy.apply_policies(
        privacy.policies_of(db, org_id), "webhook_payloads", dict(payload)
    ).value
    body = json.dumps(
        {"type": event_type, "timestamp": rfc3339(utcnow()), "data": data},
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()
    ids = []
    for sub_id in wanted:
        delivery = WebhookDelivery(
            id=new_id("whd"),
            org_id=org_id,
            subscription_id=sub_id,
            event_type=event_type,
            body=body,
            content_type="application/json",
            status=PENDING,
            attempts=0,
        )
        db.add(delivery)
        ids.append(delivery.id)
    return ids


class Forwarding(Protocol):
    """What queuing a forward needs of its endpoint (a row, or the gateway's read of one)."""

    @property
    def id(self) -> str: ...
    @property
    def org_id(self) -> str: ...
    @property
    def provider(self) -> str: ...


def enqueue_forward(
    db: Session,
    endpoint: Forwarding,
    body: bytes,
    content_type: str,
    *,
    delivery_id: str | None = None,
) -> str:
    """Queue a verified inbound event for the endpoint's `forward_url`: the provider's
    body byte for byte, re-signed per Standard Webhooks with the endpoint's forward
    signing secret."""
    delivery = WebhookDelivery(
        id=delivery_id or new_id("whd"),
        org_id=endpoint.org_id,
        endpoint_id=endpoint.id,
        event_type=f"webhook.{endpoint.provider}",
        body=body,
        content_type=content_type[:200] or "application/octet-stream",
        status=PENDING,
        attempts=0,
    )
    db.add(delivery)
    return delivery.id


# --- delivery --------------------------------------------------------------------------


@dataclass(frozen=True)
class DeliveryPolicy:
    """How the delivery loop sends; `from_settings` reads the `BASTION_WEBHOOK_*` values."""

    allow: tuple[str, ...] = ()
    plaintext: tuple[str, ...] = ()
    proxy: str | None = field(default=None, repr=False)  # may carry its password
    max_attempts: int = 8
    disable_after: int = 20
    retry_base: float = 10.0
    retry_cap: float = 3600.0
    timeout: float = 10.0
    retention_days: int = 30

    @classmethod
    def from_settings(cls, settings: Settings) -> DeliveryPolicy:
        return cls(
            allow=tuple(settings.outbound_allow),
            plaintext=tuple(settings.outbound_plaintext_allow),
            proxy=settings.proxy_url,
            max_attempts=settings.webhook_max_attempts,
            disable_after=settings.webhook_disable_after_failures,
            retry_base=settings.webhook_retry_base_seconds,
            retry_cap=settings.webhook_retry_max_seconds,
            timeout=settings.webhook_timeout_seconds,
            retention_days=settings.webhook_retention_days,
        )

    @property
    def lease_seconds(self) -> float:
        return self.timeout + 30.0


@dataclass(frozen=True)
class _Message:
    delivery_id: str
    org_id: str
    subscription_id: str | None
    endpoint_id: str | None
    url: str
    body: bytes = field(repr=False)
    content_type: str
    secret: str = field(repr=False)


@dataclass(frozen=True)
class _Outcome:
    status_code: int | None
    error: str | None
    duration_ms: int

    @property
    def ok(self) -> bool:
        return self.error is None


def due(sessions: Sessions, limit: int = BATCH) -> list[str]:
    """Pending deliveries whose time has come, not leased, whose subscription (if any)
    is enabled; oldest first."""
    now = utcnow()
    with sessions() as db:
        rows = db.execute(
            select(WebhookDelivery.id)
            .outerjoin(
                WebhookSubscription, WebhookSubscription.id == WebhookDelivery.subscription_id
            )
            .where(
                WebhookDelivery.status == PENDING,
                or_(
                    WebhookDelivery.next_attempt_at.is_(None),
                    WebhookDelivery.next_attempt_at <= now,
                ),
                or_(WebhookDelivery.leased_until.is_(None), WebhookDelivery.leased_until < now),
                or_(
                    WebhookDelivery.subscription_id.is_(None),
                    WebhookSubscription.enabled.is_(True),
                ),
            )
            .order_by(WebhookDelivery.id)
            .limit(limit)
        ).scalars()
        return list(rows)


def _claim(sessions: Sessions, delivery_id: str, policy: DeliveryPolicy) -> bool:
    now = utcnow()
    with sessions() as db:
        claimed = db.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.id == delivery_id,
                WebhookDelivery.status == PENDING,
                or_(WebhookDelivery.leased_until.is_(None), WebhookDelivery.leased_until < now),
            )
            .values(leased_until=now + timedelta(seconds=policy.lease_seconds))
        )
        db.commit()
        return bool(getattr(claimed, "rowcount", 0))


class _Undeliverable(Exception):
    """The delivery can never be sent (its destination or signing secret is gone)."""


def _load(sessions: Sessions, vault: Vault, delivery_id: str) -> _Message | None:
    """The delivery with its destination and decrypted signing secret; None when it is
    gone or its subscription disabled (it waits for the subscription); `_Undeliverable`
    when it can never be sent."""
    with sessions() as db:
        row = db.get(WebhookDelivery, delivery_id)
        if row is None:
            return None
        if row.subscription_id is not None:
            sub = db.get(WebhookSubscription, row.subscription_id)
            if sub is None:
                raise _Undeliverable("the subscription is gone")
            if not sub.enabled:
                return None
            url, secret_id = sub.url, sub.secret_id
        else:
            endpoint = db.get(WebhookEndpoint, row.endpoint_id) if row.endpoint_id else None
            if endpoint is None or endpoint.forward_url is None or not endpoint.forward_secret_id:
                raise _Undeliverable("the endpoint no longer forwards")
            url, secret_id = endpoint.forward_url, endpoint.forward_secret_id
        try:
            secret = sealing.read(db, vault, secret_id, 1)
        except sealed.Unreadable:  # shredded with its organisation, or tampered with
            raise _Undeliverable("the signing secret cannot be read") from None
        message = _Message(
            row.id,
            row.org_id,
            row.subscription_id,
            row.endpoint_id,
            url,
            row.body,
            row.content_type,
            secret,
        )
        db.commit()
        return message


def destination(url: str) -> tuple[str, int]:
    """Host and port of an http(s) URL; ValueError when it is not one we send to."""
    try:
        parsed = httpx.URL(url)
    except Exception:
        raise ValueError("not a valid URL") from None
    if parsed.scheme not in ("https", "http") or not parsed.host:
        raise ValueError("must be an absolute https:// URL")
    if parsed.userinfo:
        raise ValueError("must not carry credentials")
    return parsed.host, parsed.port or (443 if parsed.scheme == "https" else 80)


def _send(client: httpx.Client, message: _Message, policy: DeliveryPolicy) -> _Outcome:
    started = time.monotonic()

    def took() -> int:
        return int((time.monotonic() - started) * 1000)

    try:
        host, _ = destination(message.url)
    except ValueError:
        return _Outcome(None, "destination refused (SSRF guard)", took())
    stamp = int(utcnow().timestamp())
    headers = {
        "content-type": message.content_type,
        "user-agent": _USER_AGENT,
        "webhook-id": message.delivery_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": sign_standard(
            message.secret, message.delivery_id, stamp, message.body
        ),
    }
    if message.endpoint_id is not None:
        headers["bastion-webhook-endpoint"] = message.endpoint_id
    # The client's transport vets the address it connects to (GuardedTransport); the
    # attempt has `timeout` seconds in all, and only the status is read (a receiver's
    # body, however slow or large, is left unread), so it always ends within its lease.
    try:
        with (
            deadline(policy.timeout),
            client.stream("POST", message.url, content=message.body, headers=headers) as response,
        ):
            status = response.status_code
    except OutboundRefused as refused:
        if refused.reason == PLAINTEXT:
            return _Outcome(None, f"{host}: refused, plain http:// is not allowed", took())
        return _Outcome(None, "destination refused (SSRF guard)", took())
    except httpx.HTTPError as exc:
        return _Outcome(None, f"{host}: {type(exc).__name__}", took())
    if 200 <= status < 300:
        return _Outcome(status, None, took())
    return _Outcome(status, f"{host}: HTTP {status}", took())


def _record(
    sessions: Sessions, message: _Message, outcome: _Outcome, policy: DeliveryPolicy
) -> None:
    now = utcnow()
    with sessions() as db:
        row = db.get(WebhookDelivery, message.delivery_id)
        if row is None:
            return
        row.attempts += 1
        db.add(
            WebhookAttempt(
                delivery_id=row.id,
                number=row.attempts,
                attempted_at=now,
                duration_ms=outcome.duration_ms,
                status_code=outcome.status_code,
                error=outcome.error,
            )
        )
        row.last_status_code = outcome.status_code
        row.last_error = outcome.error
        row.leased_until = None
        if outcome.ok:
            row.status, row.delivered_at, row.next_attempt_at = DELIVERED, now, None
            metrics.WEBHOOK_DELIVERY_LAG.observe((now - as_utc(row.created_at)).total_seconds())
        elif row.attempts >= policy.max_attempts:
            row.status, row.next_attempt_at = FAILED, None
        else:
            delay = backoff_delay(row.attempts - 1, base=policy.retry_base, cap=policy.retry_cap)
            row.next_attempt_at = now + timedelta(seconds=delay)
        sub = (
            # Locked: concurrent senders count this subscription's failures without loss.
            db.get(WebhookSubscription, row.subscription_id, with_for_update=True)
            if row.subscription_id
            else None
        )
        if sub is not None:
            _account(db, sub, outcome, policy)
        db.commit()


def _account(
    db: Session, sub: WebhookSubscription, outcome: _Outcome, policy: DeliveryPolicy
) -> None:
    if outcome.ok:
        sub.consecutive_failures = 0
        return
    sub.consecutive_failures += 1
    if sub.enabled and sub.consecutive_failures >= policy.disable_after:
        sub.enabled = False
        sub.disabled_at = utcnow()
        sub.disabled_reason = (
            f"disabled after {sub.consecutive_failures} failed attempts in a row; "
            f"last: {outcome.error}"
        )[:500]
        audit.record(
            db,
            type=EventType.WEBHOOK_SUBSCRIPTION_DISABLED,
            actor=SYSTEM,
            org_id=sub.org_id,
            outcome=Outcome.FAILURE,
            resource=("webhook_subscription", sub.id),
            reason=outcome.error,
            metadata={"failures": sub.consecutive_failures},
        )


def _abandon(sessions: Sessions, delivery_id: str, reason: str) -> None:
    with sessions() as db:
        db.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id)
            .values(status=FAILED, next_attempt_at=None, leased_until=None, last_error=reason)
        )
        db.commit()


def _release(sessions: Sessions, delivery_id: str) -> None:
    with sessions() as db:
        db.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id)
            .values(leased_until=None)
        )
        db.commit()


def deliver_one(
    sessions: Sessions, vault: Vault, delivery_id: str, policy: DeliveryPolicy, client: httpx.Client
) -> bool:
    """Claim, send and record one delivery; True when the receiver accepted it."""
    if not _claim(sessions, delivery_id, policy):
        return False
    try:
        message = _load(sessions, vault, delivery_id)
    except _Undeliverable as gone:
        # Failed for good, not released: released, it would be due again every round,
        # and a hundred of them (an organisation deleted with its secrets) would fill
        # every round's batch and stall every other organisation's deliveries.
        log.error("webhook delivery abandoned", delivery_id=delivery_id, reason=str(gone))
        _abandon(sessions, delivery_id, str(gone))
        return False
    except KeyUnavailable:
        # The organisation's customer-managed key refuses for now: the delivery keeps
        # its lease and is tried again once that runs out, nothing about it changed.
        log.warning("webhook delivery waits for its organisation's key", delivery_id=delivery_id)
        return False
    if message is None:
        _release(sessions, delivery_id)
        return False
    outcome = _send(client, message, policy)
    _record(sessions, message, outcome, policy)
    return outcome.ok


def deliver_due(sessions: Sessions, vault: Vault, policy: DeliveryPolicy) -> int:
    """One round: send every due delivery (up to `BATCH`, `SENDERS` at a time); returns
    how many were accepted. Safe to run in several workers at once. `sessions` should
    open write sessions (on SQLite they BEGIN IMMEDIATE)."""
    ids = due(sessions)
    if not ids:
        return 0
    with httpx.Client(
        transport=GuardedTransport(policy.allow, proxy=policy.proxy, plaintext=policy.plaintext),
        timeout=policy.timeout,
        follow_redirects=False,
    ) as client:
        if len(ids) == 1:
            return int(deliver_one(sessions, vault, ids[0], policy, client))
        with ThreadPoolExecutor(max_workers=min(SENDERS, len(ids))) as pool:
            results = pool.map(
                lambda delivery_id: deliver_one(sessions, vault, delivery_id, policy, client), ids
            )
            return sum(1 for ok in results if ok)


# --- retention -------------------------------------------------------------------------


def purge_expired(sessions: Sessions, retention_days: int) -> dict[str, int]:
    """Remove stored events past their endpoint's retention, replay keys whose timestamp
    window has closed, rotated-out secrets past their overlap (their vault versions too),
    and finished deliveries
    (with their attempt log) older than `retention_days`. Returns rows removed per kind."""
    now = utcnow()
    cutoff = now - timedelta(days=retention_days)
    with sessions() as db:
        rotated_out = db.execute(
            select(WebhookEndpoint.secret_id, WebhookEndpointSecret.version)
            .join(WebhookEndpoint, WebhookEndpoint.id == WebhookEndpointSecret.endpoint_id)
            .where(WebhookEndpointSecret.expires_at <= now)
        ).all()
        sealed.destroy_versions(db, [(secret_id, version) for secret_id, version in rotated_out])
        counts = {
            "events": _deleted(db, delete(WebhookEvent).where(WebhookEvent.expires_at < now)),
            "replay_keys": _deleted(
                db, delete(WebhookReplayKey).where(WebhookReplayKey.expires_at < now)
            ),
            "secrets": _deleted(
                db,
                delete(WebhookEndpointSecret).where(WebhookEndpointSecret.expires_at <= now),
            ),
            "attempts": _deleted(
                db,
                delete(WebhookAttempt).where(
                    WebhookAttempt.delivery_id.in_(_finished_before(cutoff))
                ),
            ),
            "deliveries": _deleted(
                db, delete(WebhookDelivery).where(WebhookDelivery.id.in_(_finished_before(cutoff)))
            ),
        }
        db.commit()
    return counts


def _finished_before(cutoff: Any) -> Any:
    return select(WebhookDelivery.id).where(
        WebhookDelivery.status.in_((DELIVERED, FAILED)), WebhookDelivery.created_at < cutoff
    )


def _deleted(db: Session, stmt: Any) -> int:
    return int(getattr(db.execute(stmt), "rowcount", 0) or 0)

"""The inbound gateway: `POST /v1/hooks/{id}` verifies a provider's delivery, refuses a
replay, stores the event, audits the outcome and queues the forward.

The provider's signature is the only credential. A delivery is accepted once: the
delivery key goes into `webhook_replay_keys`, whose primary key (endpoint, key) lets
exactly one transaction insert it, across workers and replicas. The key is taken from
signed material only, so a replayer cannot vary it: Standard Webhooks' `webhook-id`
(it is signed); for every other provider, the SHA-256 of the exact bytes the signature
covers (Slack: `v0:{ts}:{body}`, Stripe: `{t}.{body}`, GitHub, Linear and generic: the
body). Headers like `X-GitHub-Delivery` are not signed, so they cannot be the key.
Rejections (401 bad, missing or stale signature; 409 replay) are audited after the
request's transaction rolls back; the audit metadata carries a digest of the body,
never the body or a secret.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

import structlog
from sqlalchemy import Table, insert
from sqlalchemy.orm import Session

from bastion.audit import service as audit
from bastion.core import groupcommit
from bastion.core.clock import utcnow
from bastion.core.context import Actor
from bastion.core.crypto import sha256_hex
from bastion.core.db import fetch, stored_time
from bastion.core.errors import Conflict, NotFound
from bastion.core.events import EventType, Outcome
from bastion.core.ids import has_prefix, new_id
from bastion.secrets import sealed
from bastion.secrets.vault import Vault
from bastion.webhooks import outbound
from bastion.webhooks.errors import SignatureRejected
from bastion.webhooks.models import (
    WebhookEvent,
    WebhookReplayKey,
)
from bastion.webhooks.service import PROVIDERS
from bastion.webhooks.verify import Provider, WebhookVerificationError, verify

REJECTED = "the webhook signature is missing, invalid or expired"
REPLAYED = "this delivery was already accepted"
# Headers kept with a stored event (never a signature).
KEPT_HEADERS = frozenset(
    {
        "content-type",
        "user-agent",
        "x-github-event",
        "x-github-delivery",
        "x-github-hook-id",
        "x-slack-request-timestamp",
        "linear-event",
        "linear-delivery",
        "webhook-id",
        "webhook-timestamp",
    }
)
_DEFAULT_WINDOW = 300
_WINDOWS = {Provider.LINEAR: 60}
_TIMESTAMPED = frozenset({Provider.SLACK, Provider.STRIPE, Provider.LINEAR, Provider.STANDARD})
_MAX_KEY = 200
log = structlog.get_logger("bastion.webhooks")


@dataclass(frozen=True)
class Received:
    event_id: str
    endpoint_id: str
    org_id: str
    forwarded: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def _header(headers: Mapping[str, str], name: str) -> str:
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value.strip()
    return ""


def delivery_key(provider: Provider, headers: Mapping[str, str], body: bytes) -> str:
    """The replay key of an authentic delivery, from signed material only."""
    if provider is Provider.STANDARD:
        msg_id = _header(headers, "webhook-id")
        return "id:" + msg_id if len(msg_id) + 3 <= _MAX_KEY else "id#" + sha256_hex(msg_id)
    if provider is Provider.SLACK:
        signed = f"v0:{_header(headers, 'X-Slack-Request-Timestamp')}:".encode() + body
    elif provider is Provider.STRIPE:
        parts = dict(
            item.strip().partition("=")[::2]
            for item in _header(headers, "Stripe-Signature").split(",")
        )
        signed = f"{parts.get('t', '')}.".encode() + body
    else:
        signed = body
    return "sha256:" + sha256_hex(signed)


@dataclass(frozen=True)
class _Endpoint:
    """What accepting a delivery needs of its endpoint, read in plain SQL."""

    id: str
    org_id: str
    provider: str
    tolerance_seconds: int | None
    forward_url: str | None
    retention_days: int
    secret_id: str


# The endpoint and each version of its signing secret that still verifies (with the time
# it stops), newest first: one read instead of an ORM load of the endpoint, one of its
# accepted versions and one of their ciphertexts. An endpoint without a readable version
# still comes back (one row of NULLs): its deliveries are refused, and audited.
_ENDPOINT = (
    "SELECT e.org_id, e.provider, e.tolerance_seconds, e.forward_url, e.retention_days,"
    " e.secret_id, s.expires_at, v.version, v.key_version, v.ciphertext"
    " FROM webhook_endpoints AS e"
    " LEFT OUTER JOIN webhook_endpoint_secrets AS s ON s.endpoint_id = e.id"
    " LEFT OUTER JOIN secret_versions AS v ON v.secret_id = e.secret_id AND v.version = s.version"
    " WHERE e.id = ? ORDER BY v.version DESC"
)


def _endpoint(
    db: Session, vault: Vault, endpoint_id: str, now: datetime
) -> tuple[_Endpoint, list[str]]:
    """The endpoint and its secrets that verify now. One that cannot be decrypted is left
    out (and logged): fewer secrets can only refuse more, never accept more. Raises
    NotFound (unknown or deleted endpoint, or an id of another type)."""
    rows = fetch(db, _ENDPOINT, (endpoint_id,)) if has_prefix(endpoint_id, "whe") else []
    if not rows:
        raise NotFound("webhook endpoint not found")
    endpoint = _Endpoint(endpoint_id, *rows[0][:6])
    org_id, secret_id = endpoint.org_id, endpoint.secret_id
    accepted = [
        (version, key_version, bytes(ciphertext))
        for *_, expires_at, version, key_version, ciphertext in rows
        if version is not None and (expires_at is None or stored_time(expires_at) > now)
    ]
    found = []
    for opened in sealed.open_stored(db, vault, org_id, secret_id, accepted):
        if opened.value is None:
            log.error("webhook secret unreadable", endpoint_id=endpoint_id, version=opened.version)
        else:
            found.append(opened.value.decode())
    return endpoint, found


def _remember(
    db: Session, endpoint: _Endpoint, provider: Provider, key: str, now: datetime
) -> bool:
    """Record the delivery key; False when it was already recorded (a replay). The
    lookup is plain SQL and the new key is left unflushed, so a batch's keys go in one
    INSERT: should two units of one batch (or two writers at once) record the same
    key, the primary key refuses the flush and the rerun in savepoints (each flushed)
    finds the first one's key here."""
    expires_at = None
    if provider in _TIMESTAMPED:
        window = endpoint.tolerance_seconds
        if window is None:
            window = _WINDOWS.get(provider, _DEFAULT_WINDOW)
        # An authentic timestamp is at most `window` ahead of now and is refused once it
        # is `window` behind: after that the window has closed for this key for good.
        expires_at = now + timedelta(seconds=2 * window + 60)
    if fetch(db, _RECORDED, (endpoint.id, key)):
        existing = db.get(WebhookReplayKey, (endpoint.id, key))
        if existing is None or existing.expires_at is None or existing.expires_at >= now:
            return False
        existing.expires_at = expires_at  # a key left over from a closed window
        return True
    db.add(WebhookReplayKey(endpoint_id=endpoint.id, delivery_key=key, expires_at=expires_at))
    return True


_RECORDED = "SELECT 1 FROM webhook_replay_keys WHERE endpoint_id = ? AND delivery_key = ?"


def receive(
    db: Session,
    vault: Vault,
    endpoint_id: str,
    headers: Mapping[str, str],
    body: bytes,
    actor: Actor,
) -> Received:
    """Verify, de-duplicate, store, audit and forward one delivery. Everything is read
    and the signature checked before anything is written: on a request's reader the
    writes wait for its group-commit unit, so a bad signature never takes the writer.

    Raises NotFound (unknown or deleted endpoint, wrong id type), SignatureRejected (bad,
    missing or stale signature) or Conflict (replay); the last two carry their audit
    event, written after the rollback."""
    now = utcnow()
    endpoint, secrets = _endpoint(db, vault, endpoint_id, now)
    provider = PROVIDERS[endpoint.provider]
    digest = sha256_hex(body)
    facts: dict[str, Any] = {
        "provider": endpoint.provider,
        "body_bytes": len(body),
        "body_sha256": digest,
    }

    def rejected(reason: str) -> dict[str, Any]:
        return {
            "type": EventType.WEBHOOK_EVENT_REJECTED,
            "actor": actor,
            "org_id": endpoint.org_id,
            "outcome": Outcome.FAILURE,
            "resource": ("webhook_endpoint", endpoint.id),
            "reason": reason,
            "metadata": facts,
        }

    try:
        verify(
            provider,
            secrets,
            headers,
            body,
            now=now,
            tolerance=endpoint.tolerance_seconds,
        )
    except WebhookVerificationError as exc:
        raise SignatureRejected(REJECTED).with_audit(**rejected(exc.reason)) from None
    key = delivery_key(provider, headers, body)
    event_id = new_id("wev")
    event = {  # a `webhook_events` row
        "id": event_id,
        "org_id": endpoint.org_id,
        "endpoint_id": endpoint.id,
        "delivery_key": key,
        "headers": {k.lower(): v for k, v in headers.items() if k.lower() in KEPT_HEADERS},
        "body": body,
        "body_sha256": digest,
        "received_at": now,
        "expires_at": now + timedelta(days=endpoint.retention_days),
    }
    forwarded = None if endpoint.forward_url is None else new_id("whd")
    content_type = _header(headers, "content-type") or "application/octet-stream"

    def write(writer: Session) -> None:
        # In the writer's transaction: the replay key is what makes a second acceptance
        # impossible, whoever else is accepting the same delivery right now.
        if not _remember(writer, endpoint, provider, key, now):
            raise Conflict(REPLAYED).with_audit(**rejected("replayed"))
        # With the batch's other events, one statement for them all: nothing in the
        # transaction reads it before.
        if not groupcommit.stage(writer, _STAGED_EVENTS, event):
            _insert_events(writer, [event])
        if forwarded is not None:
            outbound.enqueue_forward(writer, endpoint, body, content_type, delivery_id=forwarded)

    groupcommit.defer(db, write)
    audit.record(
        db,
        type=EventType.WEBHOOK_EVENT_ACCEPTED,
        actor=actor,
        org_id=endpoint.org_id,
        resource=("webhook_endpoint", endpoint.id),
        metadata={**facts, "event_id": event_id, "forwarded": forwarded is not None},
    )
    return Received(event_id, endpoint.id, endpoint.org_id, forwarded, facts)


_STAGED_EVENTS = "webhooks.events"
_INSERT_EVENTS = insert(cast(Table, WebhookEvent.__table__))


def _insert_events(db: Session, rows: list[dict[str, Any]]) -> None:
    db.connection().execute(_INSERT_EVENTS, rows)


groupcommit.on_flush(_STAGED_EVENTS, _insert_events)

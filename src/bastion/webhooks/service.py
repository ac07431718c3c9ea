"""Managing webhooks: inbound endpoints (create, list, rotate the secret, delete, read
stored events) and outbound subscriptions (create, list, delete, re-enable, read the
delivery log). Every change is audited in its own transaction; no secret is ever
returned after creation, logged or put in audit metadata."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from bastion.audit import service as audit
from bastion.core.clock import utcnow
from bastion.core.db import get_in_org
from bastion.core.errors import InvalidInput, NotFound
from bastion.core.events import EventType
from bastion.core.ids import new_id
from bastion.core.netguard import OutboundRefused, check_plaintext, vetted_addresses
from bastion.core.pagination import Page, newest_first
from bastion.core.permissions import Permission
from bastion.core.principal import Principal
from bastion.secrets import sealed
from bastion.secrets.vault import Vault
from bastion.webhooks import outbound, sealing
from bastion.webhooks.models import (
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEndpointSecret,
    WebhookEvent,
    WebhookSubscription,
)
from bastion.webhooks.verify import InvalidSecret, Provider, sign_standard

# The API's provider names → the verification library's.
PROVIDERS: dict[str, Provider] = {
    "github": Provider.GITHUB,
    "slack": Provider.SLACK,
    "stripe": Provider.STRIPE,
    "linear": Provider.LINEAR,
    "standard": Provider.STANDARD,
    "generic": Provider.HMAC_SHA256,
}


def hook_path(endpoint_id: str) -> str:
    return f"/v1/hooks/{endpoint_id}"


def _check_url(url: str, allow: Sequence[str], plaintext: Sequence[str], field_name: str) -> None:
    """A URL we send to: https:// (http:// only to a destination the operator allows
    plain transport to), not internal unless allowlisted."""
    try:
        host, port = outbound.destination(url)
        addresses = vetted_addresses(host, port, allow)
        if not url.lower().startswith("https://"):
            check_plaintext(host, port, plaintext, addresses)
    except ValueError as exc:  # outbound.destination's own words: they name no input
        raise InvalidInput.field(field_name, str(exc)) from None
    except OutboundRefused as exc:
        raise InvalidInput.field(field_name, exc.reason) from None


# --- inbound endpoints ----------------------------------------------------------------


@dataclass(frozen=True)
class EndpointSpec:
    name: str
    provider: str
    secret: str = field(repr=False)
    tolerance_seconds: int | None = None
    forward_url: str | None = None
    retention_days: int | None = None


def _check_secret(provider: str, secret: str) -> None:
    if provider == "standard":
        try:
            sign_standard(secret, "check", 0, b"")
        except InvalidSecret:
            raise InvalidInput.field(
                "secret", "a Standard Webhooks secret is whsec_ followed by base64"
            ) from None


def create_endpoint(
    db: Session,
    vault: Vault,
    principal: Principal,
    org_id: str,
    spec: EndpointSpec,
    *,
    allow: list[str],
    plaintext: Sequence[str] = (),
    default_retention_days: int,
) -> tuple[WebhookEndpoint, str | None]:
    """The endpoint and, when it forwards, its forward signing secret (shown once)."""
    principal.require_org(org_id)
    principal.require(Permission.WEBHOOKS_MANAGE)
    if spec.provider not in PROVIDERS:
        raise InvalidInput.field("provider", f"one of {', '.join(PROVIDERS)}")
    _check_secret(spec.provider, spec.secret)
    if spec.forward_url is not None:
        _check_url(spec.forward_url, allow, plaintext, "forward_url")
    endpoint = WebhookEndpoint(
        id=new_id("whe"),
        org_id=org_id,
        name=spec.name,
        provider=spec.provider,
        tolerance_seconds=spec.tolerance_seconds,
        forward_url=spec.forward_url,
        retention_days=spec.retention_days or default_retention_days,
    )
    endpoint.secret_id = sealing.create(db, vault, org_id, f"endpoint/{endpoint.id}", spec.secret)
    forward_secret = None
    if spec.forward_url is not None:
        forward_secret = sealing.new_signing_secret()
        endpoint.forward_secret_id = sealing.create(
            db, vault, org_id, f"forward/{endpoint.id}", forward_secret
        )
    db.add(endpoint)
    db.add(WebhookEndpointSecret(endpoint_id=endpoint.id, version=1))
    db.flush()
    audit.record(
        db,
        type=EventType.WEBHOOK_ENDPOINT_CREATED,
        actor=principal.actor,
        org_id=org_id,
        resource=("webhook_endpoint", endpoint.id),
        metadata={
            "name": spec.name,
            "provider": spec.provider,
            "forwards": spec.forward_url is not None,
        },
    )
    return endpoint, forward_secret


def _endpoint(db: Session, org_id: str, endpoint_id: str) -> WebhookEndpoint:
    return get_in_org(
        db, WebhookEndpoint, endpoint_id, org_id, prefix="whe", noun="webhook endpoint"
    )


def secret_versions(db: Session, endpoint_ids: list[str]) -> dict[str, list[WebhookEndpointSecret]]:
    """Each endpoint's secrets still verifying (current first), without decrypting."""
    now = utcnow()
    found: dict[str, list[WebhookEndpointSecret]] = {eid: [] for eid in endpoint_ids}
    if not endpoint_ids:
        return found
    rows = db.execute(
        select(WebhookEndpointSecret)
        .where(
            WebhookEndpointSecret.endpoint_id.in_(endpoint_ids),
            or_(
                WebhookEndpointSecret.expires_at.is_(None),
                WebhookEndpointSecret.expires_at > now,
            ),
        )
        .order_by(WebhookEndpointSecret.version.desc())
    ).scalars()
    for row in rows:
        found[row.endpoint_id].append(row)
    return found


def get_endpoint(
    db: Session, principal: Principal, org_id: str, endpoint_id: str
) -> WebhookEndpoint:
    principal.require_org(org_id)
    principal.require(Permission.WEBHOOKS_READ)
    return _endpoint(db, org_id, endpoint_id)


def list_endpoints(
    db: Session, principal: Principal, org_id: str, *, limit: int, cursor: str | None
) -> Page[WebhookEndpoint]:
    principal.require_org(org_id)
    principal.require(Permission.WEBHOOKS_READ)
    stmt = select(WebhookEndpoint).where(WebhookEndpoint.org_id == org_id)
    return newest_first(db, stmt, WebhookEndpoint.id, limit=limit, cursor=cursor)


def rotate_secret(
    db: Session,
    vault: Vault,
    principal: Principal,
    org_id: str,
    endpoint_id: str,
    secret: str,
    overlap_seconds: int,
) -> WebhookEndpoint:
    """Make `secret` current; the previous current secret keeps verifying for
    `overlap_seconds` (until then, exclusive), secrets already expiring keep their end."""
    principal.require_org(org_id)
    principal.require(Permission.WEBHOOKS_MANAGE)
    endpoint = _endpoint(db, org_id, endpoint_id)
    _check_secret(endpoint.provider, secret)
    # The organisation's chain head first (every writer's first lock): two rotations at
    # once take turns, and the second expires the secret the first made current. Without
    # it, on PostgreSQL the second waited on the old row, found it expired and its own
    # snapshot without the first's new secret: two secrets left current for good.
    audit.lock_chain(db, org_id)
    now = utcnow()
    current = db.execute(
        select(WebhookEndpointSecret)
        .where(
            WebhookEndpointSecret.endpoint_id == endpoint.id,
            WebhookEndpointSecret.expires_at.is_(None),
        )
        .with_for_update()
    ).scalars()
    for row in current:
        row.expires_at = now + timedelta(seconds=overlap_seconds)
    try:
        version = sealing.new_version(db, vault, endpoint.secret_id, secret)
    except sealed.Unreadable:
        raise NotFound("webhook endpoint not found") from None
    db.add(WebhookEndpointSecret(endpoint_id=endpoint.id, version=version))
    endpoint.updated_at = now
    audit.record(
        db,
        type=EventType.WEBHOOK_ENDPOINT_SECRET_ROTATED,
        actor=principal.actor,
        org_id=org_id,
        resource=("webhook_endpoint", endpoint.id),
        metadata={"version": version, "overlap_seconds": overlap_seconds},
    )
    return endpoint


def delete_endpoint(db: Session, principal: Principal, org_id: str, endpoint_id: str) -> None:
    principal.require_org(org_id)
    principal.require(Permission.WEBHOOKS_MANAGE)
    endpoint = _endpoint(db, org_id, endpoint_id)
    db.delete(endpoint)  # replay keys, events and forwards go with it (CASCADE)
    sealed.destroy(db, endpoint.secret_id, endpoint.forward_secret_id)
    audit.record(
        db,
        type=EventType.WEBHOOK_ENDPOINT_DELETED,
        actor=principal.actor,
        org_id=org_id,
        resource=("webhook_endpoint", endpoint_id),
        metadata={"name": endpoint.name, "provider": endpoint.provider},
    )


def list_events(
    db: Session,
    principal: Principal,
    org_id: str,
    endpoint_id: str,
    *,
    limit: int,
    cursor: str | None,
) -> Page[WebhookEvent]:
    principal.require_org(org_id)
    principal.require(Permission.WEBHOOKS_READ)
    endpoint = _endpoint(db, org_id, endpoint_id)
    stmt = select(WebhookEvent).where(WebhookEvent.endpoint_id == endpoint.id)
    return newest_first(db, stmt, WebhookEvent.id, limit=limit, cursor=cursor)


# --- outbound subscriptions -----------------------------------------------------------


def create_subscription(
    db: Session,
    vault: Vault,
    principal: Principal,
    org_id: str,
    *,
    url: str,
    events: list[str],
    description: str | None,
    allow: list[str],
    plaintext: Sequence[str] = (),
) -> tuple[WebhookSubscription, str]:
    """The subscription and its `whsec_` signing secret (shown once)."""
    principal.require_org(org_id)
    principal.require(Permission.WEBHOOKS_MANAGE)
    _check_url(url, allow, plaintext, "url")
    secret = sealing.new_signing_secret()
    sub = WebhookSubscription(
        id=new_id("whs"),
        org_id=org_id,
        url=url,
        events=sorted(set(events)),
        description=description or "",
        enabled=True,
        consecutive_failures=0,
    )
    sub.secret_id = sealing.create(db, vault, org_id, f"subscription/{sub.id}", secret)
    db.add(sub)
    audit.record(
        db,
        type=EventType.WEBHOOK_SUBSCRIPTION_CREATED,
        actor=principal.actor,
        org_id=org_id,
        resource=("webhook_subscription", sub.id),
        metadata={"host": outbound.destination(url)[0], "events": sub.events},
    )
    db.flush()
    return sub, secret


def _subscription(db: Session, org_id: str, sub_id: str) -> WebhookSubscription:
    return get_in_org(
        db, WebhookSubscription, sub_id, org_id, prefix="whs", noun="webhook subscription"
    )


def get_subscription(
    db: Session, principal: Principal, org_id: str, sub_id: str
) -> WebhookSubscription:
    principal.require_org(org_id)
    principal.require(Permission.WEBHOOKS_READ)
    return _subscription(db, org_id, sub_id)


def list_subscriptions(
    db: Session, principal: Principal, org_id: str, *, limit: int, cursor: str | None
) -> Page[WebhookSubscription]:
    principal.require_org(org_id)
    principal.require(Permission.WEBHOOKS_READ)
    stmt = select(WebhookSubscription).where(WebhookSubscription.org_id == org_id)
    return newest_first(db, stmt, WebhookSubscription.id, limit=limit, cursor=cursor)


def delete_subscription(db: Session, principal: Principal, org_id: str, sub_id: str) -> None:
    principal.require_org(org_id)
    principal.require(Permission.WEBHOOKS_MANAGE)
    sub = _subscription(db, org_id, sub_id)
    db.delete(sub)  # its deliveries and their attempts go with it (CASCADE)
    sealed.destroy(db, sub.secret_id)
    audit.record(
        db,
        type=EventType.WEBHOOK_SUBSCRIPTION_DELETED,
        actor=principal.actor,
        org_id=org_id,
        resource=("webhook_subscription", sub_id),
        metadata={"host": outbound.destination(sub.url)[0]},
    )


def enable_subscription(
    db: Session, principal: Principal, org_id: str, sub_id: str
) -> WebhookSubscription:
    """Re-enable (after an automatic disable): the failure count starts again and
    deliveries still pending resume."""
    principal.require_org(org_id)
    principal.require(Permission.WEBHOOKS_MANAGE)
    sub = _subscription(db, org_id, sub_id)
    was_enabled = sub.enabled
    sub.enabled, sub.disabled_reason, sub.disabled_at = True, None, None
    sub.consecutive_failures = 0
    sub.updated_at = utcnow()
    audit.record(
        db,
        type=EventType.WEBHOOK_SUBSCRIPTION_ENABLED,
        actor=principal.actor,
        org_id=org_id,
        resource=("webhook_subscription", sub.id),
        metadata={"was_enabled": was_enabled},
    )
    return sub


def list_deliveries(
    db: Session,
    principal: Principal,
    org_id: str,
    sub_id: str,
    *,
    limit: int,
    cursor: str | None,
) -> tuple[Page[WebhookDelivery], dict[str, list[WebhookAttempt]]]:
    """A page of the subscription's deliveries (newest first) and each one's attempts."""
    principal.require_org(org_id)
    principal.require(Permission.WEBHOOKS_READ)
    sub = _subscription(db, org_id, sub_id)
    stmt = select(WebhookDelivery).where(WebhookDelivery.subscription_id == sub.id)
    page = newest_first(db, stmt, WebhookDelivery.id, limit=limit, cursor=cursor)
    attempts: dict[str, list[WebhookAttempt]] = {d.id: [] for d in page.data}
    if attempts:
        rows = db.execute(
            select(WebhookAttempt)
            .where(WebhookAttempt.delivery_id.in_(list(attempts)))
            .order_by(WebhookAttempt.delivery_id, WebhookAttempt.number)
        ).scalars()
        for row in rows:
            attempts[row.delivery_id].append(row)
    return page, attempts

"""Webhooks: inbound endpoints (never their secrets), outbound subscriptions with their
delivery log and each attempt, "Enable" after an automatic disable, "Replay" of a
failed delivery, and each inbound endpoint's received events (headers and raw body,
escaped, newest first) — through `bastion.webhooks.service`, as
`/v1/orgs/{org}/webhook-endpoints` and `/v1/orgs/{org}/webhook-subscriptions` do."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.responses import Response

from bastion.console.web import SignedIn, SignedInPost, notice, render, see_other
from bastion.core.pagination import DEFAULT_LIMIT, MAX_LIMIT
from bastion.core.permissions import Permission
from bastion.webhooks import replay
from bastion.webhooks import service as webhooks

router = APIRouter()
PAGE = "/console/webhooks"

ENABLED = notice("sub-enabled", "Subscription enabled: pending deliveries resume.")
REPLAYED = notice("delivery-replayed", "Delivery queued again.")


@router.get("/webhooks")
def webhooks_page(viewer: SignedIn) -> Response:
    db, principal, org = viewer.db, viewer.signed_in, viewer.org_id
    endpoints = webhooks.list_endpoints(db, principal, org, limit=MAX_LIMIT, cursor=None).data
    versions = webhooks.secret_versions(db, [e.id for e in endpoints])
    subs = webhooks.list_subscriptions(db, principal, org, limit=MAX_LIMIT, cursor=None).data
    return render(
        viewer, "webhooks.html", title="Webhooks", endpoints=endpoints, versions=versions,
        subscriptions=subs, hook_path=webhooks.hook_path,
        may_manage=viewer.can(Permission.WEBHOOKS_MANAGE),
    )  # fmt: skip


BODY_SHOWN = 4000  # characters of a received body before truncation


def _received(event: Any) -> dict[str, Any]:
    try:
        text: str | None = event.body.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    cut = text is not None and len(text) > BODY_SHOWN
    return {
        "id": event.id,
        "received_at": event.received_at,
        "headers": sorted((str(k), str(v)) for k, v in (event.headers or {}).items()),
        "body": text[:BODY_SHOWN] if text is not None else None,
        "truncated": cut,
        "size": len(event.body),
        "sha256": event.body_sha256,
    }


@router.get("/webhooks/endpoints/{endpoint}")
def endpoint_events(endpoint: str, viewer: SignedIn, cursor: str | None = None) -> Response:
    db, principal, org = viewer.db, viewer.signed_in, viewer.org_id
    found = webhooks.get_endpoint(db, principal, org, endpoint)
    page = webhooks.list_events(db, principal, org, found.id, limit=DEFAULT_LIMIT, cursor=cursor)
    return render(
        viewer, "webhook_events.html", title="Webhook events", endpoint=found,
        hook_path=webhooks.hook_path, events=[_received(e) for e in page.data],
        next_cursor=page.next_cursor, older=bool(cursor),
    )  # fmt: skip


@router.get("/webhooks/subscriptions/{sub}")
def subscription_page(sub: str, viewer: SignedIn) -> Response:
    db, principal, org = viewer.db, viewer.signed_in, viewer.org_id
    subscription = webhooks.get_subscription(db, principal, org, sub)
    page, attempts = webhooks.list_deliveries(db, principal, org, sub, limit=MAX_LIMIT, cursor=None)
    return render(
        viewer, "webhook_deliveries.html", title="Webhook deliveries", sub=subscription,
        deliveries=page.data, attempts=attempts,
        may_manage=viewer.can(Permission.WEBHOOKS_MANAGE),
    )  # fmt: skip


@router.post("/webhooks/subscriptions/{sub}/enable")
def enable(sub: str, posted: SignedInPost) -> Response:
    webhooks.enable_subscription(posted.db, posted.principal, posted.org_id, sub)
    return see_other(f"{PAGE}/subscriptions/{sub}", ENABLED)


@router.post("/webhooks/subscriptions/{sub}/deliveries/{delivery}/replay")
def replay_failed(sub: str, delivery: str, posted: SignedInPost) -> Response:
    replay.replay_delivery(posted.db, posted.principal, posted.org_id, sub, delivery)
    return see_other(f"{PAGE}/subscriptions/{sub}", REPLAYED)

"""Failures worth a trace but too frequent to record one by one: 404s to an authenticated
caller (probing for other organisations' objects), 422s and 429s, forged webhook
deliveries.

Each is counted per caller (the principal, else the address) and minute, in the rate
limiter's counters (memory, or Redis shared by every worker), and recorded as an audit
event at the 1st, 2nd, 4th, 8th… of the minute (metadata `count`): a burst of n costs
about log2(n) events, the trail stays append-only, and each event is a lower bound of
what happened, within a factor of two. Events go through `ctx.failure_events`, written
after the failed request's rollback, to the principal's organisation (an address's: the
instance chain)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bastion.api.context import RequestContext
from bastion.core.clock import rfc3339, utcnow
from bastion.core.events import EventType, Outcome
from bastion.core.ratelimit import RateLimiter

WINDOW_SECONDS = 60


def due(count: int) -> bool:
    """Record the 1st, 2nd, 4th, 8th… occurrence of a window."""
    return count > 0 and count & (count - 1) == 0


async def note(
    ctx: RequestContext,
    limiter: RateLimiter,
    type_: EventType,
    *,
    status: int,
    outcome: Outcome = Outcome.DENIED,
    anonymous: bool = True,
) -> None:
    """Count this request's failure of `type_` for its caller; queue its audit event when
    the count is due. Callers without a principal are counted by address, unless
    `anonymous` is False (then they are not counted at all)."""
    principal = ctx.principal
    if principal is not None:
        subject, org_id = f"p:{principal.id}", principal.org_id
    elif anonymous and ctx.ip:
        subject, org_id = f"ip:{ctx.ip}", None
    else:
        return
    counted = await _count(limiter, f"failures/{type_}/{subject}")
    if counted is None:
        return
    ctx.failure_events.append(
        {
            "type": type_,
            "actor": ctx.actor,
            "org_id": org_id,
            "outcome": outcome,
            "metadata": {
                **counted,
                "status": status,
                "method": ctx.method,
                "path": ctx.path,
            },
        }
    )


async def note_event(
    ctx: RequestContext, limiter: RateLimiter, event: dict[str, Any], subject: str
) -> None:
    """Queue a failure's own audit `event` when its count for `subject` is due, with the
    count in its metadata: for failures anyone may cause without a credential, such as
    forged webhook deliveries (counted per endpoint), so a flood of them costs the
    writer about log2(n) events a minute instead of n."""
    counted = await _count(limiter, f"failures/{event['type']}/{subject}")
    if counted is not None:
        ctx.failure_events.append(
            {**event, "metadata": {**(event.get("metadata") or {}), **counted}}
        )


async def _count(limiter: RateLimiter, key: str) -> dict[str, Any] | None:
    """This occurrence's count and minute when it is due for recording, else None."""
    window, count = await limiter.tally(key, WINDOW_SECONDS, utcnow().timestamp())
    if not due(count):
        return None
    minute = datetime.fromtimestamp(window * WINDOW_SECONDS, UTC)
    return {"count": count, "minute": rfc3339(minute)}

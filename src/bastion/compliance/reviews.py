"""Access review campaigns: one item per subject in scope (people and their roles, API
keys, service accounts, what agents were given, temporary grants); designated
reviewers (by user or role) keep or revoke each, never their own access; a revoke takes
effect at once through the owning domain, audited in the same transaction; at `due_at`
the undecided items get the campaign's `on_due`; reviewers are reminded through the
alert channels (`access_review_due` rules); a recurring campaign starts its successor
when it completes. Completed campaigns are the evidence of the access-review controls."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bastion.agents import evidence as agents
from bastion.audit import service as audit
from bastion.authz import evidence as authz
from bastion.authz import service as authz_service
from bastion.compliance.models import AccessReview, AccessReviewItem
from bastion.core.clock import as_utc, rfc3339, utcnow
from bastion.core.context import SYSTEM, Actor
from bastion.core.db import get_in_org
from bastion.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from bastion.core.events import EventType
from bastion.core.ids import has_prefix, new_id
from bastion.core.permissions import Permission
from bastion.core.principal import Principal
from bastion.identity import evidence as identity
from bastion.identity import service as identity_service

Sessions = Callable[[], Session]
SCOPES = ("users", "api_keys", "service_accounts", "agents", "role_grants")
RECURRENCE_MONTHS = {"monthly": 1, "quarterly": 3, "semiannual": 6, "yearly": 12}
REMIND_EVERY = timedelta(hours=24)
MAX_DUE = timedelta(days=366)
MAX_ITEMS = 5000


@dataclass(frozen=True)
class Counts:
    total: int
    decided: int
    kept: int
    revoked: int


def add_months(at: datetime, months: int) -> datetime:
    month = at.month - 1 + months
    year, month = at.year + month // 12, month % 12 + 1
    days = [
        31,
        29 if year % 4 == 0 and (year % 100 or year % 400 == 0) else 28,
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ]
    return at.replace(year=year, month=month, day=min(at.day, days[month - 1]))


# --- items ----------------------------------------------------------------------------


# One subject under review: (kind, subject id, name, access, the people whose access it is).
Subject = tuple[str, str, str, dict[str, Any], list[str]]


def _people(db: Session, org_id: str) -> list[Subject]:
    return [
        (
            "user",
            p.id,
            p.email,
            {"role": p.role, "mfa": p.has_mfa, "last_login_at": rfc3339(p.last_login_at)},
            [p.id],
        )
        for p in identity.people(db, org_id)
        if p.status == "active"
    ]


def _keys(db: Session, org_id: str) -> list[Subject]:
    return [
        (
            "api_key",
            k.id,
            k.name,
            {
                "role": k.role,
                "owner": k.user_id or k.service_account_id,
                "created_at": rfc3339(k.created_at),
                "last_used_at": rfc3339(k.last_used_at),
            },
            [k.user_id or ""],
        )
        for k in identity.live_keys(db, org_id)
    ]


def _accounts(db: Session, org_id: str) -> list[Subject]:
    return [
        ("service_account", a.id, a.name, {"role": a.role}, [])
        for a in identity.service_accounts(db, org_id)
        if a.status == "active"
    ]


def _agent_grants(db: Session, org_id: str) -> list[Subject]:
    out: list[Subject] = []
    for g in agents.agents(db, org_id):
        holders = [g.owner_id, g.configured_by]
        out.extend(
            ("agent_secret", g.id, f"{g.name}: secret {n}", {"agent": g.id, "secret": n}, holders)
            for n in g.secrets
        )
        out.extend(
            (
                "agent_connection",
                g.id,
                f"{g.name}: connection {n}",
                {"agent": g.id, "connection": n},
                holders,
            )
            for n in g.connections
        )
    return out


def _grants(db: Session, org_id: str) -> list[Subject]:
    return [
        (
            "role_grant",
            t.id,
            f"{t.role} for {t.user_id}",
            {
                "user_id": t.user_id,
                "role": t.role,
                "expires_at": rfc3339(t.expires_at),
                "reason": t.reason,
            },
            [t.user_id],
        )
        for t in authz.active_grants(db, org_id)
    ]


_SUBJECTS: dict[str, Callable[[Session, str], list[Subject]]] = {
    "users": _people,
    "api_keys": _keys,
    "service_accounts": _accounts,
    "agents": _agent_grants,
    "role_grants": _grants,
}


def _items(db: Session, org_id: str, review_id: str, scope: list[str]) -> list[AccessReviewItem]:
    subjects = [s for name in scope for s in _SUBJECTS[name](db, org_id)]
    if len(subjects) > MAX_ITEMS:
        raise InvalidInput.field("scope", f"more than {MAX_ITEMS} items: narrow the scope")
    return [
        AccessReviewItem(
            id=new_id("ari"),
            org_id=org_id,
            review_id=review_id,
            kind=kind,
            subject_id=subject_id,
            subject_name=name[:320],
            access=access,
            holder_ids=sorted({h for h in holders if h}),
            on_due=False,
        )
        for kind, subject_id, name, access, holders in subjects
    ]


# --- campaigns ------------------------------------------------------------------------


def _check_reviewers(
    db: Session, org_id: str, reviewers: dict[str, list[str]]
) -> dict[str, list[str]]:
    users = sorted(set(reviewers.get("users") or []))
    roles = sorted(set(reviewers.get("roles") or []))
    if not users and not roles:
        raise InvalidInput.field("reviewers", "name at least one reviewer (users or roles)")
    for i, user_id in enumerate(users):
        if identity_service.find_user_in_org(db, org_id, user_id) is None:
            raise InvalidInput.field(f"reviewers.users[{i}]", "no such user in this organisation")
    stored = [authz_service.resolve_role(db, org_id, r, field="reviewers.roles") for r in roles]
    return {"users": users, "roles": sorted(set(stored))}


def _start(
    db: Session,
    actor: Actor,
    org_id: str,
    *,
    name: str,
    scope: list[str],
    reviewers: dict[str, list[str]],
    due_at: datetime,
    on_due: str,
    recurrence: str | None,
    created_by: str | None,
    previous_id: str | None = None,
) -> AccessReview:
    review = AccessReview(
        id=new_id("arv"),
        org_id=org_id,
        name=name,
        scope=scope,
        reviewers=reviewers,
        due_at=due_at,
        on_due=on_due,
        recurrence=recurrence,
        status="open",
        previous_id=previous_id,
        created_by=created_by,
        created_at=utcnow(),
    )
    db.add(review)
    items = _items(db, org_id, review.id, scope)
    db.add_all(items)
    db.flush()
    audit.record(
        db,
        type=EventType.ACCESS_REVIEW_CREATED,
        actor=actor,
        org_id=org_id,
        resource=("access_review", review.id),
        metadata={
            "name": name,
            "scope": scope,
            "items": len(items),
            "due_at": rfc3339(due_at),
            "on_due": on_due,
            "recurrence": recurrence,
            "previous_id": previous_id,
        },
    )
    if not items:  # nothing to review: complete, and no successor (it would be empty too)
        _complete(db, review, actor, successor=False)
    return review


def create_review(
    db: Session,
    principal: Principal,
    org_id: str,
    *,
    name: str,
    scope: list[str],
    reviewers: dict[str, list[str]],
    due_at: datetime,
    on_due: str,
    recurrence: str | None,
) -> AccessReview:
    principal.require_org(org_id)
    principal.require(Permission.ACCESS_REVIEWS_MANAGE)
    if as_utc(due_at) <= utcnow():
        raise InvalidInput.field("due_at", "must be in the future")
    if as_utc(due_at) > utcnow() + MAX_DUE:
        raise InvalidInput.field("due_at", "must be within a year")
    checked = _check_reviewers(db, org_id, reviewers)
    return _start(
        db,
        principal.actor,
        org_id,
        name=name,
        scope=sorted(set(scope), key=SCOPES.index),
        reviewers=checked,
        due_at=as_utc(due_at),
        on_due=on_due,
        recurrence=recurrence,
        created_by=principal.user_id or principal.id,
    )


def _is_reviewer(review: AccessReview, principal: Principal) -> bool:
    r = review.reviewers or {}
    return (principal.user_id is not None and principal.user_id in (r.get("users") or [])) or (
        principal.principal_type == "user" and principal.role in (r.get("roles") or [])
    )


def is_reviewer(review: AccessReview, principal: Principal) -> bool:
    """`principal` is one of the campaign's reviewers (by user or by role)."""
    return _is_reviewer(review, principal)


def own_access(item: AccessReviewItem, principal: Principal) -> bool:
    """The item is `principal`'s own access, which they may never decide."""
    return principal.user_id in item.holder_ids or principal.credential_id == item.subject_id


def _sees_all(principal: Principal) -> bool:
    return principal.can(Permission.ACCESS_REVIEWS_MANAGE) or principal.can(
        Permission.COMPLIANCE_READ
    )


def _review(db: Session, principal: Principal, org_id: str, review_id: str) -> AccessReview:
    principal.require_org(org_id)
    review = get_in_org(db, AccessReview, review_id, org_id, prefix="arv", noun="access review")
    if not _sees_all(principal) and not _is_reviewer(review, principal):
        raise NotFound("access review not found")
    return review


def get_review(db: Session, principal: Principal, org_id: str, review_id: str) -> AccessReview:
    return _review(db, principal, org_id, review_id)


def list_reviews(db: Session, principal: Principal, org_id: str) -> list[AccessReview]:
    principal.require_org(org_id)
    rows = db.execute(
        select(AccessReview)
        .where(AccessReview.org_id == org_id)
        .order_by(AccessReview.id.desc())
        .limit(500)
    ).scalars()
    if _sees_all(principal):
        return list(rows)
    return [r for r in rows if _is_reviewer(r, principal)]


def counts(db: Session, review_ids: list[str]) -> dict[str, Counts]:
    found: dict[str, list[int]] = {r: [0, 0, 0, 0] for r in review_ids}
    if review_ids:
        for review_id, decision, n in db.execute(
            select(AccessReviewItem.review_id, AccessReviewItem.decision, func.count())
            .where(AccessReviewItem.review_id.in_(review_ids))
            .group_by(AccessReviewItem.review_id, AccessReviewItem.decision)
        ):
            c = found[review_id]
            c[0] += n
            if decision is not None:
                c[1] += n
                c[2 if decision == "keep" else 3] += n
    return {r: Counts(*c) for r, c in found.items()}


def list_items(
    db: Session, principal: Principal, org_id: str, review_id: str
) -> list[AccessReviewItem]:
    review = _review(db, principal, org_id, review_id)
    return list(
        db.execute(
            select(AccessReviewItem)
            .where(AccessReviewItem.review_id == review.id)
            .order_by(AccessReviewItem.id)
        ).scalars()
    )


# --- decisions ------------------------------------------------------------------------


def _revoke(db: Session, actor: Actor, org_id: str, item: AccessReviewItem, reason: str) -> str:
    """Take the item's access away now, through the domain that owns it."""
    kind, subject = item.kind, item.subject_id
    if kind == "user":
        done = identity.suspend_person(db, actor, org_id, subject, reason)
        what = "user suspended"
    elif kind == "api_key":
        done = identity.revoke_key(db, actor, org_id, subject, reason)
        what = "API key revoked"
    elif kind == "service_account":
        done = identity.suspend_account(db, actor, org_id, subject, reason)
        what = "service account suspended"
    elif kind in ("agent_secret", "agent_connection"):
        grant = "secret" if kind == "agent_secret" else "connection"
        name = str(item.access.get(grant))
        done = agents.remove_grant(db, actor, org_id, subject, grant, name, reason)
        what = f"{grant} removed from agent"
    else:
        done = authz.end_grant(db, actor, org_id, subject, reason)
        what = "temporary grant revoked"
    return what if done else f"already ended ({what.split()[0]} not live)"


def _apply(
    db: Session,
    actor: Actor,
    review: AccessReview,
    item: AccessReviewItem,
    decision: str,
    comment: str | None,
    by: str,
    on_due: bool,
) -> None:
    effect = "kept"
    if decision == "revoke":
        reason = f"access review {review.id}"
        try:
            effect = _revoke(db, actor, review.org_id, item, reason)
        except NotFound:
            effect = "subject no longer exists"
        except Conflict as exc:
            if not on_due:
                raise
            effect = f"not revoked: {exc.detail}"[:200]
    item.decision, item.comment, item.decided_by = decision, comment, by
    item.decided_at, item.on_due, item.effect = utcnow(), on_due, effect
    db.flush()
    audit.record(
        db,
        type=EventType.ACCESS_REVIEW_DECIDED,
        actor=actor,
        org_id=review.org_id,
        resource=("access_review", review.id),
        metadata={
            "item_id": item.id,
            "kind": item.kind,
            "subject_id": item.subject_id,
            "decision": decision,
            "on_due": on_due,
            "effect": effect,
            "commented": comment is not None,
        },
    )


def decide(
    db: Session,
    principal: Principal,
    org_id: str,
    review_id: str,
    item_id: str,
    *,
    decision: str,
    comment: str | None,
) -> AccessReviewItem:
    review = _review(db, principal, org_id, review_id)
    if not has_prefix(item_id, "ari"):
        raise NotFound("access review item not found")
    item = db.execute(
        select(AccessReviewItem)
        .where(AccessReviewItem.review_id == review.id, AccessReviewItem.id == item_id)
        .with_for_update()
    ).scalar_one_or_none()
    if item is None:
        raise NotFound("access review item not found")
    if not _is_reviewer(review, principal):
        raise Forbidden("only the campaign's reviewers decide its items")
    if own_access(item, principal):
        raise Forbidden("nobody reviews their own access")
    if review.status != "open":
        raise Conflict("the access review is completed")
    if item.decision is not None:
        raise Conflict("this item is already decided")
    by = principal.user_id or principal.id
    _apply(db, principal.actor, review, item, decision, comment, by, on_due=False)
    if _undecided(db, review.id) == 0:
        _complete(db, review, principal.actor)
    return item


def _undecided(db: Session, review_id: str) -> int:
    return int(
        db.execute(
            select(func.count())
            .select_from(AccessReviewItem)
            .where(AccessReviewItem.review_id == review_id, AccessReviewItem.decision.is_(None))
        ).scalar_one()
    )


def _complete(db: Session, review: AccessReview, actor: Actor, *, successor: bool = True) -> None:
    review.status, review.completed_at = "completed", utcnow()
    c = counts(db, [review.id])[review.id]
    audit.record(
        db,
        type=EventType.ACCESS_REVIEW_COMPLETED,
        actor=actor,
        org_id=review.org_id,
        resource=("access_review", review.id),
        metadata={"items": c.total, "kept": c.kept, "revoked": c.revoked},
    )
    months = RECURRENCE_MONTHS.get(review.recurrence or "")
    if months and successor:
        due = add_months(as_utc(review.due_at), months)
        now = utcnow()
        while due <= now:
            due = add_months(due, months)
        _start(
            db,
            SYSTEM,
            review.org_id,
            name=review.name,
            scope=list(review.scope),
            reviewers=dict(review.reviewers),
            due_at=due,
            on_due=review.on_due,
            recurrence=review.recurrence,
            created_by=review.created_by,
            previous_id=review.id,
        )


# --- the background sweep ---------------------------------------------------------------


def apply_due(db: Session, review: AccessReview) -> int:
    """Give every undecided item of a campaign past its due date the campaign's
    `on_due`, then complete it. Returns items decided."""
    items = list(
        db.execute(
            select(AccessReviewItem)
            .where(AccessReviewItem.review_id == review.id, AccessReviewItem.decision.is_(None))
            .order_by(AccessReviewItem.id)
        ).scalars()
    )
    for item in items:
        _apply(
            db,
            SYSTEM,
            review,
            item,
            review.on_due,
            "applied at the due date",
            "system",
            on_due=True,
        )
    _complete(db, review, SYSTEM)
    return len(items)


def remind(db: Session, review: AccessReview, now: datetime) -> bool:
    """Remind an open campaign's reviewers (an `access_review.reminder` event, which
    `access_review_due` alert rules send to their channels): once a day."""
    if review.reminded_at is not None and as_utc(review.reminded_at) > now - REMIND_EVERY:
        return False
    left = _undecided(db, review.id)
    if not left:
        return False
    review.reminded_at = now
    audit.record(
        db,
        type=EventType.ACCESS_REVIEW_REMINDER,
        actor=SYSTEM,
        org_id=review.org_id,
        resource=("access_review", review.id),
        metadata={
            "name": review.name,
            "undecided": left,
            "due_at": rfc3339(review.due_at),
            "reviewers": dict(review.reviewers),
        },
    )
    return True


def sweep(
    write_sessions: Sessions, now: datetime | None = None, read_sessions: Sessions | None = None
) -> int:
    """Apply `on_due` to campaigns past their due date, and remind the reviewers of the
    others; one transaction per campaign, each row locked so workers do not race. Open
    campaigns are found with a reader: with none, no writer is taken."""
    at = now or utcnow()
    with (read_sessions or write_sessions)() as db:
        open_ids = list(
            db.execute(
                select(AccessReview.id)
                .where(AccessReview.status == "open")
                .order_by(AccessReview.id)
            ).scalars()
        )
    done = 0
    for review_id in open_ids:
        with write_sessions() as db:
            review = db.execute(
                select(AccessReview).where(AccessReview.id == review_id).with_for_update()
            ).scalar_one_or_none()
            if review is None or review.status != "open":
                continue
            if as_utc(review.due_at) <= at:
                audit.lock_chain(db, review.org_id)
                done += apply_due(db, review)
            else:
                remind(db, review, at)
            db.commit()
    return done

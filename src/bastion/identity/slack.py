"""People as Slack knows them: the Slack user linked to each Bastion user (one per
organisation), and the principal a verified Slack click acts as.

Linking is done by the person themselves (`PATCH /v1/me`) or by whoever may manage them
(`PATCH /v1/orgs/{org}/users/{user}`). A click in Slack carries no verification time:
the principal built here (`CredentialKind.SLACK`) reads and decides approvals only, and
anything that needs step-up is refused to it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.authz import service as authz
from bastion.core.context import Actor
from bastion.core.errors import Conflict
from bastion.core.permissions import CredentialKind
from bastion.core.principal import Principal
from bastion.identity.models import User
from bastion.identity.networks import parse_allowlist, refuse_outside
from bastion.tenancy import service as tenancy


def link(db: Session, user: User, slack_user_id: str | None) -> None:
    """Link `user` to the Slack user (None unlinks); 409 when another user of the
    organisation holds that Slack user."""
    if slack_user_id is not None:
        taken = db.execute(
            select(User.id).where(
                User.org_id == user.org_id,
                User.slack_user_id == slack_user_id,
                User.id != user.id,
            )
        ).first()
        if taken is not None:
            raise Conflict("this Slack user is linked to another user of the organisation")
    user.slack_user_id = slack_user_id


@dataclass(frozen=True)
class Person:
    """What notifying a person needs: where to reach them and what they hold."""

    id: str
    email: str
    role: str
    slack_user_id: str | None
    grants_until: datetime | None


def active_people(db: Session, org_id: str) -> list[Person]:
    """The organisation's active users, in id order."""
    stmt = (
        select(User.id, User.email, User.role, User.slack_user_id, User.grants_until)
        .where(User.org_id == org_id, User.status == "active")
        .order_by(User.id)
    )
    return [Person(*row) for row in db.execute(stmt).all()]


def slack_principal(db: Session, org_id: str, slack_user_id: str, actor: Actor) -> Principal | None:
    """The person linked to this Slack user, as a Slack click acts (None when nobody
    active of an active organisation is linked)."""
    user = db.execute(
        select(User).where(User.org_id == org_id, User.slack_user_id == slack_user_id)
    ).scalar_one_or_none()
    org = tenancy.find_org(db, org_id)
    if user is None or user.status != "active" or org is None or org.status != "active":
        return None
    rights = authz.user_rights(db, org_id, user.role, user.id, user.grants_until)
    return Principal(
        principal_type="user",
        id=user.id,
        org_id=org_id,
        role=user.role,
        credential=CredentialKind.SLACK,
        role_permissions=rights.permissions,
        user_id=user.id,
        actor=Actor("user", user.id, actor.ip, actor.user_agent, actor.request_id),
        temporary=rights.temporary,
    )


def reach(db: Session, org_id: str, user_id: str) -> Person | None:
    """Where to reach an active user of the organisation (None when gone or inactive)."""
    row = db.execute(
        select(User.id, User.email, User.role, User.slack_user_id, User.grants_until).where(
            User.org_id == org_id, User.id == user_id, User.status == "active"
        )
    ).first()
    return Person(*row) if row is not None else None


def person(db: Session, org_id: str, user_id: str) -> str | None:
    """A user as people recognise them: "Name <email>" (None when not in the org)."""
    row = db.execute(
        select(User.name, User.email).where(User.org_id == org_id, User.id == user_id)
    ).first()
    if row is None:
        return None
    return f"{row[0]} <{row[1]}>" if row[0] else str(row[1])


def refuse_outside_allowlist(db: Session, org_id: str, actor: Actor) -> None:
    """A Slack click is a credential of the organisation: 403 `ip_not_allowed` (audited)
    when the request's address is outside its IP allowlist (add Slack's egress ranges
    to an allowlist to take clicks from Slack)."""
    refuse_outside(
        parse_allowlist(tenancy.ip_allowlist(db, org_id)), org_id, actor, ("org", org_id)
    )

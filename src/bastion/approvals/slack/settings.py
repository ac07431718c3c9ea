"""An organisation's Slack app: `PATCH /v1/orgs/{org}` `{"slack": {"team_id",
"signing_secret", "bot_token"?}}`, removed with `{"slack": null}`.

The signing secret (which verifies Slack's interaction requests) and the bot token
(which posts approvers' messages through `chat.postMessage`) are sealed in the vault
(`bastion.secrets.sealed`); only their ids are kept here, and neither is ever returned,
logged or audited: reads show `configured` and the `team_id`. Whoever holds the signing
secret can forge clicks as any linked person, so changing it needs a person who stepped
up (RFC 9470), like the organisation's other sign-in settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.approvals.models import SlackSettings
from bastion.audit import service as audit
from bastion.core.clock import utcnow
from bastion.core.errors import Conflict
from bastion.core.events import EventType
from bastion.core.permissions import Permission
from bastion.core.principal import Principal
from bastion.secrets import sealed
from bastion.secrets.vault import Vault

SECRET_SCOPE = "slack"  # noqa: S105 - a vault scope name, not a secret


@dataclass(frozen=True)
class SlackChange:
    team_id: str
    signing_secret: str = field(repr=False)
    bot_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class SlackView:
    """What reads show of the organisation's Slack app: never its secrets."""

    configured: bool
    team_id: str | None
    bot_token: bool


def view(db: Session, org_id: str) -> SlackView:
    row = db.get(SlackSettings, org_id)
    if row is None:
        return SlackView(False, None, False)
    return SlackView(True, row.team_id, row.bot_token_id is not None)


def _seal(
    db: Session, vault: Vault, org_id: str, secret_id: str | None, name: str, value: str
) -> str:
    if secret_id is None:
        return sealed.create(
            db,
            vault,
            org_id,
            name=f"slack/{name}",
            scope_type=SECRET_SCOPE,
            scope_id=org_id,
            description="managed by Bastion: the Slack app of approvals",
            value=value.encode(),
        )
    sealed.add_version(db, vault, secret_id, value.encode())
    return secret_id


def configure(
    db: Session, vault: Vault, principal: Principal, org_id: str, change: SlackChange
) -> SlackView:
    """Set the organisation's Slack app (a person steps up first); audited with the
    team id and which secrets changed, never their values. 409 when another
    organisation already uses the Slack workspace."""
    principal.require_org(org_id)
    principal.require(Permission.ORG_MANAGE)
    principal.require_recent_auth("org.slack_settings")
    other = db.execute(
        select(SlackSettings.org_id).where(
            SlackSettings.team_id == change.team_id, SlackSettings.org_id != org_id
        )
    ).first()
    if other is not None:
        raise Conflict("this Slack workspace is connected to another organisation")
    row = db.get(SlackSettings, org_id, with_for_update=True)
    signing_id = _seal(
        db,
        vault,
        org_id,
        row.signing_secret_id if row else None,
        "signing_secret",
        change.signing_secret,
    )
    bot_id = row.bot_token_id if row else None
    if change.bot_token is not None:
        bot_id = _seal(db, vault, org_id, bot_id, "bot_token", change.bot_token)
    if row is None:
        row = SlackSettings(org_id=org_id, signing_secret_id=signing_id)
        db.add(row)
    row.team_id, row.signing_secret_id, row.bot_token_id = change.team_id, signing_id, bot_id
    row.updated_at = utcnow()
    db.flush()
    audit.record(
        db,
        type=EventType.ORG_SLACK_UPDATED,
        actor=principal.actor,
        org_id=org_id,
        resource=("org", org_id),
        metadata={
            "team_id": change.team_id,
            "signing_secret_changed": True,
            "bot_token_changed": change.bot_token is not None,
        },
    )
    return view(db, org_id)


def remove(db: Session, principal: Principal, org_id: str) -> SlackView:
    """Remove the organisation's Slack app (a person steps up first): its sealed signing
    secret and bot token are destroyed, so clicks from its workspace are refused and no
    approver is messaged in Slack any more. Audited with the team id; removing none is
    a no-op (nothing recorded)."""
    principal.require_org(org_id)
    principal.require(Permission.ORG_MANAGE)
    principal.require_recent_auth("org.slack_settings")
    row = db.get(SlackSettings, org_id, with_for_update=True)
    if row is None:
        return view(db, org_id)
    team_id, secrets = row.team_id, (row.signing_secret_id, row.bot_token_id)
    db.delete(row)
    db.flush()
    sealed.destroy(db, *secrets)
    audit.record(
        db,
        type=EventType.ORG_SLACK_REMOVED,
        actor=principal.actor,
        org_id=org_id,
        resource=("org", org_id),
        metadata={"team_id": team_id},
    )
    return view(db, org_id)


@dataclass(frozen=True)
class OrgSlack:
    """An organisation's Slack app as a verifier or sender needs it, secrets open."""

    org_id: str
    team_id: str
    signing_secret: str = field(repr=False)


def by_team(db: Session, vault: Vault, team_id: str) -> OrgSlack | None:
    """The organisation whose Slack workspace this is, with its signing secret (None
    when no organisation uses it, or its secret cannot be opened)."""
    row = db.execute(
        select(SlackSettings).where(SlackSettings.team_id == team_id)
    ).scalar_one_or_none()
    if row is None:
        return None
    try:
        secret = sealed.read_current(db, vault, row.signing_secret_id).decode()
    except sealed.Unreadable:
        return None
    return OrgSlack(row.org_id, row.team_id, secret)


def bot_token(db: Session, vault: Vault, org_id: str) -> str | None:
    """The organisation's bot token in clear, for one `chat.postMessage` (None when no
    Slack app or no token is configured, or it cannot be opened)."""
    row = db.get(SlackSettings, org_id)
    if row is None or row.bot_token_id is None:
        return None
    try:
        return sealed.read_current(db, vault, row.bot_token_id).decode()
    except sealed.Unreadable:
        return None

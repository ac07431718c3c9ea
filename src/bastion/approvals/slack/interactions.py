"""Approve / Deny clicked in Slack: `POST /v1/integrations/slack/interactions`.

Slack posts `application/x-www-form-urlencoded` with one field, `payload` (JSON). The
organisation is the one whose Slack app's workspace is the payload's `team.id`; the
request is verified exactly as Slack specifies, with that organisation's signing secret:
`X-Slack-Signature` = `v0=` + hex(HMAC-SHA256(secret, "v0:{X-Slack-Request-Timestamp}:{raw
body}")), compared in constant time, the timestamp within 5 minutes
(`bastion.webhooks.verify`). An unknown workspace, a stale or mis-signed request is
refused (401) and changes nothing; from outside the organisation's IP allowlist, 403
`ip_not_allowed` (audited), as for every credential of the organisation.

A verified click decides as the Bastion user linked to the clicking Slack user, through
the same `decide` as the API: separation of duties, eligibility, quorum and step-up
apply. A click carries no recent verification, so a decision that needs step-up (a
high-risk tool) is refused with the console link to decide there. An unlinked or
ineligible clicker changes nothing and is told why (an ephemeral message). The same
click again (a retry, a replay within the window) finds the decision recorded and
changes nothing.

Slack reads no message from the answer to a `block_actions` request: the clicker's
message also goes to the payload's `response_url` (only one under Slack's hooks origin,
`BASTION_SLACK_RESPONSE_URL_PREFIX`), after the answer, through the SSRF guard."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qs

import httpx
import structlog
from sqlalchemy.orm import Session

from bastion.approvals import decisions
from bastion.approvals.notify.messages import APPROVE, DENY, console_link
from bastion.approvals.slack import settings
from bastion.core.context import Actor
from bastion.core.errors import Conflict, Forbidden, NotFound, StepUpRequired
from bastion.core.netguard import GuardedTransport, OutboundRefused
from bastion.identity import service as identity
from bastion.secrets.vault import Vault
from bastion.webhooks import WebhookVerificationError, verify

log = structlog.get_logger("bastion.approvals")
TOLERANCE_SECONDS = 300
UNLINKED = (
    "Your Slack account is not linked to a Bastion user of this organisation, so nothing "
    "was decided. Link it in Bastion (your profile's Slack user id), or decide in the "
    "console."
)


@dataclass(frozen=True)
class Reply:
    """The answer to Slack: 401 (unverified: nothing read, nothing changed) or 200 with
    an ephemeral message for the clicker."""

    status: int
    text: str
    decided: bool = False
    response_url: str | None = field(default=None, repr=False)  # carries Slack's token

    def body(self) -> dict[str, Any]:
        return {"response_type": "ephemeral", "replace_original": False, "text": self.text}


REFUSED = Reply(401, "the request could not be verified")


def _payload(body: bytes) -> dict[str, Any] | None:
    try:
        fields = parse_qs(body.decode("utf-8"), max_num_fields=20)
        values = fields.get("payload") or []
        payload = json.loads(values[0]) if len(values) == 1 else None
    except (UnicodeDecodeError, ValueError):
        return None
    return payload if isinstance(payload, dict) else None


def _text(value: Any, limit: int = 60) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= limit else None


def handle(
    db: Session,
    vault: Vault,
    headers: Mapping[str, str],
    body: bytes,
    actor: Actor,
    public_url: str,
) -> Reply:
    """Verify one interaction and act on it (see the module's docstring)."""
    payload = _payload(body)
    team = payload.get("team") if payload is not None else None
    team_id = _text(team.get("id")) if isinstance(team, dict) else None
    if payload is None or team_id is None:
        return REFUSED
    org = settings.by_team(db, vault, team_id)
    if org is None:
        return REFUSED
    try:
        verify("slack", org.signing_secret, headers, body, tolerance=TOLERANCE_SECONDS)
    except WebhookVerificationError:
        return REFUSED
    identity.refuse_outside_slack_allowlist(db, org.org_id, actor)  # 403, audited
    reply = _act(db, org.org_id, payload, actor, public_url)
    url = payload.get("response_url")
    if isinstance(url, str) and len(url) <= 500:
        reply = replace(reply, response_url=url)
    return reply


def answer(
    reply: Reply,
    prefix: str,
    allow: Sequence[str],
    proxy: str | None = None,
    plaintext: Sequence[str] = (),
) -> bool:
    """Post the clicker's message to the interaction's `response_url` (after the request
    was answered). Only a URL under `prefix` (Slack's hooks origin); failures are logged
    without the URL (it carries a token). Whether Slack took it."""
    url = reply.response_url
    if url is None or not url.startswith(prefix) or not prefix:
        return False
    try:
        with httpx.Client(
            transport=GuardedTransport(allow, proxy=proxy, plaintext=plaintext),
            timeout=10,
            follow_redirects=False,
        ) as client:
            response = client.post(url, json=reply.body())
    except (OutboundRefused, httpx.HTTPError) as exc:
        log.warning("slack response not sent", error=type(exc).__name__)
        return False
    if response.status_code != 200:
        log.warning("slack response not sent", status=response.status_code)
        return False
    return True


def _act(db: Session, org_id: str, payload: dict[str, Any], actor: Actor, public_url: str) -> Reply:
    actions = payload.get("actions")
    clicked = next(
        (
            a
            for a in (actions if isinstance(actions, list) else [])
            if isinstance(a, dict) and a.get("action_id") in (APPROVE, DENY)
        ),
        None,
    )
    approval_id = _text(clicked.get("value"), 40) if clicked is not None else None
    if payload.get("type") != "block_actions" or clicked is None or approval_id is None:
        return Reply(200, "Nothing to do.")
    user = payload.get("user")
    slack_user = _text(user.get("id"), 40) if isinstance(user, dict) else None
    principal = identity.slack_principal(db, org_id, slack_user, actor) if slack_user else None
    if principal is None:
        return Reply(200, UNLINKED)
    decision = "approve" if clicked["action_id"] == APPROVE else "deny"
    link = console_link(public_url, approval_id)
    try:
        approval = decisions.decide(
            db, principal, org_id, approval_id, decision=decision, comment="decided in Slack"
        )
    except StepUpRequired:
        return Reply(
            200,
            f"Deciding this request needs a recent sign-in: nothing was decided. Open {link}"
            " to decide in the console.",
        )
    except NotFound:
        return Reply(200, "This approval does not exist in your organisation.")
    except Forbidden as exc:
        return Reply(200, f"You may not decide this request, so nothing changed: {exc.detail}.")
    except Conflict as exc:
        return Reply(200, f"Nothing changed: {exc.detail}.")
    done = "approved" if decision == "approve" else "denied"
    progress = (
        f"the request is now {approval.status}"
        if approval.status != "pending"
        else "it still waits for more approvals"
    )
    return Reply(200, f"You {done} {approval.tool}: {progress}. Details: {link}", decided=True)

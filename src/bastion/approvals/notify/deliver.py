"""Sending approvers their notices, after the request committed, retried.

A request (and an escalation) writes a `fanout` notice in its own transaction
(`enqueue`). The notifier (`deliver_due`, run by a background worker every
`BASTION_APPROVAL_NOTIFY_INTERVAL` seconds) turns a fanout into one notice per person
who may decide now and per channel they have: `email` to each, `slack` to each linked
Slack user when the organisation's Slack app has a bot token (email only when an SMTP
server is configured). Nobody is told twice of one approval. Each notice is claimed (a
lease on its retry time, compare-and-set) so workers and replicas do not send it twice
at once, sent outside any transaction, and retried with backoff until sent,
`MAX_ATTEMPTS` at most. A notice whose approval closed
meanwhile is dropped. Failures are logged with the channel and a short reason, never a
token or the message, and counted (`STATS`). Finished notices (sent, dropped, or given
up after `MAX_ATTEMPTS`) of closed approvals are purged after the retention period
(`purge_finished`, about hourly after a round)."""

from __future__ import annotations

import json
import re
import smtplib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
import structlog
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from bastion.approvals.decisions import effective_status
from bastion.approvals.hooks import agent_side
from bastion.approvals.models import Approval, ApprovalNotice
from bastion.approvals.notify import messages, recipients
from bastion.approvals.notify.outbox import EMAIL, FANOUT, SLACK
from bastion.approvals.slack import settings as slack_settings
from bastion.audit.siem_transport import backoff_delay
from bastion.core import mail
from bastion.core.clock import utcnow
from bastion.core.ids import new_id
from bastion.core.netguard import GuardedTransport, OutboundRefused
from bastion.identity import service as identity
from bastion.secrets.vault import Vault

log = structlog.get_logger("bastion.approvals")
Sessions = Callable[[], Session]
MAX_ATTEMPTS = 8
LEASE_SECONDS = 120
BATCH = 100
MAX_BATCHES = 20  # a round's bound: 2,000 notices
# Notices sent and failed attempts, by channel, since the process started.
STATS: Counter[str] = Counter()
_SLACK_ERROR = re.compile(r"^[a-z_]{1,60}$")


@dataclass(frozen=True)
class Channels:
    """Where notices go out: SMTP, the Slack Web API, the console's origin, the SSRF
    allowlist and the plain-transport allowance."""

    vault: Vault = field(repr=False)
    smtp: mail.SmtpConfig
    public_url: str
    slack_api_url: str = "https://slack.com/api"
    allow: Sequence[str] = ()
    proxy: str | None = field(default=None, repr=False)
    plaintext: Sequence[str] = ()


class NoticeError(Exception):
    """A notice not sent; the message is a short reason safe to log and store."""


def _due(sessions: Sessions, now: datetime) -> list[tuple[str, int, datetime | None]]:
    with sessions() as db:
        rows = db.execute(
            select(ApprovalNotice.id, ApprovalNotice.attempts, ApprovalNotice.next_at)
            .where(
                ApprovalNotice.sent_at.is_(None),
                ApprovalNotice.attempts < MAX_ATTEMPTS,
                (ApprovalNotice.next_at.is_(None)) | (ApprovalNotice.next_at <= now),
            )
            .order_by(ApprovalNotice.id)
            .limit(BATCH)
        ).all()
    return [(r[0], r[1], r[2]) for r in rows]


def _claim(sessions: Sessions, notice_id: str, attempts: int, next_at: datetime | None) -> bool:
    with sessions() as db:
        due = (
            ApprovalNotice.next_at.is_(None)
            if next_at is None
            else ApprovalNotice.next_at == next_at
        )
        claimed = db.execute(
            update(ApprovalNotice)
            .where(
                ApprovalNotice.id == notice_id,
                ApprovalNotice.sent_at.is_(None),
                ApprovalNotice.attempts == attempts,
                due,
            )
            .values(next_at=utcnow() + timedelta(seconds=LEASE_SECONDS))
            .execution_options(synchronize_session=False)
        )
        db.commit()
    return bool(claimed.rowcount == 1)  # type: ignore[attr-defined]


def deliver_due(sessions: Sessions, channels: Channels) -> int:
    """One round: fan out new requests, then send every notice whose time has come.
    Returns how many notices were sent (fan-outs not counted)."""
    sent = 0
    for _ in range(2):  # a fan-out's notices go out in the same round
        fanned = 0
        # Batch after batch until none is full: a claimed notice is no longer due, so an
        # organisation's backlog (notices that keep failing) cannot keep another's newer
        # notices out of the round, up to MAX_BATCHES batches a round.
        for _batch in range(MAX_BATCHES):
            due = _due(sessions, utcnow())
            for notice_id, attempts, next_at in due:
                if not _claim(sessions, notice_id, attempts, next_at):
                    continue
                outcome = _handle(sessions, channels, notice_id)
                if outcome == FANOUT:
                    fanned += 1
                elif outcome == "sent":
                    sent += 1
            if len(due) < BATCH:
                break
        if not fanned:
            break
    return sent


def _handle(sessions: Sessions, channels: Channels, notice_id: str) -> str:
    try:
        with sessions() as db:
            notice = db.get(ApprovalNotice, notice_id)
            if notice is None:
                return "gone"
            if notice.channel == FANOUT:
                _fan_out(db, channels, notice)
                db.commit()
                return FANOUT
            send = _prepare(db, channels, notice)
            if send is None:  # closed meanwhile, or the person is out of reach now
                notice.sent_at = utcnow()
                notice.error = "not sent: the approval closed or the recipient is out of reach"
                db.commit()
                return "dropped"
            channel, approval_id, attempt = notice.channel, notice.approval_id, notice.attempts
        send()
    except NoticeError as exc:
        STATS[f"{channel}.failed"] += 1
        log.warning(
            "approval notice not sent",
            channel=channel,
            approval_id=approval_id,
            attempt=attempt + 1,
            reason=str(exc),
        )
        _record(sessions, notice_id, str(exc))
        return "failed"
    STATS[f"{channel}.sent"] += 1
    _record(sessions, notice_id, None)
    return "sent"


def _record(sessions: Sessions, notice_id: str, error: str | None) -> None:
    with sessions() as db:
        row = db.get(ApprovalNotice, notice_id)
        if row is None:
            return
        row.attempts += 1
        if error is None:
            row.sent_at, row.error, row.next_at = utcnow(), None, None
        else:
            row.error = error[:300]
            delay = backoff_delay(row.attempts - 1, base=5, cap=900)
            row.next_at = utcnow() + timedelta(seconds=delay)
        db.commit()


def _fan_out(db: Session, channels: Channels, notice: ApprovalNotice) -> None:
    """One notice per person who may decide now and channel they have; nobody twice."""
    now = utcnow()
    notice.sent_at, notice.attempts, notice.next_at = now, notice.attempts + 1, None
    approval = db.get(Approval, notice.approval_id)
    if approval is None or effective_status(approval, now) != "pending":
        return
    told = {
        (channel, recipient)
        for channel, recipient in db.execute(
            select(ApprovalNotice.channel, ApprovalNotice.recipient).where(
                ApprovalNotice.approval_id == approval.id, ApprovalNotice.channel != FANOUT
            )
        )
    }
    email = channels.smtp.host is not None  # no mail server: nobody is emailed
    slack = slack_settings.view(db, approval.org_id).bot_token
    for person in recipients.deciders(db, approval, now):
        wanted = ([EMAIL] if email else []) + ([SLACK] if slack and person.slack_user_id else [])
        for channel in wanted:
            if (channel, person.id) in told:
                continue
            db.add(
                ApprovalNotice(
                    id=new_id("apn"),
                    org_id=approval.org_id,
                    approval_id=approval.id,
                    channel=channel,
                    recipient=person.id,
                    round=notice.round,
                    attempts=0,
                    created_at=now,
                )
            )


def _notice(db: Session, channels: Channels, approval: Approval) -> messages.Notice:
    facts = agent_side().describe(db, approval.agent_id, approval.call_id)
    risk = "unknown"
    for _, tools in agent_side().tools(db, approval.org_id, [approval.agent_id]):
        for tool in tools:
            if tool.get("name") == approval.tool:
                risk = str(tool.get("risk", "low"))
    requested_for = "nobody in particular (the agent's own run)"
    if approval.requested_for is not None:
        person = identity.person(db, approval.org_id, approval.requested_for)
        if person is not None:
            requested_for = person
    return messages.Notice(
        approval_id=approval.id,
        agent=facts.agent_name if facts is not None else approval.agent_id,
        tool=approval.tool,
        risk=risk,
        arguments=messages.arguments_summary(facts.arguments if facts is not None else None),
        requested_for=requested_for,
        expires_at=approval.expires_at,
        link=messages.console_link(channels.public_url, approval.id),
    )


def _prepare(db: Session, channels: Channels, notice: ApprovalNotice) -> Callable[[], None] | None:
    """What sending the notice takes, read now (the send happens outside the
    transaction), or None when its approval is no longer pending."""
    approval = db.get(Approval, notice.approval_id)
    if approval is None or effective_status(approval, utcnow()) != "pending":
        return None
    to = identity.reach(db, approval.org_id, notice.recipient)
    if to is None:
        return None
    described = _notice(db, channels, approval)
    if notice.channel == EMAIL:
        subject, text, html = messages.email(described)
        message = mail.Mail(to=to.email, subject=subject, body=text, html=html)
        return lambda: _send_email(channels, message)
    token = slack_settings.bot_token(db, channels.vault, approval.org_id)
    if token is None or to.slack_user_id is None:
        return None
    body = json.dumps(messages.slack_message(described, to.slack_user_id)).encode()
    return lambda: _post_slack(channels, token, body)


def _send_email(channels: Channels, message: mail.Mail) -> None:
    try:
        mail.send(channels.smtp, message)
    except mail.MailRefused as exc:
        raise NoticeError(f"SMTP: {exc}") from None
    except (OSError, smtplib.SMTPException) as exc:
        raise NoticeError(f"SMTP: {type(exc).__name__}") from None


def _post_slack(channels: Channels, token: str, body: bytes) -> None:
    """`chat.postMessage` with the bot token; Slack answers 200 with `ok` false on a
    refusal, whose `error` code (e.g. `channel_not_found`) is kept."""
    url = f"{channels.slack_api_url.rstrip('/')}/chat.postMessage"
    headers = {
        "content-type": "application/json; charset=utf-8",
        "authorization": f"Bearer {token}",
    }
    try:
        with httpx.Client(
            transport=GuardedTransport(
                channels.allow, proxy=channels.proxy, plaintext=channels.plaintext
            ),
            timeout=10,
            follow_redirects=False,
        ) as client:
            response = client.post(url, content=body, headers=headers)
    except (OutboundRefused, httpx.HTTPError) as exc:
        raise NoticeError(f"Slack: {type(exc).__name__}") from None
    if response.status_code != 200:
        raise NoticeError(f"Slack: HTTP {response.status_code}")
    try:
        answer: Any = response.json()
    except ValueError:
        raise NoticeError("Slack: the answer is not JSON") from None
    if not isinstance(answer, dict) or answer.get("ok") is not True:
        code = answer.get("error") if isinstance(answer, dict) else None
        shown = code if isinstance(code, str) and _SLACK_ERROR.match(code) else "refused"
        raise NoticeError(f"Slack: {shown}")


# --- retention -------------------------------------------------------------------------


def purge_finished(sessions: Sessions, retention_days: int, batch: int = 1000) -> int:
    """Remove the notices older than `retention_days` that will never be sent again —
    sent (or dropped), or given up after `MAX_ATTEMPTS` — of approvals no longer open
    (decided, or past their expiry): a pending approval keeps its notices, which say
    who was already told. In batches of `batch` rows, one transaction each. Returns how
    many rows were removed."""
    now = utcnow()
    cutoff = now - timedelta(days=retention_days)
    closed = select(Approval.id).where(
        (Approval.status != "pending") | (Approval.expires_at <= now)
    )
    removed = 0
    while True:
        with sessions() as db:
            ids = list(
                db.execute(
                    select(ApprovalNotice.id)
                    .where(
                        ApprovalNotice.created_at < cutoff,
                        (ApprovalNotice.sent_at.is_not(None))
                        | (ApprovalNotice.attempts >= MAX_ATTEMPTS),
                        ApprovalNotice.approval_id.in_(closed),
                    )
                    .order_by(ApprovalNotice.id)
                    .limit(batch)
                ).scalars()
            )
            if ids:
                db.execute(
                    delete(ApprovalNotice)
                    .where(ApprovalNotice.id.in_(ids))
                    .execution_options(synchronize_session=False)
                )
                db.commit()
        removed += len(ids)
        if len(ids) < batch:
            break
    if removed:
        log.info("approval notices purged", count=removed, retention_days=retention_days)
    return removed

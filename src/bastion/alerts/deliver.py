"""Notification: each new alert sent to its rule's channels by outbound webhook
(Standard Webhooks signature), Slack incoming webhook and email (SMTP), after the
evaluating transaction committed. Each alert is claimed by one worker at a time (a
lease on its retry time) and retried with backoff until every channel accepted.

Every send connects to an address the SSRF guard vetted when the connection was opened
(`netguard.GuardedTransport`: no second DNS lookup between the check and the
connection). Webhook and Slack URLs are https:// and email goes over SMTP with verified
TLS (STARTTLS or implicit TLS): plain transport only to destinations in
`BASTION_OUTBOUND_PLAINTEXT_ALLOW`, checked again for every send, and never an SMTP
login without TLS."""

from __future__ import annotations

import json
import smtplib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bastion.alerts.models import Alert, AlertRule
from bastion.alerts.rules import open_secrets
from bastion.audit.siem_transport import backoff_delay
from bastion.core import mail
from bastion.core.clock import rfc3339, utcnow
from bastion.core.keyring import Keyring
from bastion.core.mail import Mail, SmtpConfig
from bastion.core.netguard import GuardedTransport, OutboundRefused
from bastion.webhooks import sign_standard

Sessions = Callable[[], Session]
MAX_NOTIFY_ATTEMPTS = 8
NOTIFY_LEASE_SECONDS = 120  # one send's time to finish before another worker retries it


@dataclass(frozen=True)
class Notifier:
    """Where notifications go out: SMTP for email, the SSRF allowlist, the plain-transport
    allowance, root keys."""

    keys: Keyring
    allow: Sequence[str]
    proxy: str | None = field(default=None, repr=False)  # may carry its password
    plaintext: Sequence[str] = ()
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_from: str = "bastion@localhost"
    smtp_starttls: bool = True
    smtp_tls: bool = False  # implicit TLS (SMTPS); takes precedence over STARTTLS
    smtp_ca_file: str | None = None
    smtp_username: str | None = None
    smtp_password: str | None = field(default=None, repr=False)


def alert_json(alert: Alert) -> dict[str, Any]:
    return {
        "id": alert.id,
        "rule_id": alert.rule_id,
        "kind": alert.kind,
        "key": alert.key,
        "status": alert.status,
        "summary": alert.summary,
        "count": alert.count,
        "first_at": rfc3339(alert.first_at),
        "last_at": rfc3339(alert.last_at),
        "first_event_id": alert.first_event_id,
        "last_event_id": alert.last_event_id,
        "details": alert.details,
    }


class NotifyError(Exception):
    pass


def _post(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    allow: Sequence[str],
    proxy: str | None = None,
    plaintext: Sequence[str] = (),
) -> None:
    """POST to a webhook or Slack channel. The transport resolves the host once per
    connection and connects only to an address `allow` permits, and over http:// only to
    a destination in `plaintext` (`OutboundRefused` otherwise), so the destination cannot
    re-resolve after a check."""
    parsed = httpx.URL(url)
    try:
        with httpx.Client(
            transport=GuardedTransport(allow, proxy=proxy, plaintext=plaintext),
            timeout=10,
            follow_redirects=False,
        ) as client:
            response = client.post(url, content=body, headers=dict(headers))
    except (OutboundRefused, httpx.HTTPError) as exc:
        raise NotifyError(f"{parsed.host}: {type(exc).__name__}") from None
    if not 200 <= response.status_code < 300:
        raise NotifyError(f"{parsed.host}: HTTP {response.status_code}")


def _send(alert: Alert, rule: AlertRule, notifier: Notifier) -> None:
    secrets: dict[str, str] = {}
    if rule.secrets_ciphertext is not None:
        secrets = open_secrets(
            notifier.keys, rule.org_id, rule.id, rule.key_version, rule.secrets_ciphertext
        )
    payload = alert_json(alert)
    for i, channel in enumerate(rule.channels):
        if channel["type"] == "webhook":
            body = json.dumps(
                {"type": "alert.opened", "timestamp": rfc3339(utcnow()), "data": payload}
            ).encode()
            stamp = int(time.time())
            headers = {
                "content-type": "application/json",
                "webhook-id": alert.id,
                "webhook-timestamp": str(stamp),
                "webhook-signature": sign_standard(secrets[str(i)], alert.id, stamp, body),
            }
            _post(channel["url"], body, headers, notifier.allow, notifier.proxy, notifier.plaintext)
        elif channel["type"] == "slack":
            text = f":rotating_light: *Bastion alert* ({alert.kind}): {alert.summary}"
            body = json.dumps({"text": text}).encode()
            _post(
                channel["url"],
                body,
                {"content-type": "application/json"},
                notifier.allow,
                notifier.proxy,
                notifier.plaintext,
            )
        elif channel["type"] == "email":
            _email(alert, channel["to"], notifier)


def _email(alert: Alert, to: Sequence[str], notifier: Notifier) -> None:
    """One alert by email, through the one SMTP client (`bastion.core.mail`): TLS
    verified by default, plain SMTP only where allowed and never with a login."""
    config = SmtpConfig(
        host=notifier.smtp_host,
        port=notifier.smtp_port,
        sender=notifier.smtp_from,
        starttls=notifier.smtp_starttls,
        tls=notifier.smtp_tls,
        ca_file=notifier.smtp_ca_file,
        username=notifier.smtp_username,
        password=notifier.smtp_password,
        plaintext_allow=tuple(notifier.plaintext),
    )
    message = Mail(
        to=", ".join(to),
        subject=f"[Bastion alert] {alert.summary}"[:200],
        body=json.dumps(alert_json(alert), indent=2),
    )
    try:
        mail.send(config, message)
    except mail.MailRefused as exc:
        raise NotifyError(f"SMTP: {exc}") from None
    except (OSError, smtplib.SMTPException) as exc:
        # Raises SMTPNotSupportedError when the server offers no STARTTLS: never plain.
        raise NotifyError(f"SMTP: {type(exc).__name__}") from None


def _claim(sessions: Sessions, alert: Alert) -> bool:
    """Take `alert` for one send: a compare-and-set on what was read moves its retry time
    a lease ahead, so another worker or replica reading it meanwhile skips it; a worker
    that dies mid-send leaves it to be retried when the lease ends (at least once)."""
    with sessions() as db:
        due = (
            Alert.next_notify_at.is_(None)
            if alert.next_notify_at is None
            else Alert.next_notify_at == alert.next_notify_at
        )
        claimed = db.execute(
            update(Alert)
            .where(
                Alert.id == alert.id,
                Alert.notified_at.is_(None),
                Alert.notify_attempts == alert.notify_attempts,
                due,
            )
            .values(next_notify_at=utcnow() + timedelta(seconds=NOTIFY_LEASE_SECONDS))
            .execution_options(synchronize_session=False)
        )
        db.commit()
    return bool(claimed.rowcount == 1)  # type: ignore[attr-defined]


def notify_pending(sessions: Sessions, notifier: Notifier, org_id: str | None = None) -> int:
    """Send every alert not yet notified whose retry time has come (of `org_id` alone
    when given); returns how many were delivered to all their channels. Each alert is
    claimed before it is sent, so concurrent workers do not send it twice."""
    now = utcnow()
    scope = () if org_id is None else (Alert.org_id == org_id,)
    with sessions() as db:
        pending = list(
            db.execute(
                select(Alert, AlertRule)
                .join(AlertRule, AlertRule.id == Alert.rule_id)
                .where(
                    *scope,
                    Alert.notified_at.is_(None),
                    Alert.notify_attempts < MAX_NOTIFY_ATTEMPTS,
                    (Alert.next_notify_at.is_(None)) | (Alert.next_notify_at <= now),
                )
                .order_by(Alert.id)
                .limit(100)
            ).all()
        )
        db.expunge_all()
    sent = 0
    for alert, rule in pending:
        if not _claim(sessions, alert):
            continue
        error: str | None = None
        try:
            _send(alert, rule, notifier)
        except NotifyError as exc:
            error = str(exc)[:500]
        with sessions() as db:
            row = db.get(Alert, alert.id)
            if row is None:
                continue
            row.notify_attempts += 1
            if error is None:
                row.notified_at, row.notify_error, row.next_notify_at = utcnow(), None, None
                sent += 1
            else:
                row.notify_error = error
                delay = backoff_delay(row.notify_attempts - 1, base=5, cap=900)
                row.next_notify_at = utcnow() + timedelta(seconds=delay)
            db.commit()
    return sent

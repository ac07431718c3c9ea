"""Audit sinks: stream each organisation's events to SIEMs (syslog over TCP/TLS with
RFC 5424 JSON, CEF or OCSF messages; OCSF or JSON over HTTPS; Splunk HEC).

Delivery is at-least-once. A sink's `cursor` is the last sequence number of its org's
chain that the receiver accepted; it advances only after a batch is accepted, in its own
transaction, so a crash or restart resends at most one batch and loses nothing. A lease
(`leased_until`) keeps two workers or replicas from sending the same sink at once.
Failures back off exponentially with jitter; health and lag are read from the row.
Destinations pass the SSRF guard at creation, and every delivery connection goes to an
address the guard vetted when it was opened (no second DNS lookup between the check and
the connection): HTTP sinks through `netguard.GuardedTransport`, syslog to an address from
`netguard.vetted_addresses`. Sinks are encrypted (https://, syslog over TLS) unless the
operator allows plain transport to the destination (`BASTION_OUTBOUND_PLAINTEXT_ALLOW`),
checked at creation and again for every delivery.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from bastion import __version__
from bastion.audit import service as audit
from bastion.audit.models import AuditEvent, AuditHead, AuditSink
from bastion.audit.siem_formats import SiemEvent, cef, event_json, ocsf, splunk_hec, syslog_5424
from bastion.audit.siem_transport import DeliveryError, HttpTransport, SyslogTransport
from bastion.audit.siem_transport import backoff_delay as _backoff
from bastion.audit.stream import head_seq
from bastion.core import metrics
from bastion.core.clock import as_utc, utcnow
from bastion.core.db import get_in_org
from bastion.core.errors import InvalidInput
from bastion.core.events import EventType
from bastion.core.ids import new_id
from bastion.core.keyring import Keyring, seal, unseal
from bastion.core.netguard import OutboundRefused, check_plaintext, vetted_addresses
from bastion.core.permissions import Permission
from bastion.core.principal import Principal

BATCH = 500
LEASE_SECONDS = 60
FORMATS = {
    "syslog": ("json", "cef", "ocsf"),
    "https": ("json", "ocsf"),
    "splunk_hec": ("json", "ocsf"),
}
_HOSTNAME = socket.gethostname() or "bastion"
Sessions = Callable[[], Session]


@dataclass(frozen=True)
class Stores:
    """Read sessions, and write sessions (on SQLite their transactions BEGIN IMMEDIATE)."""

    read: Sessions
    write: Sessions


# --- the destination's credential ---------------------------------------------------


_PURPOSE = "audit-sink-secret:v1"


def _aad(org_id: str, sink_id: str) -> bytes:
    return f"audit-sink|{org_id}|{sink_id}".encode()


def _decrypt_secret(sink: AuditSink, keys: Keyring) -> str | None:
    if sink.secret_ciphertext is None:
        return None
    blob = sink.secret_ciphertext
    return unseal(keys, _PURPOSE, sink.key_version, blob, _aad(sink.org_id, sink.id)).decode()


# --- management ---------------------------------------------------------------------


@dataclass(frozen=True)
class SinkSpec:
    name: str
    type: str
    format: str
    host: str | None = None
    port: int | None = None
    tls: bool = False
    ca_pem: str | None = None
    url: str | None = None
    token: str | None = None
    index: str | None = None
    enabled: bool = True


def _validate(spec: SinkSpec, allow: list[str], plaintext: Sequence[str]) -> dict[str, Any]:
    if spec.format not in FORMATS.get(spec.type, ()):
        raise InvalidInput.field(
            "format", f"{spec.type} sinks take one of {', '.join(FORMATS[spec.type])}"
        )
    if spec.type == "syslog":
        if not spec.host or not spec.port:
            raise InvalidInput.field("host", "syslog sinks need host and port")
        if spec.token:
            raise InvalidInput.field("token", "syslog sinks take no token")
        host, port = spec.host, spec.port
        config: dict[str, Any] = {"host": host, "port": port, "tls": spec.tls}
    else:
        if not spec.url:
            raise InvalidInput.field("url", f"{spec.type} sinks need a url")
        parsed = _parse_url(spec.url)
        host, port = parsed
        config = {"url": spec.url}
        if spec.type == "splunk_hec":
            if not spec.token:
                raise InvalidInput.field("token", "Splunk HEC sinks need the HEC token")
            if spec.index:
                config["index"] = spec.index
    if spec.ca_pem:
        config["ca_pem"] = spec.ca_pem
    _check_destination(spec, host, port, allow, plaintext)
    return config


def _check_destination(
    spec: SinkSpec, host: str, port: int, allow: list[str], plaintext: Sequence[str]
) -> None:
    """Not internal unless allowlisted (SSRF); encrypted (https://, syslog over TLS)
    unless the operator allows plain transport there."""
    try:
        addresses = vetted_addresses(host, port, allow)
    except OutboundRefused as exc:
        raise InvalidInput.field("url" if spec.url else "host", exc.reason) from None
    syslog = spec.type == "syslog"
    if spec.tls if syslog else (spec.url or "").lower().startswith("https://"):
        return
    try:
        check_plaintext(host, port, plaintext, addresses)
    except OutboundRefused as exc:
        raise InvalidInput.field("tls" if syslog else "url", exc.reason) from None


def _parse_url(url: str) -> tuple[str, int]:
    import httpx

    try:
        parsed = httpx.URL(url)
    except Exception:
        raise InvalidInput.field("url", "not a valid URL") from None
    if parsed.scheme not in ("https", "http") or not parsed.host:
        raise InvalidInput.field("url", "must be an absolute https:// URL")
    if parsed.userinfo:
        raise InvalidInput.field("url", "put credentials in token, not in the URL")
    return parsed.host, parsed.port or (443 if parsed.scheme == "https" else 80)


def create_sink(
    db: Session,
    principal: Principal,
    org_id: str,
    spec: SinkSpec,
    keys: Keyring,
    allow: list[str],
    plaintext: Sequence[str] = (),
) -> AuditSink:
    principal.require_org(org_id)
    principal.require(Permission.ORG_MANAGE)
    config = _validate(spec, allow, plaintext)
    head = db.get(AuditHead, org_id)
    sink = AuditSink(
        id=new_id("snk"),
        org_id=org_id,
        name=spec.name,
        type=spec.type,
        format=spec.format,
        config=config,
        enabled=spec.enabled,
        # A new sink starts with what happens from now on; history is in the export.
        cursor=head.seq if head else 0,
        delivered=0,
        failures=0,
        created_at=utcnow(),
    )
    if spec.token:
        sink.key_version, sink.secret_ciphertext = seal(
            keys, _PURPOSE, spec.token.encode(), _aad(org_id, sink.id)
        )
    db.add(sink)
    audit.record(
        db,
        type=EventType.AUDIT_SINK_CREATED,
        actor=principal.actor,
        org_id=org_id,
        resource=("audit_sink", sink.id),
        metadata={"type": spec.type, "format": spec.format, "name": spec.name},
    )
    return sink


def _get(db: Session, org_id: str, sink_id: str) -> AuditSink:
    return get_in_org(db, AuditSink, sink_id, org_id, prefix="snk", noun="audit sink")


def get_sink(db: Session, principal: Principal, org_id: str, sink_id: str) -> tuple[AuditSink, int]:
    """The sink and its org's head sequence (for lag)."""
    principal.require_org(org_id)
    principal.require(Permission.AUDIT_READ)
    return _get(db, org_id, sink_id), head_seq(db, org_id)


def list_sinks(db: Session, principal: Principal, org_id: str) -> tuple[list[AuditSink], int]:
    principal.require_org(org_id)
    principal.require(Permission.AUDIT_READ)
    sinks = db.execute(
        select(AuditSink).where(AuditSink.org_id == org_id).order_by(AuditSink.id)
    ).scalars()
    return list(sinks), head_seq(db, org_id)


def delete_sink(db: Session, principal: Principal, org_id: str, sink_id: str) -> None:
    principal.require_org(org_id)
    principal.require(Permission.ORG_MANAGE)
    sink = _get(db, org_id, sink_id)
    db.delete(sink)
    audit.record(
        db,
        type=EventType.AUDIT_SINK_DELETED,
        actor=principal.actor,
        org_id=org_id,
        resource=("audit_sink", sink_id),
        metadata={"type": sink.type, "name": sink.name},
    )


def health(sink: AuditSink, head_seq: int) -> dict[str, Any]:
    """Status and lag as the API shows them."""
    lag = max(0, head_seq - sink.cursor)
    if not sink.enabled:
        status = "disabled"
    elif sink.failures:
        status = "failing"
    elif lag == 0:
        status = "healthy"
    else:
        status = "delivering"
    return {"status": status, "lag": lag}


@dataclass(frozen=True)
class SinkState:
    """How one sink fares, as the domains watching sinks see it (the `sink_failing`
    alert rule)."""

    id: str
    name: str
    type: str
    enabled: bool
    failures: int
    healthy_since: datetime  # its last success, or its creation if it never delivered
    last_error: str | None


def states(db: Session, org_id: str) -> list[SinkState]:
    """Every sink of `org_id` and how it fares. No permission check: the caller is a
    background watcher acting for the instance, not a principal."""
    return [
        SinkState(
            id=sink.id,
            name=sink.name,
            type=sink.type,
            enabled=sink.enabled,
            failures=sink.failures,
            healthy_since=sink.last_success_at or sink.created_at,
            last_error=sink.last_error,
        )
        for sink in db.execute(select(AuditSink).where(AuditSink.org_id == org_id)).scalars()
    ]


# --- delivery -----------------------------------------------------------------------


def _encode(sink: AuditSink, events: list[SiemEvent]) -> tuple[str, list[Any]]:
    if sink.type == "syslog":
        if sink.format == "cef":
            return "syslog", [
                syslog_5424(e, hostname=_HOSTNAME, message=cef(e, version=__version__))
                for e in events
            ]
        if sink.format == "ocsf":
            return "syslog", [
                syslog_5424(
                    e,
                    hostname=_HOSTNAME,
                    message=b"\xef\xbb\xbf" + json.dumps(ocsf(e), separators=(",", ":")).encode(),
                )
                for e in events
            ]
        return "syslog", [syslog_5424(e, hostname=_HOSTNAME) for e in events]
    if sink.type == "splunk_hec":
        index = sink.config.get("index")
        payloads = [splunk_hec(e, index=index) for e in events]
        if sink.format == "ocsf":
            for payload, e in zip(payloads, events, strict=True):
                payload["event"] = ocsf(e)
        return "splunk_hec", payloads
    return "ocsf", [ocsf(e) if sink.format == "ocsf" else event_json(e) for e in events]


@contextmanager
def _transport(
    sink: AuditSink,
    secret: str | None,
    allow: list[str],
    proxy: str | None,
    plaintext: Sequence[str],
) -> Iterator[Any]:
    """The sink's transport, vetting each connection's address against `allow` and plain
    transport against `plaintext`; HTTP sinks through `proxy` when one is set (syslog
    never is)."""
    config = sink.config
    ca_pem = config.get("ca_pem")
    if sink.type == "syslog":
        syslog = SyslogTransport(
            config["host"],
            int(config["port"]),
            tls=bool(config.get("tls")),
            ca_pem=ca_pem,
            allow=allow,
            plaintext=plaintext,
        )
        try:
            yield syslog
        finally:
            syslog.close()
        return
    headers = {}
    if secret:
        headers["Authorization"] = (
            f"Splunk {secret}" if sink.type == "splunk_hec" else f"Bearer {secret}"
        )
    http = HttpTransport(
        config["url"],
        headers=headers,
        kind="splunk_hec" if sink.type == "splunk_hec" else "ocsf",
        ca_pem=ca_pem,
        allow=allow,
        proxy=proxy,
        plaintext=plaintext,
    )
    try:
        yield http
    finally:
        http.close()


def _claim(db_: Stores, sink_id: str, now: datetime) -> bool:
    with db_.write() as db:
        claimed = db.execute(
            update(AuditSink)
            .where(
                AuditSink.id == sink_id,
                or_(AuditSink.leased_until.is_(None), AuditSink.leased_until < now),
            )
            .values(leased_until=now + timedelta(seconds=LEASE_SECONDS))
        )
        db.commit()
        return bool(getattr(claimed, "rowcount", 0))


def deliver(
    db_: Stores,
    sink_id: str,
    keys: Keyring,
    allow: list[str],
    proxy: str | None = None,
    plaintext: Sequence[str] = (),
) -> int:
    """Send one sink's pending events in batches until caught up or a batch fails.
    Returns how many events were accepted. Safe to call from several workers."""
    now = utcnow()
    if not _claim(db_, sink_id, now):
        return 0
    sent = 0
    try:
        with db_.read() as db:
            sink = db.get(AuditSink, sink_id)
            if sink is None or not sink.enabled:
                return 0
            secret = _decrypt_secret(sink, keys)
            db.expunge(sink)
        if sink.type != "syslog":
            _parse_url(sink.config["url"])  # still a URL we send to (as at creation)
        # No check by name here: that would be a lookup of its own, and the connection
        # could get another answer. The transport vets the address of each connection.
        with _transport(sink, secret, allow, proxy, plaintext) as transport:
            cursor = sink.cursor
            while True:
                with db_.read() as db:
                    rows = (
                        db.execute(
                            select(AuditEvent)
                            .where(AuditEvent.chain == sink.org_id, AuditEvent.seq > cursor)
                            .order_by(AuditEvent.seq)
                            .limit(BATCH)
                        )
                        .scalars()
                        .all()
                    )
                    events = [SiemEvent.from_row(r) for r in rows]
                if not events:
                    break
                _, payloads = _encode(sink, events)
                transport.send(payloads)
                sent_at = utcnow()
                for event in events:
                    metrics.SINK_DELIVERY_LAG.observe(
                        (sent_at - as_utc(event.time)).total_seconds()
                    )
                cursor = events[-1].seq
                sent += len(events)
                _advance(db_, sink_id, cursor, len(events))
                if len(events) < BATCH:
                    break
    except (DeliveryError, OutboundRefused, OSError, ValueError) as exc:
        _failed(db_, sink_id, _describe(exc))
    finally:
        _release(db_, sink_id)
    return sent


def _describe(exc: Exception) -> str:
    text = str(exc) if isinstance(exc, DeliveryError | OutboundRefused) else type(exc).__name__
    return text[:500]


def _advance(db_: Stores, sink_id: str, cursor: int, count: int) -> None:
    with db_.write() as db:
        db.execute(
            update(AuditSink)
            .where(AuditSink.id == sink_id)
            .values(
                cursor=cursor,
                delivered=AuditSink.delivered + count,
                failures=0,
                last_error=None,
                next_attempt_at=None,
                last_success_at=utcnow(),
                leased_until=utcnow() + timedelta(seconds=LEASE_SECONDS),
            )
        )
        db.commit()


def _failed(db_: Stores, sink_id: str, error: str) -> None:
    with db_.write() as db:
        sink = db.get(AuditSink, sink_id)
        if sink is None:
            return
        sink.failures += 1
        sink.last_error = error
        sink.next_attempt_at = utcnow() + timedelta(seconds=_backoff(sink.failures - 1, cap=300))
        db.commit()


def _release(db_: Stores, sink_id: str) -> None:
    with db_.write() as db:
        db.execute(update(AuditSink).where(AuditSink.id == sink_id).values(leased_until=None))
        db.commit()


def due_sinks(db_: Stores) -> list[str]:
    """Enabled sinks not waiting out a backoff and with events beyond their cursor."""
    now = utcnow()
    with db_.read() as db:
        rows = db.execute(
            select(AuditSink.id)
            .join(AuditHead, AuditHead.chain == AuditSink.org_id)
            .where(
                AuditSink.enabled.is_(True),
                AuditHead.seq > AuditSink.cursor,
                or_(AuditSink.next_attempt_at.is_(None), AuditSink.next_attempt_at <= now),
            )
            .order_by(func.coalesce(AuditSink.last_success_at, AuditSink.created_at))
        ).scalars()
        return list(rows)


def deliver_due(
    db_: Stores,
    keys: Keyring,
    allow: list[str],
    proxy: str | None = None,
    plaintext: Sequence[str] = (),
) -> int:
    """One round over every due sink; returns events accepted."""
    return sum(deliver(db_, sink_id, keys, allow, proxy, plaintext) for sink_id in due_sinks(db_))

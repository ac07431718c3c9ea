"""Email that Bastion sends for a person (password-reset links), by SMTP, off the request.

`Mailer.submit` only queues: one daemon thread per process sends, so a request never
waits for the mail server (nor does its answer time tell whether anything was sent). A
failed send is logged with the recipient's domain and the error's type, never the
message: it carries a one-time link.

Transport security is the one of email alerts (`BASTION_SMTP_*`): STARTTLS (default)
or implicit TLS with the server's certificate verified, TLS 1.2 at least; plain SMTP
only to a server in `BASTION_OUTBOUND_PLAINTEXT_ALLOW`, and never with a login.
"""

from __future__ import annotations

import queue
import smtplib
import ssl
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage

import structlog

from bastion.core.netguard import plaintext_permitted

log = structlog.get_logger("bastion.mail")


@dataclass(frozen=True)
class SmtpConfig:
    host: str | None
    port: int = 25
    sender: str = "bastion@localhost"
    starttls: bool = True
    tls: bool = False  # implicit TLS (SMTPS); takes precedence over STARTTLS
    ca_file: str | None = None
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    plaintext_allow: Sequence[str] = ()
    timeout: float = 10.0


@dataclass(frozen=True)
class Mail:
    to: str = field(repr=False)  # one address, or several separated by ", "
    subject: str
    body: str = field(repr=False)
    html: str | None = field(default=None, repr=False)  # an alternative HTML part


class MailRefused(Exception):
    """The configuration does not allow sending (no server, plain SMTP refused)."""


def send(config: SmtpConfig, mail: Mail) -> None:
    """Send one message now (blocking; `Mailer` calls it on its own thread)."""
    if not config.host:
        raise MailRefused("no SMTP server configured (BASTION_SMTP_HOST)")
    encrypted = config.tls or config.starttls
    if not encrypted:
        if config.username or config.password:
            raise MailRefused("refused to log in without TLS (BASTION_SMTP_STARTTLS)")
        if not plaintext_permitted(config.host, config.port, config.plaintext_allow):
            raise MailRefused(
                "refused plain SMTP: enable BASTION_SMTP_STARTTLS or BASTION_SMTP_TLS, "
                "or list the server in BASTION_OUTBOUND_PLAINTEXT_ALLOW"
            )
    message = EmailMessage()
    message["From"] = config.sender
    message["To"] = mail.to
    message["Subject"] = mail.subject
    message.set_content(mail.body)
    if mail.html is not None:
        message.add_alternative(mail.html, subtype="html")
    smtp = (
        smtplib.SMTP_SSL(config.host, config.port, timeout=config.timeout, context=_tls(config))
        if config.tls
        else smtplib.SMTP(config.host, config.port, timeout=config.timeout)
    )
    with smtp:
        if config.starttls and not config.tls:
            smtp.starttls(context=_tls(config))  # no STARTTLS offered: raises, never plain
        if config.username and config.password:
            smtp.login(config.username, config.password)
        smtp.send_message(message)


def _tls(config: SmtpConfig) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=config.ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class Mailer:
    """A queue of messages and the one thread that sends them, started on first use."""

    def __init__(self, config: SmtpConfig, max_queued: int = 1000) -> None:
        self.config = config
        self._queue: queue.Queue[Mail | None] = queue.Queue(maxsize=max_queued)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.sent = 0
        self.failed = 0

    def __repr__(self) -> str:
        return f"Mailer(host={self.config.host}, queued={self._queue.qsize()})"

    def submit(self, mail: Mail) -> None:
        """Queue `mail`; never blocks (a full queue drops it, logged)."""
        self._start()
        try:
            self._queue.put_nowait(mail)
        except queue.Full:
            self.failed += 1
            log.warning("mail dropped: queue full", subject=mail.subject)

    def close(self, timeout: float = 5.0) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout)

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="bastion-mailer", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while True:
            mail = self._queue.get()
            if mail is None:
                return
            try:
                send(self.config, mail)
                self.sent += 1
            except Exception as exc:  # any failure: logged, and the sender goes on
                self.failed += 1
                log.warning(
                    "mail not sent",
                    subject=mail.subject,
                    domain=mail.to.rsplit("@", 1)[-1],
                    error=type(exc).__name__,
                    reason=str(exc) if isinstance(exc, MailRefused) else None,
                )

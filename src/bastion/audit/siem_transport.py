"""Synchronous transports that deliver a batch of formatted audit events to a SIEM.

* `SyslogTransport` - RFC 5424 messages over TCP or TLS (RFC 5425) with RFC 6587
  octet-counting framing;
* `HttpTransport` - OCSF events as a JSON array, or Splunk HTTP Event Collector payloads
  in HEC batch format, POSTed over HTTP(S).

Each `send` either hands the whole batch over or raises `DeliveryError`, whose `retryable`
flag tells the caller (a delivery worker) whether to back off (see `backoff_delay`) and try
the same batch again or to stop and alert. The formats in `siem_formats` are deterministic,
so a batch resent after a partial failure yields identical records that a SIEM can
de-duplicate: delivery is at least once.

The transports hold one connection each, start no threads, keep no global state and are not
thread-safe: give each worker its own transport.

Given `allow` (the `BASTION_OUTBOUND_ALLOW` entries), a transport applies the SSRF policy
of `bastion.core.netguard` to each connection it opens: the host is resolved once, every
address is vetted, and the connection goes to a vetted address, so a name re-resolving
between a check and the connection (DNS rebinding) gains nothing. TLS still names the host
(SNI and certificate check). Plain transport (syslog over TCP, http://) then goes only to
destinations in `plaintext` (the `BASTION_OUTBOUND_PLAINTEXT_ALLOW` entries). A refused
destination raises `OutboundRefused`. Without `allow` the transport connects by name with
no policy: only for destinations the caller trusts (tests, a fixed receiver).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import socket
import ssl
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Final, Literal, Self

import httpx

from bastion.audit.siem_formats import octet_frame
from bastion.core.netguard import GuardedTransport, check_plaintext, vetted_addresses

__all__ = [
    "DeliveryError",
    "HttpTransport",
    "SyslogTransport",
    "backoff_delay",
]

# Longest piece of a response body quoted in an error message.
_BODY_EXCERPT: Final = 200
# Shortest whitespace-separated part of a header value treated as a secret on its own
# (the token in "Splunk <token>" or "Bearer <token>").
_SECRET_PART_MIN: Final = 8
_REDACTED: Final = "[redacted]"


class DeliveryError(Exception):
    """A batch was not (or not wholly) delivered.

    `retryable` is True when the same batch may succeed later (the SIEM is down, busy,
    timing out or rate limiting) and False when resending cannot help until the
    configuration changes (a rejected token, a malformed request). `status_code` is the
    HTTP status when there was one; `retry_after` the seconds a 429 or 503 asked the client
    to wait, when it said so in delta-seconds. The message never contains a header value,
    token or URL credential.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        status_code: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status_code = status_code
        self.retry_after = retry_after


# --- backoff ------------------------------------------------------------------------


def backoff_delay(
    attempt: int, *, base: float = 1.0, cap: float = 300.0, rng: random.Random | None = None
) -> float:
    """Seconds to wait before retry number `attempt` (0 for the first retry): exponential
    backoff with full jitter, uniform in `[0, min(cap, base * 2**attempt)]`.

    `rng` makes the jitter reproducible in tests; by default it comes from the operating
    system's random source, so concurrent workers do not retry in lockstep.
    """
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0, not {attempt}")
    if base < 0 or cap < 0:
        raise ValueError("base and cap must be >= 0")
    try:
        ceiling = min(cap, math.ldexp(base, attempt))  # base * 2**attempt, exactly
    except OverflowError:
        ceiling = cap
    generator = rng if rng is not None else random.SystemRandom()
    return generator.uniform(0.0, ceiling)


# --- syslog over TCP / TLS ----------------------------------------------------------


class SyslogTransport:
    """Sends syslog messages (e.g. from `siem_formats.syslog_5424`) to a TCP or TLS
    receiver, each framed with RFC 6587 octet counting (`LEN SP MESSAGE`).

    With `tls=True` the server certificate is always verified against `ca_file` (or the
    system trust store when it is None), the host name is checked against
    `server_hostname` (default: `host`), and TLS 1.2 is the lowest version offered.

    The connection is opened on the first `send` and reused; before reuse it is checked
    for having been closed by the receiver, and reopened if so. Syslog over TCP has no
    application-level acknowledgement: a successful `send` means the kernel accepted
    the bytes, not that the SIEM stored them.

    With `allow`, each connection goes to an address `netguard.vetted_addresses` returned
    for `host` (tried in resolver order), never to a second lookup of the name; the TLS
    host name check still uses `server_hostname`; without `tls`, a host not in `plaintext`
    is refused (`OutboundRefused`) before anything is sent.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        tls: bool = False,
        ca_file: str | None = None,
        server_hostname: str | None = None,
        timeout: float = 5.0,
        ca_pem: str | None = None,
        allow: Sequence[str] | None = None,
        plaintext: Sequence[str] = (),
    ) -> None:
        if not host:
            raise ValueError("host must not be empty")
        if not 0 < port < 65536:
            raise ValueError(f"port must be 1..65535, not {port}")
        if timeout <= 0:
            raise ValueError("timeout must be > 0")
        if not tls and (ca_file or server_hostname or ca_pem):
            raise ValueError("ca_file, ca_pem and server_hostname apply only with tls=True")
        self._host = host
        self._port = port
        self._tls = tls
        self._server_hostname = server_hostname or host
        self._timeout = timeout
        self._allow = tuple(allow) if allow is not None else None
        self._plaintext = tuple(plaintext)
        self._context: ssl.SSLContext | None = None
        if tls:
            context = ssl.create_default_context(cafile=ca_file, cadata=ca_pem)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.check_hostname = True
            context.verify_mode = ssl.CERT_REQUIRED
            self._context = context
        self._sock: socket.socket | None = None

    def __repr__(self) -> str:
        return f"SyslogTransport(host={self._host!r}, port={self._port}, tls={self._tls})"

    def send(self, messages: Sequence[bytes]) -> None:
        """Write every message, in order, octet-framed, over one connection.

        An empty batch is a no-op. On any socket or TLS error the connection is closed and
        `DeliveryError(retryable=True)` is raised; part of the batch may have been written,
        so the caller resends the whole batch. A destination the SSRF policy refuses (with
        `allow`) raises `OutboundRefused` before anything is sent.
        """
        if not messages:
            return
        for message in messages:
            if not isinstance(message, bytes):
                raise TypeError(f"syslog messages must be bytes, not {type(message).__name__}")
        payload = b"".join(octet_frame(message) for message in messages)
        try:
            sock = self._connection()
            sock.sendall(payload)
        except OSError as exc:  # ssl.SSLError and socket.timeout are OSErrors
            self.close()
            raise DeliveryError(
                f"syslog delivery to {self._host}:{self._port} failed: {type(exc).__name__}: {exc}",
                retryable=True,
            ) from exc

    def close(self) -> None:
        """Close the connection, if open. A later `send` opens a new one."""
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _connection(self) -> socket.socket:
        """The open connection, reopened when the receiver has closed it meanwhile."""
        if self._sock is not None and _peer_closed(self._sock, self._timeout):
            self.close()
        if self._sock is None:
            self._sock = self._connect()
        return self._sock

    def _connect(self) -> socket.socket:
        raw = self._open_tcp()
        if self._context is None:
            return raw
        try:
            return self._context.wrap_socket(raw, server_hostname=self._server_hostname)
        except BaseException:
            raw.close()
            raise

    def _open_tcp(self) -> socket.socket:
        """A TCP connection to the host: by name without `allow`; else to the first vetted
        address that answers (one resolution, which is also the one vetted)."""
        if self._allow is None:
            return socket.create_connection((self._host, self._port), timeout=self._timeout)
        addresses = vetted_addresses(self._host, self._port, self._allow)
        if self._context is None:  # plain TCP: only where the operator allows it
            check_plaintext(self._host, self._port, self._plaintext, addresses)
        if addresses is None:  # the host name itself is allowlisted
            return socket.create_connection((self._host, self._port), timeout=self._timeout)
        for address in addresses[:-1]:  # the next address when one does not answer
            try:
                return socket.create_connection((address, self._port), timeout=self._timeout)
            except OSError:
                continue
        return socket.create_connection((addresses[-1], self._port), timeout=self._timeout)


def _peer_closed(sock: socket.socket, timeout: float) -> bool:
    """Whether an idle syslog connection is no longer usable.

    A syslog receiver never writes, so a non-blocking read normally finds nothing (over
    TLS 1.3 OpenSSL may consume session tickets and still find nothing). An end of stream,
    a reset or unexpected data means the connection is not worth writing to: writing to a
    socket the peer has closed often "succeeds" once and loses the data, which is why the
    connection is checked before each batch. (Non-blocking `recv` rather than `select`,
    which fails on descriptors above FD_SETSIZE.)
    """
    try:
        sock.settimeout(0.0)
        try:
            sock.recv(1)
        finally:
            sock.settimeout(timeout)
    except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
        return False  # nothing to read: the connection is idle and open
    except OSError:
        return True  # reset, or the socket is unusable
    # b"": the receiver closed the stream. Data: the receiver is not a syslog sink we
    # understand; start over on a fresh connection rather than guess.
    return True


# --- HTTP(S): OCSF and Splunk HEC ---------------------------------------------------


class HttpTransport:
    """POSTs a batch of JSON payloads to a SIEM's HTTP(S) collector.

    `kind="ocsf"` sends the payloads (from `siem_formats.ocsf`) as one JSON array;
    `kind="splunk_hec"` sends them (from `siem_formats.splunk_hec`) in HEC batch format,
    one JSON object per line, to e.g. `https://splunk:8088/services/collector/event` with
    `headers={"Authorization": "Splunk <token>"}`.

    `verify` is True for the default trust store, a CA bundle file (or directory) path,
    or False to skip certificate checks (for tests only). With `allow`, requests go
    through `netguard.GuardedTransport` (each connection to a vetted address, directly:
    environment proxies do not apply) and an http:// URL is refused unless its host is in
    `plaintext`. Redirects are not followed: a
    collector that redirects is misconfigured, and following could carry the token to
    another host. The headers, which carry tokens, never appear in `repr()` or in a
    `DeliveryError` message.
    """

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        kind: Literal["ocsf", "splunk_hec"],
        timeout: float = 10.0,
        verify: str | bool = True,
        ca_pem: str | None = None,
        allow: Sequence[str] | None = None,
        proxy: str | None = None,
        plaintext: Sequence[str] = (),
    ) -> None:
        if kind not in ("ocsf", "splunk_hec"):
            raise ValueError(f"kind must be 'ocsf' or 'splunk_hec', not {kind!r}")
        if timeout <= 0:
            raise ValueError("timeout must be > 0")
        parsed = httpx.URL(url)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError("url must be an absolute http:// or https:// URL")
        self._url = parsed
        self._kind: Literal["ocsf", "splunk_hec"] = kind
        self._safe_url = _safe_url(parsed)
        self._secrets = _secrets(headers or {}, parsed)
        ssl_verify = _ssl_verify(verify, ca_pem)
        self._client = httpx.Client(
            headers=dict(headers or {}),
            timeout=timeout,
            verify=ssl_verify,
            follow_redirects=False,
            transport=(
                GuardedTransport(allow, verify=ssl_verify, proxy=proxy, plaintext=plaintext)
                if allow is not None
                else None
            ),
        )

    def __repr__(self) -> str:
        return f"HttpTransport(url={self._safe_url!r}, kind={self._kind!r}, headers=<hidden>)"

    def send(self, payloads: Sequence[dict[str, Any]]) -> None:
        """POST the batch in one request. An empty batch is a no-op.

        A 2xx answer is success. 408, 429, 5xx and transport failures (refused, reset,
        timed out, TLS) raise `DeliveryError(retryable=True)`; any other answer raises
        `DeliveryError(retryable=False)`. A destination the SSRF policy refuses (with
        `allow`) raises `OutboundRefused` before anything is sent.
        """
        if not payloads:
            return
        if self._kind == "ocsf":
            body = _compact_json(list(payloads))
        else:
            body = b"\n".join(_compact_json(payload) for payload in payloads)
        try:
            response = self._client.post(
                self._url, content=body, headers={"Content-Type": "application/json"}
            )
        except httpx.TransportError as exc:
            raise DeliveryError(
                self._redact(
                    f"{self._kind} delivery to {self._safe_url} failed: {type(exc).__name__}: {exc}"
                ),
                retryable=True,
            ) from exc
        status = response.status_code
        if 200 <= status < 300:
            return
        retryable = status in (408, 429) or status >= 500
        excerpt = response.text[:_BODY_EXCERPT].strip()
        message = f"{self._kind} delivery to {self._safe_url} failed: HTTP {status}"
        if excerpt:
            message += f": {excerpt}"
        raise DeliveryError(
            self._redact(message),
            retryable=retryable,
            status_code=status,
            retry_after=_retry_after(response) if retryable else None,
        )

    def close(self) -> None:
        """Close the pooled connections."""
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, _REDACTED)
        return text


def _compact_json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _ssl_verify(verify: str | bool, ca_pem: str | None = None) -> ssl.SSLContext | bool:
    """httpx's `verify`: a CA path or PEM text becomes an SSL context (httpx deprecates
    paths)."""
    if ca_pem is not None and verify is not False:
        context = ssl.create_default_context(cadata=ca_pem)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context
    if isinstance(verify, bool):
        return verify
    if os.path.isdir(verify):
        context = ssl.create_default_context(capath=verify)
    else:
        context = ssl.create_default_context(cafile=verify)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _safe_url(url: httpx.URL) -> str:
    """The URL without user info, query or fragment, which may carry credentials."""
    port = f":{url.port}" if url.port is not None else ""
    host = f"[{url.host}]" if ":" in url.host else url.host
    return f"{url.scheme}://{host}{port}{url.path}"


def _secrets(headers: Mapping[str, str], url: httpx.URL) -> tuple[str, ...]:
    """Strings to scrub from error messages: every header value, the token part of
    "Scheme token" values, and any URL password or query. Longest first, so a whole value
    is replaced before its parts."""
    found: set[str] = set()
    candidates: Iterable[str] = [*headers.values(), url.password or "", url.query.decode()]
    for candidate in candidates:
        value = candidate.strip()
        if not value:
            continue
        found.add(value)
        found.update(part for part in value.split() if len(part) >= _SECRET_PART_MIN)
    return tuple(sorted(found, key=len, reverse=True))


def _retry_after(response: httpx.Response) -> float | None:
    """The Retry-After header in delta-seconds, if the server sent one that way."""
    value = response.headers.get("Retry-After", "").strip()
    if not value.isdigit():
        return None
    return float(value)

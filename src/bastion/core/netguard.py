"""Outbound destinations: refuse every address that is not globally reachable (loopback,
private, link-local, shared, reserved, metadata …), multicast, and IPv6 addresses that
embed such an IPv4 address (SSRF) unless the operator allowlists them
(`BASTION_OUTBOUND_ALLOW`).

Checking a host name and then letting an HTTP client resolve it again to connect leaves
a DNS-rebinding window: the name can resolve to a public address for the check and to
an internal one for the connection. `GuardedTransport` (an httpx transport) closes it:
it resolves each host once, when it opens the connection, vets every address, and
connects to a vetted address. The URL is unchanged, so the Host header, TLS SNI and the
certificate check still name the host. `check_destination` alone (at creation time,
for a clear validation error) is not a guard for the connection that follows.

Transport security: outbound traffic is encrypted and verified by default (https, TLS
syslog, SMTP with TLS). Plain transport (http://, syslog over TCP, SMTP without TLS) is
refused unless the destination matches `BASTION_OUTBOUND_PLAINTEXT_ALLOW`
(`plaintext_permitted`); `GuardedTransport` checks it again for every request."""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import socket
import ssl
import threading
import time
import typing
from collections.abc import Sequence

import httpcore
import httpx

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class OutboundRefused(Exception):
    """The destination is not allowed. The message names the host, never a secret, for
    the operator's delivery log; `reason` does not, for an answer to whoever submitted
    the URL (errors echo nothing a caller sent)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


UNRESOLVABLE = "the host name does not resolve"
INTERNAL = "resolves to an internal address; allowlist it in BASTION_OUTBOUND_ALLOW to send there"


PLAINTEXT = (
    "is not encrypted (https:// or TLS); plain transport goes only to destinations "
    "listed in BASTION_OUTBOUND_PLAINTEXT_ALLOW"
)


def _plaintext_entry(
    entry: str,
) -> tuple[str | ipaddress.IPv4Network | ipaddress.IPv6Network, int | None]:
    """An allowance entry: a host name, an address or a CIDR network, each optionally
    with `:port` (an IPv6 address with a port in brackets: `[::1]:514`)."""
    text, port = entry.strip(), None
    head, sep, tail = text.rpartition(":")
    if sep and tail.isdigit() and head and (":" not in head or head.startswith("[")):
        text, port = head, int(tail)
    text = text.strip("[]")
    try:
        return ipaddress.ip_network(text, strict=False), port
    except ValueError:
        return text.lower().rstrip("."), port


def plaintext_permitted(
    host: str, port: int, allow_plain: Sequence[str], addresses: Sequence[str] | None = None
) -> bool:
    """Whether plain (unencrypted) transport to `host:port` is allowed: the host name
    matches an entry exactly, or the host is an address (or a name whose every address
    is) inside an entry's network; an entry with a port matches that port only.
    `addresses` are what the name resolved to for the connection at hand (the vetted
    ones, so no second lookup); resolved here when None."""
    entries = [
        (target, p)
        for target, p in (_plaintext_entry(e) for e in allow_plain)
        if p is None or p == port
    ]
    name = host.strip("[]").lower().rstrip(".")
    if any(target == name for target, _ in entries):
        return True
    networks = [target for target, _ in entries if not isinstance(target, str)]
    if not networks:
        return False
    try:
        ips: list[Address] = [ipaddress.ip_address(name)]
    except ValueError:
        try:
            found = _resolve(host, port) if addresses is None else addresses
        except OutboundRefused:
            return False
        ips = [ipaddress.ip_address(a.split("%", 1)[0]) for a in found]
    return bool(ips) and all(any(ip in network for network in networks) for ip in ips)


def check_plaintext(
    host: str, port: int, allow_plain: Sequence[str], addresses: Sequence[str] | None = None
) -> None:
    """Raise `OutboundRefused` (reason `PLAINTEXT`) unless plain transport to `host:port`
    is allowed (`plaintext_permitted`)."""
    if not plaintext_permitted(host, port, allow_plain, addresses):
        raise OutboundRefused(f"{host!r} {PLAINTEXT}", PLAINTEXT)


def _allowed_networks(allow: Sequence[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    networks = []
    for entry in allow:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            continue  # a host name entry
    return networks


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052: an IPv4 address in the low bits


def _embedded(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (mapped, 6to4, Teredo, NAT64): what a
    connection to it may reach."""
    found = [a for a in (ip.ipv4_mapped, ip.sixtofour) if a is not None]
    found += list(ip.teredo or ())
    if ip in _NAT64:
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


def _internal(ip: Address) -> bool:
    """Anything not globally reachable by IANA's special-purpose registries (private,
    loopback, link-local, shared 100.64/10 where cloud metadata services live, reserved,
    documentation, benchmarking …), multicast, and IPv6 addresses that carry one."""
    if isinstance(ip, ipaddress.IPv6Address) and any(_internal(a) for a in _embedded(ip)):
        return True
    return not ip.is_global or ip.is_multicast


def _resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, as text (an IPv6 scope kept), in resolver order.
    The one place names are resolved for outbound connections."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise OutboundRefused(f"cannot resolve {host!r}", UNRESOLVABLE) from exc
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise OutboundRefused(f"cannot resolve {host!r}", UNRESOLVABLE)
    return addresses


def vetted_addresses(host: str, port: int, allow: Sequence[str]) -> list[str] | None:
    """Resolve `host` once and return its addresses, or raise `OutboundRefused` when any
    of them is internal and not allowlisted. None when the host name itself is
    allowlisted (exact entry): any address, resolved by whoever connects."""
    if host in allow:
        return None
    networks = _allowed_networks(allow)
    addresses = _resolve(host, port)
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if any(ip in network for network in networks):
            continue
        if _internal(ip):
            raise OutboundRefused(f"{host!r} {INTERNAL}", INTERNAL)
    return addresses


def check_destination(host: str, port: int, allow: Sequence[str]) -> None:
    """Resolve `host` and refuse it when any address is internal and not allowlisted.
    Allowlist entries are host names (exact) or CIDR networks. For validating input;
    to send, connect through `GuardedTransport`, which checks the address it uses."""
    vetted_addresses(host, port, allow)


_deadline = threading.local()
# The plain-transport allowance of the request this thread is sending over http:// (None
# for https://): the connection it opens is checked against it, address by address.
_plain = threading.local()


@contextlib.contextmanager
def deadline(seconds: float) -> typing.Iterator[None]:
    """Bound everything this thread sends and receives through a `GuardedTransport`
    (without a proxy) to `seconds` in all: httpx's timeouts bound each read and write,
    so a receiver trickling a byte at a time could hold a request for ever."""
    _deadline.at = time.monotonic() + seconds
    try:
        yield
    finally:
        _deadline.at = None


def _left(timeout: float | None) -> float | None:
    at: float | None = getattr(_deadline, "at", None)
    if at is None:
        return timeout
    left = at - time.monotonic()
    if left <= 0:
        raise httpcore.ReadTimeout("the request's deadline has passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read and write waits at most until the deadline."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _left(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _left(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, _left(timeout)))

    def get_extra_info(self, info: str) -> typing.Any:
        return self._inner.get_extra_info(info)


class _GuardedBackend(httpcore.SyncBackend):
    """Opens TCP connections only to addresses vetted in the same call."""

    def __init__(self, allow: Sequence[str]) -> None:
        self._allow = tuple(allow)

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        addresses = vetted_addresses(host, port, self._allow)
        plaintext: tuple[str, ...] | None = getattr(_plain, "entries", None)
        if plaintext is not None:  # for http://: the addresses about to be used
            check_plaintext(host, port, plaintext, addresses)
        if addresses is None:  # an allowlisted host name
            addresses = [host]
        for address in addresses[:-1]:  # the next address when one does not answer
            try:
                return _DeadlineStream(
                    super().connect_tcp(
                        address, port, _left(timeout), local_address, socket_options
                    )
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout):
                continue
        return _DeadlineStream(
            super().connect_tcp(addresses[-1], port, _left(timeout), local_address, socket_options)
        )


class GuardedTransport(httpx.HTTPTransport):
    """An httpx transport for outbound requests to user-chosen URLs: each new connection
    goes to an address vetted by the SSRF policy at that moment (`vetted_addresses`), so
    a name that re-resolves between a check and the connection gains nothing. Requests
    refused by the policy raise `OutboundRefused` (not an httpx error).

    Environment proxies (`HTTP(S)_PROXY`) never apply. With `proxy` (the operator's
    `BASTION_OUTBOUND_PROXY`, `http://` or `https://`, credentials allowed in the URL)
    every request goes through that proxy (CONNECT for https) and its destination is
    vetted before it is sent; the proxy then resolves the name itself, so it should
    refuse internal destinations too (its own egress rules).

    Only https:// goes anywhere: an http:// request is refused (`OutboundRefused`, reason
    `PLAINTEXT`) unless its destination is in `plaintext` (the operator's
    `BASTION_OUTBOUND_PLAINTEXT_ALLOW`), checked for every request."""

    def __init__(
        self,
        allow: Sequence[str],
        *,
        verify: ssl.SSLContext | bool = True,
        limits: httpx.Limits | None = None,
        proxy: str | None = None,
        plaintext: Sequence[str] = (),
    ) -> None:
        limits = limits or httpx.Limits()
        self._allow = tuple(allow)
        self._plaintext = tuple(plaintext)
        self._proxied = proxy is not None
        if proxy is not None:
            super().__init__(verify=verify, limits=limits, proxy=proxy)
            return
        super().__init__(verify=verify)
        # httpx builds its pool with the default network backend and offers no option to
        # choose one; the same pool with the guarded backend replaces it.
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_GuardedBackend(self._allow),
        )

    def __repr__(self) -> str:
        return (
            f"GuardedTransport(allow={self._allow!r}, plaintext={self._plaintext!r}, "
            f"proxied={self._proxied})"
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        plain = url.scheme != "https"
        port = url.port or (80 if plain else 443)
        if self._proxied:  # the connection is the proxy's: vet where the request goes
            addresses = vetted_addresses(url.host, port, self._allow)
            if plain:
                check_plaintext(url.host, port, self._plaintext, addresses)
            return super().handle_request(request)
        # Without a proxy the connection is ours: the backend checks the addresses it
        # connects to (one lookup, the vetted one). A pooled connection is reused only
        # for its own scheme, host and port, so an http:// one was checked when opened.
        _plain.entries = self._plaintext if plain else None
        try:
            return super().handle_request(request)
        finally:
            _plain.entries = None


@functools.lru_cache(maxsize=4096)
def network_of(ip: str | None) -> str | None:
    """The network an address belongs to for "new network" checks: IPv4 /24, IPv6 /48;
    None for anything that is not an IP address. Remembered per address (it is asked on
    every authenticated request, and parsing cost more than the rest of a cache hit)."""
    if not ip:
        return None
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))

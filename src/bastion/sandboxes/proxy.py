"""The egress proxy of a sandboxed exec with network `allowlist`: it runs in Bastion,
outside the sandbox, on a Unix socket bound into the sandbox (`/run/bastion/proxy.sock`,
`$BASTION_PROXY_SOCKET`); the sandbox has no other way out.

Default deny: a request names its destination (`CONNECT host:port` for a tunnel, or an
absolute `http://host/…` URL), and only a host on the workspace's allowlist (exactly, or
under a `*.` entry) is connected, resolved by the proxy (the sandbox has no DNS) and
vetted by the outbound guard (internal addresses refused unless the operator allows
them). Every attempt is reported with its decision (`on_event`, audited by the exec).

`proxy` secrets: for a plain request to a secret's host, the proxy sets the secret's
header (`Authorization` unless named) to the secret's value; the value exists only in
this process, never in the sandbox. A tunnel (CONNECT, e.g. HTTPS) is end-to-end
encrypted: nothing can be added to it; to use a proxy secret over TLS, send the plain
request to the proxy with `X-Bastion-Upstream-TLS: 1` and it originates TLS upstream.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import ssl
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bastion.core.netguard import OutboundRefused, vetted_addresses

MAX_HEAD = 65536
CONNECT_TIMEOUT = 10.0
IDLE_TIMEOUT = 60.0
TLS_HINT = "x-bastion-upstream-tls"


@dataclass(frozen=True)
class Injection:
    name: str  # the secret's name (audited)
    host: str
    header: str
    value: str = field(repr=False)


def allowed(host: str, domains: Sequence[str]) -> bool:
    host = host.lower().rstrip(".")
    for domain in domains:
        if domain.startswith("*."):
            if host.endswith(domain[1:]) and host != domain[2:]:
                return True
        elif host == domain:
            return True
    return False


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    proxy: EgressProxy


class EgressProxy:
    def __init__(
        self,
        socket_path: Path,
        domains: Sequence[str],
        injections: Sequence[Injection] = (),
        *,
        on_event: Callable[[dict[str, Any]], None],
        outbound_allow: Sequence[str] = (),
    ) -> None:
        self.socket_path = socket_path
        self.domains = tuple(domains)
        self.injections = {i.host: i for i in injections}
        self.on_event = on_event
        self.outbound_allow = tuple(outbound_allow)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"EgressProxy(domains={self.domains!r}, injections={sorted(self.injections)!r})"

    def start(self) -> None:
        self._server = _Server(str(self.socket_path), _Handler)
        self._server.proxy = self
        self.socket_path.chmod(0o666)  # the sandbox's user connects
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            if self._thread is not None:  # serving: stop the loop first
                self._shutdown(self._server)
            self._server.server_close()
        with contextlib.suppress(OSError):
            self.socket_path.unlink()

    def _shutdown(self, server: _Server) -> None:
        """Stop serving now: `shutdown()` waits for the serving loop's next round (half a
        second apart), so the loop is woken by empty connections until it has stopped
        (an empty connection is closed unread)."""
        stopping = threading.Thread(target=server.shutdown, daemon=True)
        stopping.start()
        while stopping.is_alive():
            with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as poke:
                poke.connect(str(self.socket_path))
            stopping.join(0.005)

    def __enter__(self) -> EgressProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def connect(self, host: str, port: int) -> socket.socket:
        """A connection to an allowlisted host, resolved here and vetted (OSError or
        OutboundRefused otherwise)."""
        addresses = vetted_addresses(host, port, self.outbound_allow) or [host]
        last: OSError | None = None
        for address in addresses:
            try:
                return socket.create_connection((address, port), timeout=CONNECT_TIMEOUT)
            except OSError as exc:
                last = exc
        raise last or OSError("no address")


def _read_head(conn: socket.socket) -> tuple[bytes, bytes] | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            return None
        data += chunk
        if len(data) > MAX_HEAD:
            return None
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _pipe(a: socket.socket, b: socket.socket) -> None:
    def one_way(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    other = threading.Thread(target=one_way, args=(b, a), daemon=True)
    other.start()
    one_way(a, b)
    other.join(IDLE_TIMEOUT)


def _forwarded_headers(headers: list[str], injection: Injection | None) -> list[str]:
    """The client's headers without the proxy's own and hop-by-hop ones, with the
    secret's header set (replacing any the client sent) and the connection closed."""
    drop = {"proxy-connection", "proxy-authorization", "connection", TLS_HINT}
    if injection is not None:
        drop.add(injection.header.lower())
    kept = [h for h in headers if h.split(":", 1)[0].strip().lower() not in drop]
    if injection is not None:
        kept.append(f"{injection.header}: {injection.value}")
    kept.append("Connection: close")
    return kept


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        conn: socket.socket = self.request
        conn.settimeout(IDLE_TIMEOUT)
        proxy = self.server.proxy
        try:
            found = _read_head(conn)
        except OSError:
            return
        if found is None:
            return
        head, rest = found
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            self._refuse(conn, 400, "bad request")
            return
        method, target, version = parts
        headers = [line for line in lines[1:] if line]
        if method.upper() == "CONNECT":
            host, _, port_text = target.rpartition(":")
            self._tunnel(conn, proxy, host.strip("[]"), port_text, rest)
            return
        url = urlsplit(target)
        if url.scheme != "http" or not url.hostname:
            self._refuse(conn, 400, "send an absolute http:// URL, or CONNECT")
            return
        tls = any(h.split(":", 1)[0].strip().lower() == TLS_HINT for h in headers)
        port = url.port or (443 if tls else 80)
        upstream = self._open(conn, proxy, url.hostname, port, "http")
        if upstream is None:
            return
        path = url.path or "/"
        if url.query:
            path += "?" + url.query
        injection = proxy.injections.get(url.hostname.lower())
        kept = _forwarded_headers(headers, injection)
        if injection is not None:
            proxy.on_event(
                {"kind": "secret_injected", "name": injection.name, "host": injection.host}
            )
        out = f"{method} {path} {version}\r\n" + "\r\n".join(kept) + "\r\n\r\n"
        try:
            if tls:
                context = ssl.create_default_context()
                upstream = context.wrap_socket(upstream, server_hostname=url.hostname)
            upstream.sendall(out.encode("latin-1") + rest)
            _pipe(conn, upstream)
        except OSError:
            return
        finally:
            upstream.close()

    def _tunnel(
        self, conn: socket.socket, proxy: EgressProxy, host: str, port_text: str, rest: bytes
    ) -> None:
        if not port_text.isdigit() or not host:
            self._refuse(conn, 400, "CONNECT host:port")
            return
        upstream = self._open(conn, proxy, host, int(port_text), "connect")
        if upstream is None:
            return
        try:
            conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            if rest:
                upstream.sendall(rest)
            _pipe(conn, upstream)
        except OSError:
            return
        finally:
            upstream.close()

    def _open(
        self, conn: socket.socket, proxy: EgressProxy, host: str, port: int, how: str
    ) -> socket.socket | None:
        host = host.lower().rstrip(".")
        event = {"kind": "egress", "host": host[:253], "port": port, "method": how}
        if not allowed(host, proxy.domains):
            proxy.on_event({**event, "decision": "denied", "reason": "not_allowlisted"})
            self._refuse(conn, 403, "this host is not on the workspace's allowlist")
            return None
        try:
            upstream = proxy.connect(host, port)
        except OutboundRefused:
            proxy.on_event({**event, "decision": "denied", "reason": "internal_address"})
            self._refuse(conn, 403, "this host resolves to an internal address")
            return None
        except OSError:
            proxy.on_event({**event, "decision": "allowed", "reason": "unreachable"})
            self._refuse(conn, 502, "the host cannot be reached")
            return None
        proxy.on_event({**event, "decision": "allowed", "reason": None})
        return upstream

    @staticmethod
    def _refuse(conn: socket.socket, status: int, message: str) -> None:
        reason = {400: "Bad Request", 403: "Forbidden", 502: "Bad Gateway"}[status]
        body = (message + "\n").encode()
        with contextlib.suppress(OSError):
            conn.sendall(
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )

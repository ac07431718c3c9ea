"""Real receivers for tests: a syslog listener (TCP or TLS, RFC 6587 octet framing), an
HTTP(S) receiver that records requests, a forward proxy, and a throwaway PKI, all on
127.0.0.1."""

from __future__ import annotations

import base64
import datetime as dt
import http.client
import ipaddress
import json
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

TIMEOUT = 2.0


def free_port() -> int:
    """A port nothing listens on (bound and released at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class _Stoppable(Protocol):
    def stop(self) -> None: ...


S = TypeVar("S", bound=_Stoppable)


def _started(make: Callable[..., S]) -> Iterator[Callable[..., S]]:
    """A fixture's body: hands out a starter of `make`'s receivers and stops every one
    it started when the test ends."""
    started: list[S] = []

    def start(*args: Any, **kwargs: Any) -> S:
        receiver = make(*args, **kwargs)
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        receiver.stop()


class _LocalHttpServer:
    """A ThreadingHTTPServer on 127.0.0.1 (TLS with `context`) served from a thread."""

    def _serve(
        self, handler: type[BaseHTTPRequestHandler], context: ssl.SSLContext | None = None
    ) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        if context is not None:
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port: int = self.server.server_address[1]
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(TIMEOUT)


# --- certificates ---------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca_file: Path
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A throwaway CA and a server certificate for localhost / 127.0.0.1."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Bastion Test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    directory = tmp_path_factory.mktemp("pki")
    pem = serialization.Encoding.PEM
    ca_file = directory / "ca.pem"
    ca_file.write_bytes(ca_cert.public_bytes(pem))
    cert_file = directory / "server.pem"
    cert_file.write_bytes(cert.public_bytes(pem))
    key_file = directory / "server.key"
    key_file.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return Pki(ca_file=ca_file, cert_file=cert_file, key_file=key_file)


# --- a syslog receiver ----------------------------------------------------------------


class SyslogReceiver:
    """A TCP (or TLS) syslog receiver that parses RFC 6587 octet-counted frames.

    Each connection is served by its own thread; `stop` closes the listener and every
    connection (the client sees the stream end) and joins the threads."""

    POLL = 0.05

    def __init__(self, port: int = 0, context: ssl.SSLContext | None = None) -> None:
        self._context = context
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", port))
        self._listener.listen()
        self._listener.settimeout(self.POLL)
        self.port: int = self._listener.getsockname()[1]
        self.messages: list[bytes] = []
        self.raw = b""
        self.connections = 0
        self.errors: list[str] = []
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept_loop, daemon=True)
        self._accepter.start()

    def wait_for(self, count: int) -> list[bytes]:
        with self._changed:
            self._changed.wait_for(lambda: len(self.messages) >= count, timeout=TIMEOUT)
            return list(self.messages)

    def stop(self) -> None:
        self._stopping.set()
        self._accepter.join(TIMEOUT)
        for thread in list(self._threads):
            thread.join(TIMEOUT)
        self._listener.close()

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, raw: socket.socket) -> None:
        conn = raw
        try:
            raw.settimeout(TIMEOUT)
            if self._context is not None:
                conn = self._context.wrap_socket(raw, server_side=True)
            with self._changed:
                self.connections += 1
            conn.settimeout(self.POLL)
            buffer = b""
            while not self._stopping.is_set():
                try:
                    chunk = conn.recv(65536)
                except TimeoutError:
                    continue
                if not chunk:
                    return
                buffer = self._parse(buffer + chunk)
        except (OSError, ValueError) as exc:  # a refused certificate, a bad frame
            self.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            conn.close()

    def _parse(self, buffer: bytes) -> bytes:
        """Record every complete `LEN SP MESSAGE` frame; return what is left over."""
        while True:
            space = buffer.find(b" ")
            if space < 0:
                return buffer
            length_text = buffer[:space]
            if not length_text.isdigit():
                raise ValueError(f"bad frame header {buffer[:20]!r}")
            end = space + 1 + int(length_text)
            if len(buffer) < end:
                return buffer
            with self._changed:
                self.messages.append(buffer[space + 1 : end])
                self.raw += buffer[:end]
                self._changed.notify_all()
            buffer = buffer[end:]


StartSyslog = Callable[..., SyslogReceiver]


@pytest.fixture
def start_syslog() -> Iterator[StartSyslog]:
    yield from _started(SyslogReceiver)


@dataclass(frozen=True)
class Recorded:
    path: str
    headers: dict[str, str]
    body: bytes


class HttpReceiver(_LocalHttpServer):
    """A ThreadingHTTPServer that records every POST and answers `status`, after `delay`
    seconds (a slow collector). With `echo_headers` the response body repeats the request
    headers (as a careless or debugging collector might)."""

    def __init__(self, context: ssl.SSLContext | None = None) -> None:
        self.requests: list[Recorded] = []
        self.status = 200
        self.delay = 0.0
        self.response_headers: dict[str, str] = {}
        self.echo_headers = False
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                receiver.requests.append(Recorded(self.path, headers, body))
                time.sleep(receiver.delay)
                answer = (
                    json.dumps(headers).encode()
                    if receiver.echo_headers
                    else b'{"text":"Success","code":0}'
                )
                self.send_response(receiver.status)
                for name, value in receiver.response_headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._serve(Handler, context)

    def url(self, path: str, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"


StartHttp = Callable[..., HttpReceiver]


@pytest.fixture
def start_http() -> Iterator[StartHttp]:
    yield from _started(HttpReceiver)


# --- an HTTP forward proxy --------------------------------------------------------------


class ForwardProxy(_LocalHttpServer):
    """A forward proxy on 127.0.0.1, as an operator's egress proxy: CONNECT tunnels (for
    https) and absolute-form requests (for http). Records what it was asked for
    (`"CONNECT host:port"`, `"POST http://…"`) and the Proxy-Authorization headers it saw;
    with `credentials` ("user:password") it answers 407 to anything else."""

    def __init__(self, credentials: str | None = None) -> None:
        self.requests: list[str] = []
        self.authorizations: list[str | None] = []
        expected = (
            "Basic " + base64.b64encode(credentials.encode()).decode() if credentials else None
        )
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _admitted(self) -> bool:
                seen = self.headers.get("Proxy-Authorization")
                proxy.authorizations.append(seen)
                if expected is None or seen == expected:
                    return True
                self.send_response(407)
                self.send_header("Proxy-Authenticate", 'Basic realm="egress"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return False

            def do_CONNECT(self) -> None:
                proxy.requests.append(f"CONNECT {self.path}")
                if not self._admitted():
                    return
                host, port = self.path.rsplit(":", 1)
                upstream = socket.create_connection((host, int(port)), timeout=TIMEOUT)
                self.send_response(200, "Connection established")
                self.end_headers()
                sockets = [self.connection, upstream]
                try:
                    while True:
                        ready, _, _ = select.select(sockets, [], [], TIMEOUT)
                        if not ready:
                            return
                        for source in ready:
                            data = source.recv(65536)
                            if not data:
                                return
                            (upstream if source is self.connection else self.connection).sendall(
                                data
                            )
                finally:
                    upstream.close()

            def do_POST(self) -> None:
                proxy.requests.append(f"POST {self.path}")
                if not self._admitted():
                    return
                target = urlsplit(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in ("proxy-authorization", "proxy-connection", "connection")
                }
                upstream = http.client.HTTPConnection(
                    target.hostname or "", target.port or 80, timeout=TIMEOUT
                )
                try:
                    upstream.request("POST", target.path or "/", body=body, headers=headers)
                    answer = upstream.getresponse()
                    content = answer.read()
                    self.send_response(answer.status)
                    self.send_header("Content-Type", answer.getheader("Content-Type", "text/plain"))
                    self.send_header("Content-Length", str(len(content)))
                    self.end_headers()
                    self.wfile.write(content)
                finally:
                    upstream.close()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._serve(Handler)

    def url(self, credentials: str | None = None) -> str:
        return f"http://{credentials + '@' if credentials else ''}127.0.0.1:{self.port}"


@pytest.fixture
def start_proxy() -> Iterator[Callable[..., ForwardProxy]]:
    yield from _started(ForwardProxy)

"""Real peers of the SSO tests, started by the suite itself:

- `NodeProvider`: the npm package `oidc-provider` (installed into
  ~/.cache/bastion-tests/oidc-provider, outside the repository) run by Node with
  tests/sso/oidc_provider.mjs;
- `FakeProvider`: a tiny OpenID provider whose ID tokens the test crafts with a key it
  holds (expired, wrong audience, `alg: none`, HMAC with the public key …), which a
  certified provider will not issue;
- `DnsServer`: a DNS server (dnslib) answering TXT records the test sets;
- `MetadataServer`: an http server handing out the SAML IdP metadata the test sets.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from dnslib import QTYPE, RR, TXT
from dnslib.server import BaseResolver, DNSLogger, DNSServer
from joserfc import jwt
from joserfc.jwk import RSAKey

from tests.receivers import free_port

CACHE = Path.home() / ".cache" / "bastion-tests" / "oidc-provider"
VERSION = "8.8.1"
SCRIPT = Path(__file__).with_name("oidc_provider.mjs")
REDIRECT_URI = "http://localhost:8400/v1/auth/sso/oidc/callback"
CLIENTS = [
    {"client_id": "bastion-a", "client_secret": "secret-a-0123456789abcdef0123456789"},
    {"client_id": "bastion-b", "client_secret": "secret-b-0123456789abcdef0123456789"},
]


def _missing(what: str) -> None:
    message = f"{what}: the SSO tests need Node.js 18+ and npm to run oidc-provider"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def install_provider() -> Path:
    """oidc-provider and the test's script in the cache directory (installed once; an
    exclusive lock keeps parallel test workers from installing over each other)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        _missing("node or npm not found")
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        marker = CACHE / "node_modules" / "oidc-provider" / "package.json"
        if not marker.exists() or f'"version": "{VERSION}"' not in marker.read_text():
            (CACHE / "package.json").write_text('{"name": "bastion-test-oidc", "private": true}\n')
            subprocess.run(
                ["npm", "install", "--no-audit", "--no-fund", f"oidc-provider@{VERSION}"],
                cwd=CACHE,
                check=True,
                capture_output=True,
                timeout=600,
            )
        # Next to its node_modules, so that ES module resolution finds them.
        script = CACHE / SCRIPT.name
        if not script.exists() or script.read_text() != SCRIPT.read_text():
            script.write_text(SCRIPT.read_text())
    return CACHE


class NodeProvider:
    def __init__(self) -> None:
        cache = install_provider()
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        clients = [
            {
                **c,
                "redirect_uris": [REDIRECT_URI],
                "grant_types": ["authorization_code"],
                "response_types": ["code"],
                "token_endpoint_auth_method": "client_secret_basic",
            }
            for c in CLIENTS
        ]
        env = {**os.environ, "PORT": str(self.port), "OIDC_CLIENTS": json.dumps(clients)}
        script = cache / SCRIPT.name
        # Its warnings go to a file (a pipe nobody reads could fill and stall it).
        self.log = tempfile.NamedTemporaryFile(prefix="oidc-provider-", suffix=".log")  # noqa: SIM115
        self.process = subprocess.Popen(
            ["node", str(script)],
            cwd=cache,
            env=env,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # "ready …" once listening; nothing after
        if not line.startswith("ready"):
            self.process.kill()
            self.log.seek(0)
            err = self.log.read().decode(errors="replace")
            raise RuntimeError(f"oidc-provider did not start: {line} {err[-2000:]}")

    def add_account(self, sub: str, **claims: Any) -> None:
        response = httpx.post(f"{self.issuer}/__accounts", json={"sub": sub, "claims": claims})
        assert response.status_code == 204, response.text

    def authenticate(self, authorize_url: str, account: str) -> str:
        """Drive the provider headless like a browser: follow it to the sign-in
        interaction, sign in as `account`, and return where it finally sends the
        browser (the relying party's callback URL)."""
        with httpx.Client(follow_redirects=False, timeout=10) as browser:
            url = authorize_url
            for _ in range(10):
                if url.startswith(REDIRECT_URI.rsplit("/v1/", 1)[0]):
                    return url
                parts = urlsplit(url)
                if parts.path.startswith("/interaction/"):
                    details = browser.get(url)
                    assert details.status_code == 200, details.text
                    response = browser.post(f"{url}/login", json={"account": account})
                else:
                    response = browser.get(url)
                assert response.status_code in (302, 303), (response.status_code, response.text)
                url = str(httpx.URL(url).join(response.headers["location"]))
        raise AssertionError("the provider never sent the browser back")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


class FakeProvider:
    """Discovery, keys and a token endpoint whose ID token `make_token(nonce)` crafts."""

    def __init__(self) -> None:
        self.key = RSAKey.generate_key(2048, parameters={"kid": "fake-1", "use": "sig"})
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.discovery_issuer: str | None = None
        self.make_token: Callable[[str], str] = lambda nonce: ""
        self.last_nonce = ""
        self.token_requests: list[dict[str, Any]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def _json(self, body: Any, status: int = 200) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                if path == "/.well-known/openid-configuration":
                    self._json(
                        {
                            "issuer": fake.discovery_issuer or fake.issuer,
                            "authorization_endpoint": f"{fake.issuer}/authorize",
                            "token_endpoint": f"{fake.issuer}/token",
                            "jwks_uri": f"{fake.issuer}/jwks",
                            "code_challenge_methods_supported": ["S256"],
                        }
                    )
                elif path == "/jwks":
                    self._json({"keys": [fake.key.as_dict(private=False)]})
                else:
                    self._json({"error": "not_found"}, 404)

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                form = parse_qs(self.rfile.read(length).decode())
                fake.token_requests.append(
                    {"form": form, "authorization": self.headers.get("authorization")}
                )
                self._json(
                    {
                        "access_token": "fake-access-token",
                        "token_type": "Bearer",
                        "id_token": fake.make_token(fake.last_nonce),
                    }
                )

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def sign(self, claims: dict[str, Any], header: dict[str, Any] | None = None) -> str:
        return jwt.encode(header or {"alg": "RS256", "kid": "fake-1"}, claims, self.key)

    def claims(self, expected_nonce: str, **overrides: Any) -> dict[str, Any]:
        nonce = expected_nonce
        now = int(time.time())
        base = {
            "iss": self.issuer,
            "sub": "fake-" + str(overrides.get("email", "subject")),
            "aud": "fake-client",
            "exp": now + 300,
            "iat": now,
            "nonce": nonce,
            "email": "someone@unverified.example",
            "email_verified": True,
        }
        base.update(overrides)
        return {k: v for k, v in base.items() if v is not None}

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class MetadataServer:
    """Serves the document in `body` (SAML IdP metadata) at any path over plain http on
    loopback (the tests' outbound settings allow it), or `status` when not 200; counts
    the requests."""

    def __init__(self) -> None:
        self.body = ""
        self.status = 200
        self.hits = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                server.hits += 1
                data = server.body.encode()
                self.send_response(server.status)
                self.send_header("content-type", "application/samlmetadata+xml")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/saml/metadata"
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _TxtResolver(BaseResolver):  # type: ignore[misc]
    def __init__(self, records: dict[str, list[str]]) -> None:
        self.records = records

    def resolve(self, request: Any, handler: Any) -> Any:
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        if request.q.qtype == QTYPE.TXT:
            for text in self.records.get(name, []):
                reply.add_answer(RR(request.q.qname, QTYPE.TXT, rdata=TXT(text), ttl=1))
        return reply


class _Quiet(DNSLogger):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__(log="-recv,-send,-request,-reply,-truncated,-error,-data")


class DnsServer:
    def __init__(self) -> None:
        self.records: dict[str, list[str]] = {}
        self.port = free_port()
        self.server = DNSServer(
            _TxtResolver(self.records),
            port=self.port,
            address="127.0.0.1",
            tcp=False,
            logger=_Quiet(),
        )
        self.server.start_thread()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.stop()

"""Network `allowlist`: the sandbox reaches only listed hosts, through the egress proxy
on a bind-mounted socket; each attempt is reported with its decision; a `proxy`
secret reaches the upstream while its value is nowhere inside the sandbox."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from bastion.sandboxes import execs
from bastion.sandboxes.bwrap import BwrapProvider
from bastion.sandboxes.provider import Limits
from bastion.sandboxes.proxy import Injection, allowed
from bastion.sandboxes.schemas import ExecIn

SECRET = "Bearer upstream-only-9c1e5d2b7a"
LIMITS = Limits(wall_seconds=30)

CLIENT = """
import os, socket, sys
host, port = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX)
s.connect(os.environ["BASTION_PROXY_SOCKET"])
s.sendall(f"GET http://{host}:{port}/hello HTTP/1.1\\r\\nHost: {host}\\r\\n\\r\\n".encode())
data = b""
while chunk := s.recv(65536):
    data += chunk
print(data.decode(errors="replace").split("\\r\\n")[0])
print(data.decode(errors="replace").split("\\r\\n\\r\\n", 1)[-1])
"""

# Everything of the sandbox a secret could hide in: its environment, every process's
# environment and command line, and the files it can write or was given.
HUNT = (
    'env; cat /proc/*/environ /proc/*/cmdline 2>/dev/null | tr "\\0" "\\n"; '
    "grep -rs . /workspace /tmp /run /etc /dev/shm 2>/dev/null; echo hunted"
)


class Upstream(ThreadingHTTPServer):
    seen: list[dict[str, str]]


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            server.seen.append({k.lower(): v for k, v in self.headers.items()})
            body = b"upstream says hi"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            return

    server = Upstream(("127.0.0.1", 0), Handler)
    server.seen = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def prepared(domains: tuple[str, ...], injections: tuple[Injection, ...] = ()) -> execs.Prepared:
    return execs.Prepared(
        run_id="run_test",
        org_id="org_test",
        agent_id="agt_test",
        workspace_id="wks_test",
        fork_id="fork_proxy",
        digest="base1",
        limits=LIMITS,
        domains=domains,
        files={},
        injections=injections,
    )


def run(provider: BwrapProvider, p: execs.Prepared, *argv: str) -> execs.ExecOutcome:
    body = ExecIn(workspace="wks_test", argv=list(argv))
    return execs.execute(provider, p, body, outbound_allow=["127.0.0.0/8"])


def test_allowlisted_host_is_reached_and_a_proxy_secret_never_enters(
    provider: BwrapProvider, workspace: str, upstream: Upstream
) -> None:
    port = str(upstream.server_address[1])
    p = prepared(("localhost",), (Injection("API_TOKEN", "localhost", "Authorization", SECRET),))
    out = run(provider, p, "/usr/bin/python3", "-c", CLIENT, "localhost", port)
    assert out.result.stdout.decode().startswith("HTTP/1.0 200")
    assert "upstream says hi" in out.result.stdout.decode()
    # The upstream got the secret, set by the proxy.
    assert upstream.seen[-1]["authorization"] == SECRET
    kinds = [e["kind"] for e in out.events]
    assert kinds == ["egress", "secret_injected"]
    assert out.events[0]["decision"] == "allowed"
    assert out.events[1]["name"] == "API_TOKEN"
    assert SECRET not in repr(out.events)
    # Nowhere inside the sandbox, during an exec that uses the proxy.
    hunt = run(provider, p, "/bin/sh", "-c", HUNT)
    text = (hunt.result.stdout + hunt.result.stderr).decode(errors="replace")
    assert "hunted" in text
    assert "BASTION_PROXY_SOCKET" in text  # the hunt did read the environment
    assert "upstream-only" not in text


def test_hosts_off_the_allowlist_are_refused_and_reported(
    provider: BwrapProvider, workspace: str, upstream: Upstream
) -> None:
    port = str(upstream.server_address[1])
    p = prepared(("allowed.example",))
    out = run(provider, p, "/usr/bin/python3", "-c", CLIENT, "localhost", port)
    assert out.result.stdout.decode().startswith("HTTP/1.1 403")
    assert upstream.seen == []
    assert out.events == [
        {
            "kind": "egress",
            "host": "localhost",
            "port": int(port),
            "method": "http",
            "decision": "denied",
            "reason": "not_allowlisted",
        }
    ]


def test_without_an_allowlist_there_is_no_proxy(provider: BwrapProvider, workspace: str) -> None:
    out = run(provider, prepared(()), "/bin/sh", "-c", "echo ${BASTION_PROXY_SOCKET:-none}")
    assert out.result.stdout == b"none\n"
    assert out.events == []


def test_allowlist_matching() -> None:
    domains = ("api.example.com", "*.pkg.dev")
    assert allowed("api.example.com", domains)
    assert allowed("API.example.com.", domains)
    assert allowed("a.pkg.dev", domains)
    assert allowed("x.y.pkg.dev", domains)
    assert not allowed("pkg.dev", domains)
    assert not allowed("example.com", domains)
    assert not allowed("api.example.com.evil.io", domains)
    assert not allowed("evilpkg.dev", domains)

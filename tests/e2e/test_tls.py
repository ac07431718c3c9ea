"""`bastion serve` over TLS, checked with Python's ssl as a client would: TLS 1.3 is
negotiated when offered, TLS 1.2 only with ECDHE and an AEAD cipher, TLS 1.1 and
TLS 1.2 CBC suites are refused. In production the server refuses plain HTTP unless a
TLS-terminating proxy in front is declared, and a half TLS configuration never starts."""

from __future__ import annotations

import socket
import ssl
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import BIN, Server, free_port, server_env
from tests.receivers import Pki

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(data_dir: Path, database_url: str, pki: Pki) -> Iterator[Server]:
    env = server_env(
        data_dir,
        database_url,
        BASTION_TLS_CERTFILE=str(pki.cert_file),
        BASTION_TLS_KEYFILE=str(pki.key_file),
    )
    with Server(env, workers=2, ca_file=pki.ca_file) as running:  # the factory reaches workers
        yield running


def _client(pki: Pki, version: ssl.TLSVersion, ciphers: str | None = None) -> ssl.SSLContext:
    """A client offering exactly `version` (and `ciphers` for TLS 1.2 and below), with
    its own security level lowered so that what it offers is up to the server."""
    context = ssl.create_default_context(cafile=str(pki.ca_file))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.1, on purpose
        context.minimum_version = version
        context.maximum_version = version
    context.set_ciphers(f"{ciphers or 'DEFAULT'}:@SECLEVEL=0")
    return context


def _handshake(server: Server, context: ssl.SSLContext) -> tuple[str | None, str]:
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        cipher = tls.cipher()
        return tls.version(), cipher[0] if cipher else ""


def test_tls_13_is_negotiated(server: Server, pki: Pki) -> None:
    assert _handshake(server, _client(pki, ssl.TLSVersion.TLSv1_3))[0] == "TLSv1.3"
    # What a default client gets: the highest version both sides speak.
    answer = httpx.get(f"{server.url}/readyz", verify=server.verify)
    assert answer.status_code == 200
    assert answer.headers["strict-transport-security"].startswith("max-age=")


@pytest.mark.parametrize(
    "cipher", ["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305"]
)
def test_tls_12_with_ecdhe_and_aead(server: Server, pki: Pki, cipher: str) -> None:
    assert _handshake(server, _client(pki, ssl.TLSVersion.TLSv1_2, cipher)) == (
        "TLSv1.2",
        cipher,
    )


@pytest.mark.parametrize(
    "cipher",
    [
        "ECDHE-ECDSA-AES128-SHA256",  # CBC
        "ECDHE-ECDSA-AES256-SHA384",  # CBC
        "ECDHE-ECDSA-AES128-SHA",  # CBC with SHA-1
        "AES128-GCM-SHA256",  # no forward secrecy
    ],
)
def test_tls_12_without_ecdhe_and_aead_is_refused(server: Server, pki: Pki, cipher: str) -> None:
    with pytest.raises(ssl.SSLError):  # the server ends the handshake
        _handshake(server, _client(pki, ssl.TLSVersion.TLSv1_2, cipher))
    assert _handshake(server, _client(pki, ssl.TLSVersion.TLSv1_2))[0] == "TLSv1.2"  # alive


def test_tls_11_is_refused(server: Server, pki: Pki) -> None:
    with pytest.raises(ssl.SSLError) as refused:
        _handshake(server, _client(pki, ssl.TLSVersion.TLSv1_1))
    # The server's refusal, not a client that could not offer TLS 1.1 at all.
    assert "NO_PROTOCOLS_AVAILABLE" not in str(refused.value)


def _serve(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "bastion"), "serve", "--port", str(free_port())],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_production_refuses_plain_http(data_dir: Path, database_url: str) -> None:
    refused = _serve(server_env(data_dir, database_url, BASTION_ENV="production"))
    assert refused.returncode == 2
    assert "refusing to serve plain HTTP in production" in refused.stderr
    assert "BASTION_TLS_TERMINATED_BY_PROXY" in refused.stderr


def test_half_a_tls_configuration_never_starts(data_dir: Path, database_url: str, pki: Pki) -> None:
    refused = _serve(server_env(data_dir, database_url, BASTION_TLS_CERTFILE=str(pki.cert_file)))
    assert refused.returncode == 2
    assert "BASTION_TLS_KEYFILE" in refused.stderr


def test_production_behind_a_declared_proxy_serves_http(data_dir: Path, database_url: str) -> None:
    env = server_env(
        data_dir,
        database_url,
        BASTION_ENV="production",
        BASTION_TLS_TERMINATED_BY_PROXY="true",
        BASTION_FORWARDED_ALLOW_IPS='["127.0.0.1"]',
    )
    with Server(env, workers=1) as running:
        # The proxy (here: this test, from 127.0.0.1) says the client used https.
        answer = httpx.get(f"{running.url}/readyz", headers={"x-forwarded-proto": "https"})
        assert answer.status_code == 200
        assert answer.headers["strict-transport-security"].startswith("max-age=")

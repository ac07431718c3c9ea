"""Signed compliance reports in JSON, HTML and PDF: each signature checked by an
independent Ed25519 implementation (PyNaCl, libsodium) with the key published at
/.well-known/jwks.json; the PDF opened and its text read (pypdf); the HTML escaped;
`bastion compliance verify` with the key set from a file and from a URL."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey
from pypdf import PdfReader
from sqlalchemy import select
from typer.testing import CliRunner

from bastion.audit.models import AuditEvent
from bastion.cli.main import app as cli
from bastion.compliance.models import ControlState
from tests.compliance.conftest import writing
from tests.factories import Factory, Org

runner = CliRunner()


def _said(output: str) -> str:
    return " ".join(output.split())  # the console wraps long lines


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _report(factory: Factory, org: Org, framework: str, fmt: str) -> dict[str, Any]:
    response = factory.client.post(
        f"/v1/orgs/{org.id}/compliance/reports",
        json={"framework": framework, "format": fmt},
        headers=org.headers,
    )
    assert response.status_code == 201, response.text
    report = dict(response.json())
    assert set(report) == {"id", "format", "content", "sha256", "signature", "kid"}
    return report


def _content(report: dict[str, Any]) -> bytes:
    if report["format"] == "pdf":
        return base64.b64decode(report["content"])
    return str(report["content"]).encode()


def _nacl_verify(factory: Factory, report: dict[str, Any]) -> None:
    """PyNaCl, not Bastion's `cryptography` code, checks the signature over the digest."""
    jwks = factory.client.get("/.well-known/jwks.json").json()
    [key] = [k for k in jwks["keys"] if k["kid"] == report["kid"]]
    assert (key["kty"], key["crv"]) == ("OKP", "Ed25519")
    digest = hashlib.sha256(_content(report)).digest()
    assert digest.hex() == report["sha256"]
    VerifyKey(_b64url(key["x"])).verify(digest, _b64url(report["signature"]))


@pytest.mark.parametrize("fmt", ["json", "html", "pdf"])
def test_report_signed_and_verified_independently(factory: Factory, fmt: str) -> None:
    org = factory.org()
    report = _report(factory, org, "soc2", fmt)
    assert report["format"] == fmt
    _nacl_verify(factory, report)
    # Changed content no longer verifies with the same signature.
    forged = hashlib.sha256(_content(report) + b" ").digest()
    jwks = factory.client.get("/.well-known/jwks.json").json()
    key = next(k for k in jwks["keys"] if k["kid"] == report["kid"])
    with pytest.raises(BadSignatureError):
        VerifyKey(_b64url(key["x"])).verify(forged, _b64url(report["signature"]))
    with writing(factory) as db:
        event = db.execute(
            select(AuditEvent).where(
                AuditEvent.chain == org.id, AuditEvent.type == "compliance_report.created"
            )
        ).scalar_one()
        assert event.event_metadata["sha256"] == report["sha256"]
        # Issuing a report evaluated the controls and stored their history.
        assert db.execute(select(ControlState).where(ControlState.org_id == org.id)).first()


def test_json_report_contents(factory: Factory) -> None:
    org = factory.org()
    doc = json.loads(_report(factory, org, "gdpr", "json")["content"])
    assert doc["report"]["framework"] == "gdpr"
    assert doc["report"]["org"]["id"] == org.id
    assert "not a certification" in doc["disclaimer"]
    assert {c["id"] for c in doc["controls"]} >= {"Art.5(1)(f)", "Art.30", "Art.32"}
    assert doc["record_of_processing"]["controller"]["organisation_id"] == org.id
    assert sum(doc["summary"].values()) == len(doc["controls"])


def test_pdf_opens_and_reads(factory: Factory) -> None:
    org = factory.org("Pdf Readers Ltd")
    report = _report(factory, org, "hipaa", "pdf")
    pdf = PdfReader(io.BytesIO(_content(report)))
    text = " ".join(page.extract_text() for page in pdf.pages)
    assert "HIPAA Security Rule" in text
    assert "Pdf Readers Ltd" in text
    assert "164.312(b)" in text
    assert "retention_configured" in text
    assert report["id"] in text


def test_html_is_escaped(factory: Factory) -> None:
    org = factory.org("<script>alert(1)</script>")
    html = _report(factory, org, "iso27001", "html")["content"]
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "A.8.15" in html


@pytest.fixture
def jwks_server(factory: Factory) -> Iterator[str]:
    body = factory.client.get("/.well-known/jwks.json").content

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/jwk-set+json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/.well-known/jwks.json"
    server.shutdown()


def test_cli_verify(factory: Factory, tmp_path: Path, jwks_server: str) -> None:
    org = factory.org()
    report = _report(factory, org, "ccpa", "pdf")
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    keys = tmp_path / "jwks.json"
    keys.write_text(factory.client.get("/.well-known/jwks.json").text)
    result = runner.invoke(cli, ["compliance", "verify", str(path), "--jwks", str(keys)])
    assert result.exit_code == 0, result.output
    assert "verifies" in result.stdout
    assert report["kid"] in result.stdout
    result = runner.invoke(cli, ["compliance", "verify", str(path), "--jwks", jwks_server])
    assert result.exit_code == 0, result.output
    # A changed byte of the PDF, or another signature, is refused.
    pdf = bytearray(_content(report))
    pdf[-20] ^= 1
    path.write_text(json.dumps({**report, "content": base64.b64encode(pdf).decode()}))
    result = runner.invoke(cli, ["compliance", "verify", str(path), "--jwks", str(keys)])
    assert result.exit_code == 1
    assert "does NOT verify" in _said(result.output)
    other = _report(factory, org, "ccpa", "pdf")
    path.write_text(json.dumps({**report, "signature": other["signature"]}))
    result = runner.invoke(cli, ["compliance", "verify", str(path), "--jwks", str(keys)])
    assert result.exit_code == 1
    assert "signature does not verify" in _said(result.output)
    path.write_text(json.dumps({**report, "kid": "unknown"}))
    result = runner.invoke(cli, ["compliance", "verify", str(path), "--jwks", str(keys)])
    assert result.exit_code == 1
    assert "no key with the report's kid" in _said(result.output)

"""`bastion compliance`: check a signed compliance report offline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from bastion.cli.common import EXIT_USAGE, Json, emit, fail, group

app = group("Compliance reports (offline: no data directory needed).")

MAX_JWKS_BYTES = 1 << 20


def _load_jwks(source: str) -> Any:
    if source.startswith(("https://", "http://")):
        import httpx

        try:
            response = httpx.get(source, timeout=10.0, follow_redirects=False)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            fail(f"could not fetch the key set: {type(exc).__name__}")
        if len(response.content) > MAX_JWKS_BYTES:
            fail("the key set is too large")
        text = response.text
    else:
        try:
            text = Path(source).read_text("utf-8")
        except OSError as exc:
            fail(f"could not read the key set: {exc.strerror}", EXIT_USAGE)
    try:
        return json.loads(text)
    except ValueError:
        fail("the key set is not JSON")


@app.command("verify")
def verify(
    report: Annotated[
        Path, typer.Argument(help="The report as POST …/compliance/reports returned it (JSON).")
    ],
    jwks: Annotated[
        str,
        typer.Option(
            help="The instance key set: a URL (https://bastion.example.com/.well-known/"
            "jwks.json) or a file."
        ),
    ],
    json_out: Json = False,
) -> None:
    """Check a report: its content against its sha256, and its Ed25519 signature against
    the key of its kid. Exit 0 when it verifies, 1 when it does not."""
    from bastion.compliance.verify import ReportInvalid, verify_report

    try:
        document = json.loads(report.read_text("utf-8"))
    except OSError as exc:
        fail(f"could not read the report: {exc.strerror}", EXIT_USAGE)
    except ValueError:
        fail("the report is not JSON", EXIT_USAGE)
    if not isinstance(document, dict):
        fail("the report is not a JSON object", EXIT_USAGE)
    keys = _load_jwks(jwks)
    if not isinstance(keys, dict):
        fail("the key set is not a JSON object")
    try:
        kid = verify_report(document, keys)
    except ReportInvalid as exc:
        fail(f"report {document.get('id')} does NOT verify: {exc}")
    emit(
        {"id": document.get("id"), "verified": True, "sha256": document["sha256"], "kid": kid},
        json_out,
        f"report {document.get('id')} verifies: sha256 {document['sha256']}, signed by {kid}",
    )

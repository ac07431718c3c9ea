"""Compliance: each framework's controls evaluated now from live state (status, each
check with what it looked at, the evidence), and a signed report to download — through
`bastion.compliance`, as `/v1/orgs/{org}/compliance/controls` and `…/reports` do.

The report is downloaded as the API's answer (`{"id", "format", "content", "sha256",
"signature", "kid"}`, a JSON file), which `bastion compliance verify` checks against
`/.well-known/jwks.json`: the content alone would carry no signature."""

from __future__ import annotations

import json
from collections import Counter
from typing import Protocol, cast

from fastapi import APIRouter
from starlette.responses import Response

from bastion.compliance import reports
from bastion.compliance import service as compliance
from bastion.compliance.schemas import AttestationIn, ReportIn, ReportOut
from bastion.console.pages.common import form_time
from bastion.console.web import SignedIn, SignedInPost, notice, render, see_other
from bastion.core.permissions import Permission
from bastion.core.signing import InstanceSigner

router = APIRouter()
PAGE = "/console/compliance"
DEFAULT_FRAMEWORK = "soc2"
SHORT_NAMES = {"soc2": "SOC 2", "iso27001": "ISO 27001", "gdpr": "GDPR", "ccpa": "CCPA",
               "hipaa": "HIPAA"}  # fmt: skip


ATTESTED = notice("control-attested", "Attestation recorded: it is evidence from now on.")


class _State(Protocol):
    @property
    def signer(self) -> InstanceSigner: ...


@router.get("/compliance")
def compliance_page(viewer: SignedIn, framework: str = DEFAULT_FRAMEWORK) -> Response:
    db, principal, org = viewer.db, viewer.signed_in, viewer.org_id
    frameworks = compliance.list_frameworks(principal, org)
    chosen = compliance.framework_of(framework)
    signer = cast(_State, viewer.edge.app).signer
    results = compliance.list_controls(db, principal, org, chosen.id, signer.public_keys)
    return render(
        viewer, "compliance.html", title="Compliance", frameworks=frameworks,
        framework=chosen, results=results, tally=Counter(r.status for r in results),
        formats=reports.FORMATS, may_report=viewer.can(Permission.COMPLIANCE_MANAGE),
        short_names=SHORT_NAMES,
    )  # fmt: skip


@router.post("/compliance/reports")
def create_report(posted: SignedInPost) -> Response:
    """The signed report as a download (the browser stays on the page)."""
    body = ReportIn.model_validate(
        {"framework": posted.form.get("framework", ""), "format": posted.get("format") or "json"}
    )
    signer = cast(_State, posted.viewer.edge.app).signer
    issued = reports.issue(
        posted.db, posted.principal, posted.org_id, framework=body.framework,
        fmt=body.format, signer=signer,
    )  # fmt: skip
    out = ReportOut(
        id=issued.id, format=issued.format, content=issued.content, sha256=issued.sha256,
        signature=issued.signature, kid=issued.kid,
    )  # fmt: skip
    name = f"bastion-{body.framework}-{body.format}-{issued.id}.json"
    return Response(
        json.dumps(out.model_dump(), indent=2, ensure_ascii=False) + "\n",
        media_type="application/json",
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "no-store",
        },
    )


@router.post("/compliance/attestations")
def attest(posted: SignedInPost) -> Response:
    """Who states that a manual control operates is the signed-in person; when is now."""
    body = AttestationIn.model_validate(
        {
            "framework": posted.form.get("framework", ""),
            "control": posted.form.get("control", ""),
            "statement": posted.form.get("statement", ""),
            "evidence_url": posted.get("evidence_url"),
            "valid_until": form_time(posted.get("valid_until")),
        }
    )
    compliance.attest(
        posted.db, posted.principal, posted.org_id, body.framework, body.control,
        statement=body.statement, evidence_url=body.evidence_url,
        document_sha256=body.document_sha256, valid_until=body.valid_until,
    )  # fmt: skip
    return see_other(PAGE, ATTESTED, framework=body.framework)

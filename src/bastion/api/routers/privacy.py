"""Privacy: scan and redact texts for personal data and secrets, detokenize."""

from __future__ import annotations

import pydantic_core
from fastapi import APIRouter
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from bastion.api.deps import DB, Caller, State
from bastion.core.principal import Principal
from bastion.privacy import DESCRIPTIONS, ENGINE, STRUCTURED, EntityType, Finding
from bastion.privacy import service as privacy
from bastion.privacy.schemas import (
    DetokenizeIn,
    DetokenizeOut,
    DetokenizeResult,
    FindingOut,
    RedactIn,
    RedactOut,
    RedactResult,
    ScanIn,
    ScanOut,
    TypeOut,
    TypesOut,
)

router = APIRouter(prefix="/v1/orgs/{org}/privacy", tags=["privacy"])
types_router = APIRouter(prefix="/v1/privacy", tags=["privacy"])


def _out(findings: list[Finding]) -> list[FindingOut]:
    return [FindingOut(type=f.type, start=f.start, end=f.end, score=f.score) for f in findings]


@router.post(
    "/scan",
    summary="Find personal data and secrets in texts (offsets in code points)",
    description="Needs `privacy:scan`. Texts are neither stored, logged nor audited. "
    f"At most {privacy.MAX_TEXTS} texts of {privacy.MAX_TEXT_CHARS} characters, "
    f"{privacy.MAX_TOTAL_CHARS} in all.",
    response_model=ScanOut,
)
async def scan(org: str, body: ScanIn, principal: Caller) -> Response:
    return Response(await scan_answer(principal, org, body), media_type="application/json")


async def scan_answer(principal: Principal, org: str, body: ScanIn) -> bytes:
    """The scan's JSON (the route's and the fast path's): findings serialised as they
    come (dataclasses, in Rust), not built into response models, which cost as much as
    the scan itself for a batch."""
    found = await run_in_threadpool(privacy.scan, principal, org, body.texts, body.types)
    return pydantic_core.to_json({"results": [{"findings": f} for f in found]})


@router.post(
    "/redact",
    summary="Replace what a scan finds: mask, replace, hash (keyed) or tokenize (reversible)",
    description="Needs `privacy:scan`. `hash` and `tokenize` use the organisation's redaction "
    "key, made and sealed in the vault on first use. Texts are neither stored, logged nor "
    "audited.",
)
def redact(org: str, body: RedactIn, principal: Caller, db: DB, state: State) -> RedactOut:
    done = privacy.redact(db, state.vault, principal, org, body.texts, body.mode, body.types)
    return RedactOut(results=[RedactResult(text=r.text, findings=_out(r.findings)) for r in done])


@router.post(
    "/detokenize",
    summary="Turn tokens made by `tokenize` back into their values (audited)",
    description="Needs `privacy:detokenize`. Tokens of another organisation, or altered ones, "
    "are left as they are. The audit event counts tokens per type, never values.",
)
def detokenize(
    org: str, body: DetokenizeIn, principal: Caller, db: DB, state: State
) -> DetokenizeOut:
    done = privacy.detokenize(db, state.vault, principal, org, body.texts)
    return DetokenizeOut(
        results=[DetokenizeResult(text=t) for t in done.texts], restored=done.restored
    )


@types_router.get("/types", summary="The types the detector finds (any signed-in caller)")
async def types(principal: Caller) -> TypesOut:
    return TypesOut(
        data=[
            TypeOut(name=t, description=DESCRIPTIONS[t], structured=t in STRUCTURED)
            for t in sorted(EntityType)
        ],
        engine=ENGINE,
    )

"""Privacy: scan and redact texts for personal data and secrets, detokenize; data
policies on agent traffic, subject requests and retention."""

from __future__ import annotations

import pydantic_core
from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from bastion.api.deps import DB, DEFAULT_PAGE, Caller, Cursor, Limit, State
from bastion.core.principal import Principal
from bastion.core.schemas import ListOf
from bastion.privacy import (
    DESCRIPTIONS,
    ENGINE,
    STRUCTURED,
    EntityType,
    Finding,
    policies,
    retention,
    subjects,
)
from bastion.privacy import service as privacy
from bastion.privacy.models import DataPolicy
from bastion.privacy.schemas import (
    DetokenizeIn,
    DetokenizeOut,
    DetokenizeResult,
    FindingOut,
    PoliciesOut,
    PolicyIn,
    PolicyOut,
    PolicyPatch,
    RedactIn,
    RedactOut,
    RedactResult,
    RetentionIn,
    RetentionOut,
    ScanIn,
    ScanOut,
    SubjectRequestIn,
    SubjectRequestOut,
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


# --- data policies ---------------------------------------------------------------------


def _policy_out(p: DataPolicy) -> PolicyOut:
    return PolicyOut.model_validate(p)


@router.post(
    "/policies",
    status_code=201,
    summary="Create a data policy on agent traffic",
    description="Needs `privacy:manage`. The tool-call gate applies `tool_arguments` policies "
    "before it decides (deny, hold for approval, or only redact); whatever the action, what "
    "is stored (the call, its approval, audit events) has the found values replaced by "
    "`<TYPE>`. `tool_results` policies apply to MCP results (deny or redact); "
    "`audit_metadata` and `webhook_payloads` policies redact.",
)
def create_policy(org: str, body: PolicyIn, principal: Caller, db: DB) -> PolicyOut:
    made = policies.create_policy(
        db,
        principal,
        org,
        name=body.name,
        applies_to=body.applies_to,
        types=[str(t) for t in body.types],
        action=body.action,
    )
    return _policy_out(made)


@router.get("/policies", summary="The organisation's data policies")
def list_policies(org: str, principal: Caller, db: DB) -> PoliciesOut:
    return PoliciesOut(data=[_policy_out(p) for p in policies.list_policies(db, principal, org)])


@router.get("/policies/{policy}", summary="One data policy")
def get_policy(org: str, policy: str, principal: Caller, db: DB) -> PolicyOut:
    return _policy_out(policies.get_policy(db, principal, org, policy))


@router.patch("/policies/{policy}", summary="Change a data policy (the fields given)")
def update_policy(org: str, policy: str, body: PolicyPatch, principal: Caller, db: DB) -> PolicyOut:
    done = policies.update_policy(
        db,
        principal,
        org,
        policy,
        name=body.name,
        applies_to=body.applies_to,
        types=[str(t) for t in body.types] if body.types is not None else None,
        action=body.action,
    )
    return _policy_out(done)


@router.delete("/policies/{policy}", status_code=204, summary="Delete a data policy")
def delete_policy(org: str, policy: str, principal: Caller, db: DB) -> Response:
    policies.delete_policy(db, principal, org, policy)
    return Response(status_code=204)


# --- subject requests --------------------------------------------------------------------


@router.post(
    "/subject-requests",
    status_code=201,
    summary="Answer a data subject's access or erasure request",
    description="Needs `privacy:subject_requests`; erasure also needs a recent verification "
    "(step-up) and cannot be undone. The subject is named by `user_id` or `email` (exactly "
    "one). Access: `GET …/{id}/package` gives the ZIP. Erasure: the person is deleted "
    "(sessions, keys, factors, memberships), their tool calls' arguments emptied; audit "
    "events keep their user id as a pseudonym, their email in events about them becomes a "
    "pseudonym (`pii_…`), and the chain still verifies (docs/privacy.md).",
)
def create_subject_request(
    org: str, body: SubjectRequestIn, principal: Caller, db: DB
) -> SubjectRequestOut:
    made = subjects.create_request(
        db, principal, org, kind=body.kind, user_id=body.user_id, email=body.email
    )
    return SubjectRequestOut.model_validate(made)


@router.get("/subject-requests", summary="Subject requests, newest first")
def list_subject_requests(
    org: str, principal: Caller, db: DB, limit: Limit = DEFAULT_PAGE, cursor: Cursor = None
) -> ListOf[SubjectRequestOut]:
    page = subjects.list_requests(db, principal, org, limit=limit, cursor=cursor)
    return ListOf[SubjectRequestOut](
        data=[SubjectRequestOut.model_validate(r) for r in page.data],
        next_cursor=page.next_cursor,
    )


@router.get("/subject-requests/{request}", summary="One subject request")
def get_subject_request(org: str, request: str, principal: Caller, db: DB) -> SubjectRequestOut:
    return SubjectRequestOut.model_validate(subjects.get_request(db, principal, org, request))


@router.get(
    "/subject-requests/{request}/package",
    summary="An access request's package: a ZIP of JSON files (audited)",
    response_class=Response,
    responses={200: {"content": {"application/zip": {}}, "description": "The package"}},
)
def subject_package(org: str, request: str, principal: Caller, db: DB) -> Response:
    data = subjects.package(db, principal, org, request)
    return Response(
        content=data,
        media_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="{request}.zip"',
            "Cache-Control": "no-store",
        },
    )


# --- retention -----------------------------------------------------------------------------

retention_router = APIRouter(prefix="/v1/orgs/{org}/retention", tags=["privacy"])


@retention_router.get("", summary="How long each data class is kept")
def get_retention(org: str, principal: Caller, db: DB) -> RetentionOut:
    return RetentionOut(**retention.get_retention(db, principal, org))


@retention_router.put(
    "",
    summary="Set retention periods (the fields given; step-up)",
    description="Needs `privacy:manage` and a recent verification. `audit_events_days` is the "
    "organisation's `audit_retention_days`. A purge job (hourly; `bastion privacy purge`) "
    "enforces the periods and records what it purged (`privacy.purged`).",
)
def put_retention(org: str, body: RetentionIn, principal: Caller, db: DB) -> RetentionOut:
    changes = body.model_dump(exclude_none=True)
    return RetentionOut(**retention.update_retention(db, principal, org, changes))

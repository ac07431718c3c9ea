"""Compliance center and access reviews: thin routes over `bastion.compliance`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from bastion.api.deps import DB, Caller, State
from bastion.compliance import processing, reports, reviews
from bastion.compliance import service as compliance
from bastion.compliance.facts import Facts
from bastion.compliance.models import AccessReview
from bastion.compliance.schemas import (
    AccessReviewIn,
    AccessReviewItemOut,
    AccessReviewOut,
    AttestationIn,
    AttestationOut,
    ControlOut,
    ControlStateOut,
    DecisionIn,
    Framework,
    FrameworkOut,
    ItemCounts,
    ReportIn,
    ReportOut,
)
from bastion.core.permissions import Permission
from bastion.core.schemas import ListOf

router = APIRouter(prefix="/v1/orgs/{org}/compliance", tags=["compliance"])
reviews_router = APIRouter(prefix="/v1/orgs/{org}/access-reviews", tags=["access reviews"])


@router.get("/frameworks", summary="The frameworks whose controls Bastion evaluates")
def list_frameworks(org: str, principal: Caller) -> ListOf[FrameworkOut]:
    found = compliance.list_frameworks(principal, org)
    return ListOf[FrameworkOut](data=[FrameworkOut(**f) for f in found], next_cursor=None)


@router.get("/controls", summary="Controls evaluated now from live state, with their checks")
def list_controls(
    org: str,
    principal: Caller,
    db: DB,
    state: State,
    framework: Annotated[Framework | None, Query()] = None,
) -> dict[str, list[ControlOut]]:
    """Each control's status (`passing` when all its checks pass, `manual` for controls
    shown by attestations), each check's `detail` saying what it looked at and why, and
    the evidence (attestations, completed access reviews)."""
    results = compliance.list_controls(db, principal, org, framework, state.signer.public_keys)
    return {"data": [ControlOut.model_validate(r.as_json()) for r in results]}


FrameworkQuery = Annotated[Framework, Query(description="The control's framework.")]
ControlQuery = Annotated[str, Query(max_length=40, description="The control's id, e.g. CC6.1.")]


@router.get("/history", summary="When a control started failing and when it was fixed")
def control_history(
    org: str, principal: Caller, db: DB, framework: FrameworkQuery, control: ControlQuery
) -> dict[str, list[ControlStateOut]]:
    """The control's stretches of status, newest first: each from the evaluation that
    found it (`started_at`) to the last that confirmed it (`last_evaluated_at`)."""
    rows = compliance.history(db, principal, org, framework, control)
    return {"data": [ControlStateOut.model_validate(r) for r in rows]}


@router.post(
    "/attestations",
    status_code=201,
    summary="Attest that a manual control operates (who: the caller; when: now)",
)
def attest(org: str, body: AttestationIn, principal: Caller, db: DB) -> AttestationOut:
    row = compliance.attest(
        db,
        principal,
        org,
        body.framework,
        body.control,
        statement=body.statement,
        evidence_url=body.evidence_url,
        document_sha256=body.document_sha256,
        valid_until=body.valid_until,
    )
    return AttestationOut.model_validate(row)


@router.get("/attestations", summary="A manual control's attestations, newest first")
def list_attestations(
    org: str, principal: Caller, db: DB, framework: FrameworkQuery, control: ControlQuery
) -> dict[str, list[AttestationOut]]:
    rows = compliance.list_attestations(db, principal, org, framework, control)
    return {"data": [AttestationOut.model_validate(r) for r in rows]}


@router.post(
    "/reports", status_code=201, summary="A signed report of one framework (JSON, HTML or PDF)"
)
def create_report(org: str, body: ReportIn, principal: Caller, db: DB, state: State) -> ReportOut:
    """Signed with the instance key named by `kid` (published at
    `/.well-known/jwks.json`): Ed25519 over the SHA-256 digest of the content's bytes
    (for `pdf`, of the bytes the base64 `content` decodes to)."""
    issued = reports.issue(
        db, principal, org, framework=body.framework, fmt=body.format, signer=state.signer
    )
    return ReportOut(
        id=issued.id,
        format=issued.format,
        content=issued.content,
        sha256=issued.sha256,
        signature=issued.signature,
        kid=issued.kid,
    )


@router.get(
    "/gdpr/record-of-processing",
    summary="GDPR Art. 30 record of processing, generated from the organisation's configuration",
)
def record_of_processing(org: str, principal: Caller, db: DB) -> dict[str, Any]:
    principal.require_org(org)
    principal.require(Permission.COMPLIANCE_READ)
    return processing.record_of_processing(Facts(db, org))


def _review_out(review: AccessReview, counts: reviews.Counts) -> AccessReviewOut:
    return AccessReviewOut(
        id=review.id,
        name=review.name,
        scope=list(review.scope),
        reviewers=dict(review.reviewers),
        due_at=review.due_at,
        on_due=review.on_due,
        recurrence=review.recurrence,
        status=review.status,
        previous_id=review.previous_id,
        created_by=review.created_by,
        created_at=review.created_at,
        completed_at=review.completed_at,
        items=ItemCounts(**counts.__dict__),
    )


@reviews_router.post("", status_code=201, summary="Start an access review campaign")
def create_review(org: str, body: AccessReviewIn, principal: Caller, db: DB) -> AccessReviewOut:
    review = reviews.create_review(
        db,
        principal,
        org,
        name=body.name,
        scope=list(body.scope),
        reviewers=body.reviewers.model_dump(),
        due_at=body.due_at,
        on_due=body.on_due,
        recurrence=body.recurrence,
    )
    return _review_out(review, reviews.counts(db, [review.id])[review.id])


@reviews_router.get("", summary="Access review campaigns (reviewers see theirs)")
def list_reviews(org: str, principal: Caller, db: DB) -> dict[str, list[AccessReviewOut]]:
    found = reviews.list_reviews(db, principal, org)
    counts = reviews.counts(db, [r.id for r in found])
    return {"data": [_review_out(r, counts[r.id]) for r in found]}


@reviews_router.get("/{review}", summary="One access review campaign")
def get_review(org: str, review: str, principal: Caller, db: DB) -> AccessReviewOut:
    found = reviews.get_review(db, principal, org, review)
    return _review_out(found, reviews.counts(db, [found.id])[found.id])


@reviews_router.get("/{review}/items", summary="A campaign's items and their decisions")
def list_items(
    org: str, review: str, principal: Caller, db: DB
) -> dict[str, list[AccessReviewItemOut]]:
    items = reviews.list_items(db, principal, org, review)
    return {"data": [AccessReviewItemOut.model_validate(i) for i in items]}


@reviews_router.post(
    "/{review}/items/{item}/decision",
    summary="Keep or revoke one item (a revoke takes effect at once; never your own access)",
)
def decide(
    org: str, review: str, item: str, body: DecisionIn, principal: Caller, db: DB
) -> AccessReviewItemOut:
    decided = reviews.decide(
        db, principal, org, review, item, decision=body.decision, comment=body.comment
    )
    return AccessReviewItemOut.model_validate(decided)

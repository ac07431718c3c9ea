"""The compliance API's bodies: report requests and issued reports, attestations,
access review campaigns and their items, decisions."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints

from bastion.core.schemas import In, Name, Out, Timestamp

Framework = Literal["soc2", "iso27001", "gdpr", "ccpa", "hipaa"]
Scope = Literal["users", "api_keys", "service_accounts", "agents", "role_grants"]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class FrameworkOut(Out):
    id: str
    title: str
    version: str
    controls: int


class CheckOut(Out):
    name: str
    status: Literal["passing", "failing"]
    detail: str


class ControlOut(Out):
    id: str
    framework: str
    title: str
    status: Literal["passing", "failing", "manual"]
    checks: list[CheckOut]
    evidence: list[dict[str, Any]]


class ControlStateOut(Out):
    """One stretch of a control's status: from `started_at` (the evaluation that found
    it) to `last_evaluated_at` (the last that confirmed it)."""

    id: str
    framework: str
    control_id: str
    status: str
    checks: list[dict[str, Any]]
    started_at: datetime
    last_evaluated_at: datetime
    evaluations: int


class AttestationIn(In):
    """Who states that a manual control operates is the caller; when is now."""

    framework: Framework
    control: Annotated[str, StringConstraints(min_length=1, max_length=40)]
    statement: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=5000)
    ]
    evidence_url: (
        Annotated[str, StringConstraints(max_length=2000, pattern=r"^https://\S+$")] | None
    ) = None
    document_sha256: Sha256 | None = None
    valid_until: Timestamp | None = None


class AttestationOut(Out):
    id: str
    framework: str
    control_id: str
    statement: str
    evidence_url: str | None
    document_sha256: str | None
    attested_by: str
    attested_by_type: str
    attested_at: datetime
    valid_until: datetime | None


class ReportIn(In):
    framework: Framework
    format: Literal["json", "html", "pdf"] = "json"


class ReportOut(Out):
    id: str
    format: str
    content: str = Field(description="The report: text for json and html, base64 for pdf.")
    sha256: str = Field(description="SHA-256 of the content's bytes (hex).")
    signature: str = Field(
        description="Ed25519 over the 32-byte SHA-256 digest, base64url without padding."
    )
    kid: str = Field(description="The signing key's `kid` in `/.well-known/jwks.json`.")


class Reviewers(In):
    users: Annotated[
        list[Annotated[str, StringConstraints(max_length=40)]], Field(max_length=100)
    ] = Field(default_factory=list)
    roles: Annotated[
        list[Annotated[str, StringConstraints(max_length=200)]], Field(max_length=20)
    ] = Field(default_factory=list)


class AccessReviewIn(In):
    name: Name
    scope: Annotated[list[Scope], Field(min_length=1, max_length=5)]
    reviewers: Reviewers
    due_at: Timestamp
    on_due: Literal["revoke", "keep"]
    recurrence: Literal["monthly", "quarterly", "semiannual", "yearly"] | None = None


class ItemCounts(Out):
    total: int
    decided: int
    kept: int
    revoked: int


class AccessReviewOut(Out):
    id: str
    name: str
    scope: list[str]
    reviewers: dict[str, list[str]]
    due_at: datetime
    on_due: str
    recurrence: str | None
    status: Literal["open", "completed"]
    previous_id: str | None
    created_by: str | None
    created_at: datetime
    completed_at: datetime | None
    items: ItemCounts


class AccessReviewItemOut(Out):
    id: str
    review_id: str
    kind: str
    subject_id: str
    subject_name: str
    access: dict[str, Any]
    decision: Literal["keep", "revoke"] | None
    comment: str | None
    decided_by: str | None
    decided_at: datetime | None
    on_due: bool
    effect: str | None


class DecisionIn(In):
    decision: Literal["keep", "revoke"]
    comment: Annotated[str, StringConstraints(max_length=2000)] | None = None

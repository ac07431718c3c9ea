"""Request and response bodies of the privacy API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, Strict, field_validator, model_validator

from bastion.core.schemas import In, Out
from bastion.privacy.redaction import Mode
from bastion.privacy.service import MAX_TEXT_CHARS, MAX_TEXTS, MAX_TOTAL_CHARS
from bastion.privacy.types import EntityType

Type = Annotated[EntityType, Strict(False)]  # JSON text, not a Python enum member
Texts = Annotated[
    list[Annotated[str, Field(max_length=MAX_TEXT_CHARS)]],
    Field(min_length=1, max_length=MAX_TEXTS, description=f"1 to {MAX_TEXTS} texts"),
]


class _TextsIn(In):
    model_config = ConfigDict(extra="forbid", strict=True, str_max_length=MAX_TEXT_CHARS)

    texts: Texts

    @field_validator("texts")
    @classmethod
    def _total(cls, texts: list[str]) -> list[str]:
        if sum(map(len, texts)) > MAX_TOTAL_CHARS:
            raise ValueError(f"at most {MAX_TOTAL_CHARS} characters in all")
        return texts


class ScanIn(_TextsIn):
    types: Annotated[list[Type], Field(min_length=1, max_length=len(EntityType))] | None = None


class RedactIn(ScanIn):
    mode: Annotated[Mode, Strict(False)]


class DetokenizeIn(_TextsIn):
    pass


class FindingOut(Out):
    type: EntityType
    start: int = Field(description="Offset of the first code point (Unicode code points)")
    end: int = Field(description="Offset after the last code point")
    score: float


class ScanResult(Out):
    findings: list[FindingOut]


class ScanOut(Out):
    results: list[ScanResult]


class RedactResult(Out):
    text: str
    findings: list[FindingOut]


class RedactOut(Out):
    results: list[RedactResult]


class DetokenizeResult(Out):
    text: str


class DetokenizeOut(Out):
    results: list[DetokenizeResult]
    restored: int = Field(description="Tokens turned back, in all texts")


class TypeOut(Out):
    name: EntityType
    description: str
    structured: bool = Field(description="Found by a pattern and a validator (not a name model)")


class TypesOut(Out):
    data: list[TypeOut]
    engine: str = Field(description="The pattern engine in use: hyperscan, or re")


# --- data policies ---------------------------------------------------------------------

AppliesTo = Literal["tool_arguments", "tool_results", "audit_metadata", "webhook_payloads"]
Action = Literal["redact", "deny", "require_approval"]
PolicyTypes = Annotated[list[Type], Field(min_length=1, max_length=len(EntityType))]
Name = Annotated[str, Field(min_length=1, max_length=200)]


class PolicyIn(In):
    name: Name
    applies_to: AppliesTo = Field(
        description="Where it applies; `tool_results`: deny or redact; `audit_metadata` and "
        "`webhook_payloads`: redact only"
    )
    types: PolicyTypes
    action: Action


class PolicyPatch(In):
    name: Name | None = None
    applies_to: AppliesTo | None = None
    types: PolicyTypes | None = None
    action: Action | None = None


class PolicyOut(Out):
    id: str
    name: str
    applies_to: str
    types: list[str]
    action: str
    created_at: datetime
    updated_at: datetime


class PoliciesOut(Out):
    data: list[PolicyOut]


# --- retention -------------------------------------------------------------------------


class RetentionIn(In):
    audit_events_days: Annotated[int, Field(ge=30, le=3650)] | None = None
    tool_calls_days: Annotated[int, Field(ge=1, le=3650)] | None = None
    webhook_events_days: Annotated[int, Field(ge=1, le=3650)] | None = None
    deleted_objects_days: Annotated[int, Field(ge=1, le=3650)] | None = None
    run_artifacts_hours: Annotated[int, Field(ge=1, le=8760)] | None = None


class RetentionOut(Out):
    audit_events_days: int = Field(
        description="Audit events older than this are purged "
        "(through a signed checkpoint: verification still works)"
    )
    tool_calls_days: int
    webhook_events_days: int
    deleted_objects_days: int
    run_artifacts_hours: int


# --- subject requests --------------------------------------------------------------------


class SubjectRequestIn(In):
    kind: Literal["access", "erasure"]
    user_id: Annotated[str, Field(min_length=1, max_length=40)] | None = None
    email: Annotated[str, Field(min_length=3, max_length=320)] | None = None

    @model_validator(mode="after")
    def _one_subject(self) -> SubjectRequestIn:
        if (self.user_id is None) == (self.email is None):
            raise ValueError("give exactly one of user_id and email")
        return self


class SubjectRequestOut(Out):
    id: str
    kind: str
    status: str
    subject_id: str
    result: dict[str, Any]
    created_at: datetime
    completed_at: datetime | None

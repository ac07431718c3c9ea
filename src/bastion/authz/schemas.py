from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, Self

from pydantic import Field, StringConstraints, field_validator, model_validator

from bastion.core.schemas import Description, In, Name, Out, Timestamp

RoleName = Annotated[Name, StringConstraints(max_length=100, pattern=r"^[\w .:-]+$")]


class PermissionOut(Out):
    name: str
    description: str


class RoleCreate(In):
    name: RoleName
    description: Description = ""
    permissions: Annotated[list[str], Field(max_length=200)]


class RoleUpdate(In):
    name: RoleName | None = None
    description: Description | None = None
    permissions: Annotated[list[str], Field(max_length=200)] | None = None


class RoleOut(Out):
    id: str
    name: str
    description: str
    permissions: list[str]
    builtin: bool


# --- sources, documents, rules and checks -------------------------------------------

PrincipalId = Annotated[str, StringConstraints(min_length=3, max_length=40)]
ResourceRef = Annotated[str, StringConstraints(min_length=3, max_length=60)]
Action = Annotated[str, StringConstraints(min_length=1, max_length=20)]
ResourceType = Literal["source", "document"]
QueryType = Literal["source", "document", "agent"]
Relation = Literal["reader", "editor", "owner"]


class SourceIn(In):
    name: Name


class SourceOut(Out):
    id: str
    name: str
    created_by: str | None
    created_at: datetime


class AclIn(In):
    relation: Relation
    expires_at: Timestamp | None = Field(default=None, description="Stops counting then.")


class AclEntryIn(In):
    principal: PrincipalId
    relation: Relation
    expires_at: Timestamp | None = None


class AclEntryOut(Out):
    principal: str
    relation: str
    expires_at: datetime | None


class DocumentAclIn(In):
    inherit: bool = Field(default=True, description="Also apply the source's ACL.")
    entries: Annotated[list[AclEntryIn], Field(max_length=500)] = Field(default_factory=list)


class DocumentIn(In):
    external_id: Annotated[str, StringConstraints(min_length=1, max_length=500)]
    metadata: dict[str, Any] = Field(default_factory=dict)
    acl: DocumentAclIn | None = None


class DocumentPatch(In):
    metadata: dict[str, Any] | None = None
    inherit: bool | None = None


class DocumentOut(Out):
    id: str
    source_id: str
    external_id: str
    metadata: dict[str, Any]
    inherit: bool
    acl: list[AclEntryOut]
    created_at: datetime
    updated_at: datetime


class RuleIn(In):
    effect: Literal["allow", "deny"]
    action: Literal["read", "edit", "share", "delete", "manage"]
    resource_type: ResourceType
    condition: Annotated[str, StringConstraints(min_length=1, max_length=4000)] = Field(
        description="CEL over resource.metadata, subject.attributes, subject.teams."
    )


class RuleOut(Out):
    id: str
    effect: str
    action: str
    resource_type: str
    condition: str
    created_at: datetime


class _OnBehalf(In):
    subject: PrincipalId
    on_behalf_of: PrincipalId | None = Field(
        default=None,
        description="The user an agent `subject` acts for: allowed only if both are.",
    )

    @field_validator("on_behalf_of")
    @classmethod
    def _a_user(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("usr_"):
            raise ValueError("must be a user (`usr_…`): an agent acts for a person")
        return value

    @model_validator(mode="after")
    def _agent_acts_for_a_user(self) -> Self:
        if self.on_behalf_of is not None and not self.subject.startswith("agt_"):
            raise ValueError("on_behalf_of needs an agent (`agt_…`) as the subject")
        return self


class CheckIn(_OnBehalf):
    action: Action
    resource: ResourceRef = Field(
        description="`document:doc_…`, `source:src_…`, `agent:agt_…` or a bare id."
    )
    explain: bool = False


class CheckOut(Out):
    allowed: bool
    reason: str
    trace: list[str] | None = None


class CheckBatchIn(In):
    checks: Annotated[list[CheckIn], Field(min_length=1, max_length=100)]


class CheckBatchOut(Out):
    results: list[CheckOut]


class FilterIn(_OnBehalf):
    action: Action
    resource_type: QueryType
    resource_ids: Annotated[list[ResourceRef], Field(max_length=1000)]


class FilterOut(Out):
    allowed_ids: list[str]


class ListIn(_OnBehalf):
    action: Action
    resource_type: QueryType
    limit: Annotated[int, Field(ge=1, le=1000)] = 100
    cursor: Annotated[str, StringConstraints(max_length=60)] | None = None


class SearchFilterIn(_OnBehalf):
    action: Literal["read"] = "read"


class RuleRef(Out):
    id: str
    condition: str


class SearchFilterOut(Out):
    acl_tokens: list[str]
    allow_rules: list[RuleRef]
    deny_rules: list[RuleRef]
    subject: dict[str, Any] | None
    required_tokens: list[str] | None = Field(
        default=None,
        description="With `on_behalf_of`: a document's tokens must also intersect these "
        "(the sources connected to the agent).",
    )
    agent: dict[str, Any] | None = Field(
        default=None,
        description="With `on_behalf_of`: the agent's context; `deny_rules` must not "
        "match it either.",
    )


class TokensOut(Out):
    tokens: list[str]
    valid_until: datetime | None = Field(description="Re-index by then: an entry expires.")


class EngineStatsOut(Out):
    """Counters of the answering worker's engine since it started."""

    decisions: int
    index_builds: int
    rule_errors: int = Field(description="Decisions refused by a rule that failed to evaluate.")
    orgs: int = Field(description="Organisation indexes held in memory.")
    max_orgs: int
    entries: int = Field(description="Users, sources, documents and ACL entries held.")
    memoized: int = Field(0, description="Rule outcomes remembered by the indexes held.")
    listed_ids: int = Field(0, description="Resource ids held in cached list answers.")

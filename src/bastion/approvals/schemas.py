from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, StringConstraints, model_validator

from bastion.core.schemas import In, Name, Out

IdRef = Annotated[str, StringConstraints(min_length=3, max_length=40)]
RoleRef = Annotated[str, StringConstraints(min_length=1, max_length=40)]
ToolName = Annotated[str, StringConstraints(min_length=1, max_length=100)]
Risk = Literal["low", "medium", "high", "critical"]


class Approvers(In):
    """Who may decide: anyone matching any list (and holding `approvals:decide`). All
    empty means every holder of `approvals:decide`."""

    roles: Annotated[list[RoleRef], Field(max_length=20)] = Field(default_factory=list)
    teams: Annotated[list[IdRef], Field(max_length=50)] = Field(default_factory=list)
    users: Annotated[list[IdRef], Field(max_length=200)] = Field(default_factory=list)


class Match(In):
    agents: Annotated[list[IdRef], Field(max_length=200)] | None = Field(
        default=None, description="Agent ids; absent means every agent."
    )
    tools: Annotated[list[ToolName], Field(max_length=200)] | None = Field(
        default=None, description="Tool names; absent means every tool."
    )
    risks: Annotated[list[Risk], Field(max_length=4)] | None = Field(
        default=None, description="Tool risk levels; absent means any."
    )
    condition: Annotated[str, StringConstraints(min_length=1, max_length=4000)] | None = Field(
        default=None,
        description="CEL over `arguments`, `agent` (id, name), `tool` (name, risk) and "
        "`user` (id, role, teams). An error while evaluating denies the call.",
    )


Seconds = Annotated[int, Field(ge=1, le=30 * 86_400)]


class PolicyIn(In):
    name: Name
    match: Match = Field(default_factory=Match)
    decision: Literal["allow", "deny", "require_approval"]
    approvers: Approvers = Field(default_factory=Approvers)
    quorum: Annotated[int, Field(ge=1, le=20)] = 1
    expires_in: Seconds = 3600
    escalate_after: Seconds | None = None
    escalate_to: Approvers | None = None
    allow_self_approval: bool = Field(
        default=False,
        description="May the user the run acts for, or whoever started the run, approve it?",
    )

    @model_validator(mode="after")
    def _escalation(self) -> PolicyIn:
        if (self.escalate_after is None) != (self.escalate_to is None):
            raise ValueError("escalate_after and escalate_to go together")
        if self.escalate_after is not None and self.escalate_after >= self.expires_in:
            raise ValueError("escalate_after must be shorter than expires_in")
        return self


class PolicyUpdate(In):
    """The fields to change; the result is validated as a whole, as on create.
    `escalate_after` and `escalate_to` set to null together remove escalation."""

    name: Name | None = None
    match: Match | None = None
    decision: Literal["allow", "deny", "require_approval"] | None = None
    approvers: Approvers | None = None
    quorum: Annotated[int, Field(ge=1, le=20)] | None = None
    expires_in: Seconds | None = None
    escalate_after: Seconds | None = None
    escalate_to: Approvers | None = None
    allow_self_approval: bool | None = None


class PolicyOut(Out):
    id: str
    org_id: str
    name: str
    match: dict[str, Any]
    decision: str
    approvers: dict[str, Any]
    quorum: int
    expires_in: int
    escalate_after: int | None
    escalate_to: dict[str, Any] | None
    allow_self_approval: bool
    tool_digests: dict[str, str] = Field(
        description="`agt_…:tool` → the tool definition digest this policy was approved "
        "for; an `allow` does not apply to a tool whose definition changed since."
    )
    created_at: datetime
    updated_at: datetime


class DecisionIn(In):
    decision: Literal["approve", "deny"]
    comment: Annotated[str, StringConstraints(max_length=2000)] = ""


class DecisionOut(Out):
    approver_id: str
    decision: str
    comment: str
    created_at: datetime


class ApprovalOut(Out):
    id: str
    org_id: str
    run_id: str
    call_id: str
    agent_id: str
    tool: str
    arguments: Any = Field(description="The call's arguments, for the approvers to judge.")
    policy_id: str | None
    requested_for: str | None
    status: str = Field(description="`pending`, `approved`, `denied` or `expired`.")
    quorum: int
    approvals: int
    approvers: dict[str, Any]
    escalate_to: dict[str, Any]
    escalate_at: datetime | None
    escalated: bool
    expires_at: datetime
    reason: str
    decisions: list[DecisionOut]
    created_at: datetime
    decided_at: datetime | None


class SlackIn(In):
    """The organisation's Slack app (approvals in Slack); secrets sealed in the vault."""

    team_id: Annotated[str, StringConstraints(pattern=r"^T[A-Z0-9]{2,38}$")] = Field(
        description="The Slack workspace (`T…`): interactions name it as `team.id`."
    )
    signing_secret: Annotated[SecretStr, Field(min_length=16, max_length=200)] = Field(
        description="The app's signing secret: verifies Slack's interaction requests."
    )
    bot_token: Annotated[SecretStr, Field(min_length=8, max_length=300)] | None = Field(
        default=None,
        description="The app's bot token (`xoxb-…`, scope `chat:write`): posts approvers' "
        "messages. Absent: the one saved before is kept.",
    )

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, model_validator

from bastion.core.schemas import Description, In, Name, Out, SecretName

ToolName = Annotated[
    str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")
]
Connection = Annotated[
    str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")
]
Risk = Literal["low", "medium", "high", "critical"]
Visibility = Literal["private", "team", "org", "public"]
TeamId = Annotated[str, StringConstraints(min_length=3, max_length=40)]
IdRef = Annotated[str, StringConstraints(min_length=3, max_length=40)]


class ToolIn(In):
    name: ToolName
    description: Annotated[str, StringConstraints(max_length=2000)] = ""
    input_schema: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object"},
        description="JSON Schema (2020-12) the call's arguments must satisfy.",
    )
    risk: Risk = "low"
    connection: Connection | None = Field(
        default=None, description="The connected system the tool acts in, if any."
    )


class AgentIn(In):
    name: Name | None = None
    description: Annotated[str, StringConstraints(max_length=2000)] = ""
    visibility: Visibility = "private"
    team_ids: Annotated[list[TeamId], Field(max_length=50)] = Field(default_factory=list)
    tools: Annotated[list[ToolIn], Field(max_length=200)] = Field(default_factory=list)
    connections: Annotated[list[Connection], Field(max_length=100)] = Field(
        default_factory=list,
        description="Systems the agent may act in: data sources (`src_…`) and named "
        "integrations (`github`, `stripe`, …).",
    )
    secrets: Annotated[list[SecretName], Field(max_length=100)] = Field(
        default_factory=list, description="Names of secrets the agent's runs may reveal."
    )
    from_hub: IdRef | None = Field(
        default=None, description="Clone this public agent (`agt_…`) into the organisation."
    )

    @model_validator(mode="after")
    def _name_unless_cloning(self) -> AgentIn:
        if self.from_hub is None and self.name is None:
            raise ValueError("name is required unless from_hub is given")
        return self


class AgentPatch(In):
    name: Name | None = None
    description: Annotated[str, StringConstraints(max_length=2000)] | None = None
    visibility: Visibility | None = None
    team_ids: Annotated[list[TeamId], Field(max_length=50)] | None = None
    tools: Annotated[list[ToolIn], Field(max_length=200)] | None = None
    connections: Annotated[list[Connection], Field(max_length=100)] | None = None
    secrets: Annotated[list[SecretName], Field(max_length=100)] | None = None


class HubToolOut(Out):
    """A tool as the hub publishes it: its definition, not the system it is connected to."""

    name: str
    description: str
    input_schema: dict[str, Any]
    risk: str
    digest: str = Field(description="SHA-256 of the tool's definition.")


class ToolOut(HubToolOut):
    connection: str | None = None


class AgentOut(Out):
    id: str
    org_id: str
    name: str
    description: str
    owner_id: str
    visibility: str
    team_ids: list[str]
    tools: list[ToolOut]
    connections: list[str]
    secrets: list[str]
    cloned_from: str | None
    version: int
    created_at: datetime
    updated_at: datetime


class HubAgentOut(Out):
    """A public agent's published definition: no secrets, no connections."""

    id: str
    org_id: str
    name: str
    description: str
    tools: list[HubToolOut]
    version: int
    updated_at: datetime


class RunIn(In):
    on_behalf_of: IdRef | None = Field(
        default=None, description="The user the run acts for (default: the caller)."
    )
    workflow_id: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None
    ttl_seconds: Annotated[int, Field(ge=10, le=86_400)] = 3600
    max_tool_calls: Annotated[int, Field(ge=1, le=100_000)] = 1000
    max_pending_approvals: Annotated[int, Field(ge=1, le=1000)] = 10


class RunStarted(Out):
    run_id: str
    token: str = Field(description="The run's `bat_…` token; shown once.")
    expires_at: datetime


class RunOut(Out):
    id: str
    org_id: str
    agent_id: str
    started_by: str
    on_behalf_of: str | None
    workflow_id: str | None
    status: str = Field(description="`active`, `expired` or `revoked`.")
    expires_at: datetime
    revoked_at: datetime | None
    max_tool_calls: int
    max_pending_approvals: int
    tool_calls: int
    created_at: datetime


class ToolCallIn(In):
    tool: ToolName
    arguments: dict[str, Any] = Field(default_factory=dict)
    connection: Connection | None = Field(
        default=None, description="The connected system this call acts in, if any."
    )


class ToolCallOut(Out):
    id: str
    run_id: str
    tool: str
    decision: str = Field(description="`allow`, `deny` or `pending`.")
    approval_id: str | None = None
    reason: str
    arguments_digest: str
    created_at: datetime
    decided_at: datetime | None = None


# --- workflows ---------------------------------------------------------------------


class WorkflowIn(In):
    name: Name
    description: Description = ""
    agent_ids: Annotated[list[IdRef], Field(max_length=500)] = Field(
        default_factory=list,
        description="Agents (`agt_…`) whose runs may be bound to this workflow.",
    )


class WorkflowPatch(In):
    name: Name | None = None
    description: Description | None = None
    agent_ids: Annotated[list[IdRef], Field(max_length=500)] | None = None


class WorkflowOut(Out):
    id: str
    org_id: str
    name: str
    description: str
    agent_ids: list[str]
    created_by: str
    created_at: datetime
    updated_at: datetime

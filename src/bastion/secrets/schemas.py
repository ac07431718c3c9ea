from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field, SecretStr, StringConstraints

from bastion.core.schemas import Description, In, Out

ScopeId = Annotated[str, StringConstraints(min_length=1, max_length=64)]
SecretName = Annotated[
    str, StringConstraints(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:/-]+$")
]


class SecretScopeIn(In):
    workflow_id: ScopeId | None = None
    run_id: ScopeId | None = None


class SecretPut(In):
    value: SecretStr = Field(description="The new value (never returned by metadata).")
    description: Description | None = None
    scope: SecretScopeIn | None = Field(
        default=None, description="Override for one workflow or run (run > workflow > org)."
    )


class SecretVersionOut(Out):
    version: int
    created_at: datetime


class SecretScopeOut(Out):
    id: str
    scope: str = Field(description="org, workflow or run")
    scope_id: str | None
    description: str
    current_version: int
    versions: list[SecretVersionOut]
    updated_at: datetime


class SecretOut(Out):
    name: str
    scopes: list[SecretScopeOut]


class SecretWritten(Out):
    name: str
    version: int
    scope: str
    scope_id: str | None


class SecretSummary(Out):
    name: str
    scope: str
    scope_id: str | None
    current_version: int
    description: str
    updated_at: datetime


class RevealIn(In):
    version: Annotated[int, Field(ge=1)] | None = None
    workflow_id: ScopeId | None = None
    run_id: ScopeId | None = None


class RevealOut(Out):
    value: str
    version: int
    scope: str
    scope_id: str | None

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field

from bastion.core.schemas import Description, In, Name, Out

Seconds = Annotated[int, Field(ge=60, le=30 * 24 * 3600)]


class OrgOut(Out):
    id: str
    name: str
    status: str
    session_idle_timeout: int | None = Field(description="Seconds; null uses the instance default.")
    session_absolute_timeout: int | None
    audit_retention_days: int = Field(description="Audit events older than this are purged.")
    created_at: datetime


class OrgUpdate(In):
    name: Name | None = None
    session_idle_timeout: Seconds | None = None
    session_absolute_timeout: Seconds | None = None
    audit_retention_days: Annotated[int, Field(ge=30, le=3650)] | None = None


class TeamCreate(In):
    name: Name
    description: Description = ""


class TeamUpdate(In):
    name: Name | None = None
    description: Description | None = None


class TeamOut(Out):
    id: str
    org_id: str
    name: str
    description: str
    created_at: datetime


class TeamDetail(TeamOut):
    member_ids: list[str]

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

from bastion.core.schemas import Description, In, Out

RoleName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=100, pattern=r"^[\w .:-]+$"),
]


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

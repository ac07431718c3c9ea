from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import EmailStr, Field, SecretStr, StringConstraints

from bastion.core.schemas import Description, DisplayName, In, Name, Out, Timestamp

Password = Annotated[SecretStr, Field(min_length=1, max_length=1024)]
RoleRef = Annotated[
    str,
    StringConstraints(min_length=1, max_length=100),
    Field(
        description="A built-in role (admin, manager, member, viewer) or a custom role id or name."
    ),
]


class LoginIn(In):
    email: Annotated[str, StringConstraints(min_length=1, max_length=320)]
    password: Password


class LoginOut(Out):
    token: str = Field(description="Session token (`bss_…`); send as `Authorization: Bearer`.")
    expires_at: datetime
    user_id: str


class SetupIn(In):
    token: Annotated[SecretStr, Field(min_length=1, max_length=512)]
    password: Password


class PasswordChangeIn(In):
    current_password: Password
    new_password: Password


class PasswordResetIn(In):
    email: Annotated[str, StringConstraints(min_length=1, max_length=320)]


class PasswordResetConfirmIn(In):
    token: Annotated[SecretStr, Field(min_length=1, max_length=512)]
    password: Password


class SetupOut(Out):
    user_id: str


class MeOut(Out):
    principal_type: Literal["user", "api_key", "service_account", "agent_run"]
    id: str
    org_id: str
    role: str
    permissions: list[str]
    user_id: str | None = None
    session_id: str | None = None


class SessionOut(Out):
    id: str
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    ip: str | None
    user_agent: str | None
    current: bool = False


class UserCreate(In):
    email: EmailStr
    name: DisplayName = ""
    role: RoleRef
    password: Password | None = None


class UserUpdate(In):
    name: DisplayName | None = None
    role: RoleRef | None = None
    status: Literal["active", "suspended"] | None = None
    attributes: dict[str, Any] | None = Field(
        default=None, description="Free-form attributes used by metadata rules (ABAC)."
    )


class UserOut(Out):
    id: str
    org_id: str
    email: str
    name: str
    role: str
    status: str
    attributes: dict[str, Any]
    last_login_at: datetime | None
    created_at: datetime


class UserCreated(UserOut):
    setup_token: str | None = Field(
        default=None, description="Only for invited users; shown once; valid 72 hours."
    )


class GrantCreate(In):
    role: RoleRef
    expires_at: Timestamp
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1000)]


class GrantOut(Out):
    id: str
    user_id: str
    role: str
    reason: str
    expires_at: datetime
    granted_by: str | None
    revoked_at: datetime | None
    created_at: datetime
    active: bool


class ApiKeyCreate(In):
    name: Name
    role: RoleRef | None = None
    expires_at: Timestamp | None = None
    service_account_id: str | None = None


class ApiKeyOut(Out):
    id: str
    name: str
    prefix: str
    role: str
    status: Literal["active", "expired", "revoked"]
    user_id: str | None
    service_account_id: str | None
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    rotated_to: str | None
    created_at: datetime


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The secret key. Shown in this response only.")


class RotateIn(In):
    overlap_seconds: Annotated[int, Field(ge=0, le=7 * 24 * 3600)] = 0


class ServiceAccountCreate(In):
    name: Name
    role: RoleRef
    description: Description = ""


class ServiceAccountUpdate(In):
    name: Name | None = None
    role: RoleRef | None = None
    description: Description | None = None
    status: Literal["active", "suspended"] | None = None


class ServiceAccountOut(Out):
    id: str
    name: str
    description: str
    role: str
    status: str
    created_at: datetime

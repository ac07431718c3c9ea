from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, StringConstraints

from bastion.core import mfa
from bastion.core.schemas import Description, In, Name, Out

Seconds = Annotated[int, Field(ge=60, le=30 * 24 * 3600)]
MfaPolicy = Literal["optional", "admins", "all"]
MfaMethod = Literal["totp", "webauthn"]


def _methods(value: Any) -> Any:
    return list(mfa.allowed(value)) if value is None else value


Cidr = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]


class PasswordPolicyOut(Out):
    min_length: int = Field(description="Minimum length of a new password.")
    breached_check: bool = Field(description="Refuse passwords in the bundled breached list.")


class PasswordPolicyIn(In):
    """Only the fields given change."""

    min_length: Annotated[int, Field(ge=8, le=128)] | None = None
    breached_check: bool | None = None


class OrgOut(Out):
    id: str
    name: str
    status: str
    region: str = Field(
        description="The region whose database holds every row of the organisation "
        "(data residency), fixed at creation; `default` with one region."
    )
    session_idle_timeout: int | None = Field(description="Seconds; null uses the instance default.")
    session_absolute_timeout: int | None
    audit_retention_days: int = Field(description="Audit events older than this are purged.")
    mfa_policy: MfaPolicy = Field(description="Who must use a second factor.")
    mfa_methods: Annotated[list[str], BeforeValidator(_methods)] = Field(
        description="The factor kinds members may enrol and sign in with."
    )
    step_up_max_age: int = Field(
        description="Seconds a verification counts for sensitive actions (step-up)."
    )
    step_up_refuses_admin_keys: bool = Field(
        description="Refuse admin-role API keys the actions that need step-up of a person "
        "(keys are not people: step-up does not apply to them)."
    )
    password_policy: PasswordPolicyOut
    max_sessions_per_user: int | None = Field(
        description="Parallel sessions per user; a new sign-in past it ends the oldest. "
        "Null: unlimited."
    )
    ip_allowlist: list[str] = Field(
        description="CIDR networks every credential of the organisation must come from; "
        "empty: any address."
    )
    sso_enforced: bool = Field(
        description="Users of the organisation's verified domains must sign in with SSO "
        "(password sign-in answers 401 `sso_required`)."
    )
    sso_break_glass: bool = Field(
        description="With `sso_enforced`, admins keep a password + second-factor sign-in."
    )
    created_at: datetime


class OrgUpdate(In):
    name: Name | None = None
    region: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]{0,31}$")] | None = Field(
        default=None,
        description="Fixed at creation: the same region is accepted, another is 409.",
    )
    session_idle_timeout: Seconds | None = None
    session_absolute_timeout: Seconds | None = None
    audit_retention_days: Annotated[int, Field(ge=30, le=3650)] | None = None
    mfa_policy: MfaPolicy | None = None
    mfa_methods: Annotated[list[MfaMethod], Field(min_length=1, max_length=2)] | None = None
    step_up_max_age: Annotated[int, Field(ge=30, le=24 * 3600)] | None = None
    step_up_refuses_admin_keys: bool | None = None
    password_policy: PasswordPolicyIn | None = None
    max_sessions_per_user: Annotated[int, Field(ge=1, le=1000)] | None = None
    ip_allowlist: Annotated[list[Cidr], Field(max_length=200)] | None = None
    sso_enforced: bool | None = None
    sso_break_glass: bool | None = None
    confirm_lockout: bool = Field(
        default=False,
        description="Save an IP allowlist that excludes the caller's own address.",
    )


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

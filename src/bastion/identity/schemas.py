from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, EmailStr, Field, SecretStr, StringConstraints

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


class MfaRequiredOut(Out):
    """The password was right; a second factor is owed before a session."""

    mfa_required: Literal[True] = True
    mfa_token: str = Field(description="For `POST /v1/auth/mfa`; 5 minutes, 5 wrong codes.")
    methods: list[str] = Field(description="What the person may answer with.")


class MfaEnrolmentOut(Out):
    """The password was right, the organisation requires a factor, the person has none."""

    mfa_enrolment_required: Literal[True] = True
    mfa_token: str = Field(
        description="Bearer of the `/v1/me/mfa…` enrolment endpoints only; 5 minutes. "
        "Once a factor is confirmed, sign in again."
    )


MfaToken = Annotated[SecretStr, Field(min_length=1, max_length=512)]
Code = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]


# WebAuthn responses as browsers serialise them (`PublicKeyCredential.toJSON()`):
# base64url fields; members a browser adds that Bastion does not use are ignored.
B64Url = Annotated[
    str, StringConstraints(min_length=1, max_length=16_384, pattern=r"^[A-Za-z0-9_-]+={0,2}$")
]


class _Browser(In):
    model_config = ConfigDict(extra="ignore", str_max_length=20_000)


class AssertionResponseIn(_Browser):
    client_data_json: B64Url = Field(alias="clientDataJSON")
    authenticator_data: B64Url = Field(alias="authenticatorData")
    signature: B64Url
    user_handle: B64Url | None = Field(default=None, alias="userHandle")


class AssertionIn(_Browser):
    """What `navigator.credentials.get()` returned, as JSON."""

    id: B64Url
    raw_id: B64Url = Field(alias="rawId")
    type: Literal["public-key"]
    response: AssertionResponseIn

    def as_json(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)


class AttestationResponseIn(_Browser):
    client_data_json: B64Url = Field(alias="clientDataJSON")
    attestation_object: B64Url = Field(alias="attestationObject")
    transports: list[Annotated[str, StringConstraints(max_length=32)]] = Field(
        default_factory=list, max_length=16
    )


class RegistrationIn(_Browser):
    """What `navigator.credentials.create()` returned, as JSON."""

    id: B64Url
    raw_id: B64Url = Field(alias="rawId")
    type: Literal["public-key"]
    response: AttestationResponseIn

    def as_json(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)


class MfaIn(In):
    mfa_token: MfaToken
    method: Literal["totp", "recovery_code", "webauthn"]
    code: Code | None = Field(default=None, description="For `totp` and `recovery_code`.")
    credential: AssertionIn | None = Field(
        default=None, description="For `webauthn`: the assertion, answering the options of "
        "`POST /v1/auth/mfa/webauthn-options`.",
    )  # fmt: skip


class StepUpIn(In):
    method: Literal["totp", "recovery_code", "webauthn", "password"]
    code: Code | None = None
    password: Password | None = None
    credential: AssertionIn | None = Field(
        default=None,
        description="For `webauthn`: answering `POST /v1/auth/step-up/webauthn-options`.",
    )


class MfaOptionsIn(In):
    mfa_token: MfaToken


class PasskeyIn(In):
    credential: AssertionIn


class WebAuthnRegisterIn(In):
    name: Name = "Passkey"
    credential: RegistrationIn


class WebAuthnRegisteredOut(Out):
    factor_id: str
    recovery_codes: list[str] = Field(
        description="Ten one-time codes with the person's first factor, shown once; else empty."
    )


class StepUpOut(Out):
    auth_time: datetime
    amr: list[str]


class TotpEnrolIn(In):
    name: DisplayName = "Authenticator app"


class TotpEnrolOut(Out):
    factor_id: str
    secret: str = Field(description="Base32 shared secret. Shown in this response only.")
    otpauth_uri: str = Field(description="`otpauth://totp/…` for an authenticator app.")


class TotpConfirmIn(In):
    code: Code


class RecoveryCodesOut(Out):
    recovery_codes: list[str] = Field(
        description="Ten one-time codes, shown once; empty when confirming a later factor."
    )


class FactorOut(Out):
    id: str
    kind: str
    name: str
    status: Literal["pending", "active"]
    transports: list[str] | None = Field(default=None, description="WebAuthn: as the browser said.")
    aaguid: str | None = Field(default=None, description="WebAuthn: the authenticator's model.")
    created_at: datetime
    confirmed_at: datetime | None
    last_used_at: datetime | None


class MfaStatusOut(Out):
    data: list[FactorOut]
    next_cursor: str | None = None
    recovery_codes_remaining: int
    mfa_required: bool = Field(description="Whether the organisation's policy requires a factor.")


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
    amr: list[str] | None = Field(
        default=None, description="Sessions: how the person signed in (RFC 8176 values)."
    )
    auth_time: datetime | None = Field(
        default=None, description="Sessions: the last verification (sign-in or step-up)."
    )


class SessionOut(Out):
    id: str
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    ip: str | None
    user_agent: str | None
    amr: list[str]
    auth_time: datetime
    current: bool = False


class UserCreate(In):
    email: EmailStr
    name: DisplayName = ""
    role: RoleRef
    password: Password | None = None


SlackUserId = Annotated[
    str,
    StringConstraints(pattern=r"^[UW][A-Z0-9]{2,38}$"),
    Field(description="A Slack user id (`U…` or `W…`); null unlinks."),
]


class UserUpdate(In):
    name: DisplayName | None = None
    slack_user_id: SlackUserId | None = None
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
    slack_user_id: str | None = Field(
        default=None, description="The linked Slack user: their clicks in Slack act as this user."
    )
    last_login_at: datetime | None
    created_at: datetime


class MeUpdate(In):
    """What a person changes of themselves."""

    slack_user_id: SlackUserId | None = None


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

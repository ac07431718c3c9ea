from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, SecretStr, StringConstraints

from bastion.core.schemas import Description, In, Out

ScopeId = Annotated[str, StringConstraints(min_length=1, max_length=64)]


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


class DataKeyOut(Out):
    """The organisation's data key (`/v1/orgs/{org}/secrets-key`): never key material."""

    active_version: int | None = Field(
        description="The data-key version new secret versions are encrypted under "
        "(null until the first secret is written)."
    )
    older_versions: list[int] = Field(
        description="Older data-key versions still kept: some secret versions are still "
        "encrypted under them. Destroyed when none is."
    )
    pending: int = Field(
        description="Secret versions still encrypted under an older data key; the "
        "servers re-encrypt them in the background."
    )
    total: int = Field(description="Secret versions of the organisation, at every scope.")
    status: Literal["current", "reencrypting"] = Field(
        description="`reencrypting` while an older data key is still kept."
    )


ProviderName = Literal["vault_transit", "pkcs11", "kmip", "aws_kms", "gcp_kms", "azure_key_vault"]


class EncryptionKeyIn(In):
    """`PUT /v1/orgs/{org}/encryption-key`: the organisation's own key (step-up)."""

    provider: ProviderName = Field(
        description="Where the key lives. This release ships `vault_transit` (Vault or "
        "OpenBao Transit) and `pkcs11` (an HSM); the others are refused with 422."
    )
    config: dict[str, Annotated[SecretStr, Field(max_length=4000)]] = Field(
        max_length=20,
        description="How to reach the key, credentials included: sealed, never shown "
        'again. `vault_transit`: `{"address", "token", "key_name", "mount"?: "transit", '
        '"namespace"?}`; `pkcs11`: `{"library", "token_label", "pin", "key_label"}` '
        "(`library` must be listed in `BASTION_PKCS11_LIBRARIES`).",
    )


class EncryptionKeyOut(Out):
    """The organisation's key (`/v1/orgs/{org}/encryption-key`): never its settings."""

    provider: str = Field(description="`local` (the instance root key) or the customer's provider.")
    status: Literal["active", "key_unavailable", "destroyed"] = Field(
        description="As last seen: `key_unavailable` while the key refuses or cannot be "
        "reached (reveals and secret writes answer 503 `key_unavailable`); `destroyed` "
        "when it no longer exists (the secrets are unrecoverable)."
    )
    reason: str | None = Field(
        default=None, description="Why it is not active (`access_denied`, `key_not_found`, …)."
    )
    last_checked_at: datetime | None = Field(
        description="When a server last used or probed the key (null for `local`)."
    )

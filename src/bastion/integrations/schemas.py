from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, SecretStr, StringConstraints

from bastion.core.schemas import In, Out

ProviderName = Literal["github", "slack", "linear", "google", "oauth2"]
# An agent names the integration in its `connections`: the same characters.
IntegrationName = Annotated[
    str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")
]
Scope = Annotated[str, StringConstraints(pattern=r"^[\x21\x23-\x5b\x5d-\x7e]{1,200}$")]


def _url(value: str) -> str:
    parsed = urlsplit(value)
    if parsed.scheme not in ("https", "http") or not parsed.hostname:
        raise ValueError("must be an absolute https:// URL")
    if parsed.username is not None or parsed.password is not None or parsed.fragment:
        raise ValueError("must not carry credentials or a fragment")
    return value


Url = Annotated[
    str, StringConstraints(strip_whitespace=True, max_length=2000), AfterValidator(_url)
]


class IntegrationIn(In):
    name: IntegrationName = Field(description="Unique in the organisation; agents name it.")
    provider: ProviderName
    client_id: Annotated[str, StringConstraints(min_length=1, max_length=500)]
    client_secret: SecretStr = Field(
        min_length=1, max_length=2000, description="Sealed in the vault; never shown again."
    )
    scopes: Annotated[list[Scope], Field(max_length=50)] | None = Field(
        default=None, description="Default: the preset's least-privilege, read-only scopes."
    )
    authorize_url: Url | None = Field(default=None, description="Required for `oauth2`.")
    token_url: Url | None = Field(default=None, description="Required for `oauth2`.")
    revoke_url: Url | None = Field(
        default=None, description="RFC 7009 revocation endpoint (`oauth2`; optional)."
    )


class IntegrationOut(Out):
    id: str
    name: str
    provider: str
    client_id: str
    scopes: list[str]
    authorize_url: str
    token_url: str
    revoke_url: str | None
    redirect_uri: str = Field(description="Register this at the provider.")
    status: Literal["pending", "connected", "disconnected"]
    connected_by: str | None
    connected_at: datetime | None
    expires_at: datetime | None = Field(description="When the current access token expires.")
    last_error: str | None
    created_at: datetime


class TokenOut(Out):
    access_token: str
    expires_at: datetime | None

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from bastion.core.permissions import Permission
from bastion.core.schemas import In, Name, Out

Scope = Annotated[str, StringConstraints(min_length=1, max_length=100)]


class OAuthClientCreate(In):
    name: Name
    scopes: list[Scope] | None = Field(
        default=None,
        max_length=len(Permission),
        description=(
            "The most its tokens may carry: permission names of the catalogue, each held by "
            "the service account's role. Omitted: every permission of that role."
        ),
    )


class OAuthClientOut(Out):
    client_id: str = Field(description="`oac_…`; also the client's `id`.")
    id: str
    name: str
    service_account_id: str
    scopes: list[str] | None
    created_at: datetime
    last_used_at: datetime | None


class OAuthClientCreated(OAuthClientOut):
    client_secret: str = Field(
        description="`boc_…`; shown in this response only, stored as a keyed hash."
    )


class TokenOut(Out):
    access_token: str = Field(description="A JWT (EdDSA) to send as `Authorization: Bearer`.")
    token_type: Literal["Bearer"]
    expires_in: int = Field(description="Seconds until it expires.")
    scope: str | None = Field(default=None, description="Space-separated, when it has one.")


class OAuthErrorOut(Out):
    """RFC 6749 §5.2."""

    error: Literal[
        "invalid_request",
        "invalid_client",
        "invalid_grant",
        "unsupported_grant_type",
        "invalid_scope",
    ]
    error_description: str | None = None


class IntrospectionOut(Out):
    """RFC 7662 §2.2: `{"active": false}` alone for any token the caller may not see."""

    active: bool
    scope: str | None = None
    client_id: str | None = None
    token_type: Literal["Bearer"] | None = None
    exp: int | None = None
    iat: int | None = None
    sub: str | None = None
    aud: str | None = None
    iss: str | None = None
    jti: str | None = None
    org: str | None = None

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field, StringConstraints

from bastion.core.schemas import In, Out

# A server's name prefixes its tools (`name.tool`): no dot in it.
ServerName = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
]
Url = Annotated[str, StringConstraints(min_length=8, max_length=2000)]
HeaderName = Annotated[
    str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
]
HeaderValue = Annotated[
    str, StringConstraints(min_length=1, max_length=4096, pattern=r"^[\t\x20-\x7e]+$")
]
Headers = Annotated[dict[HeaderName, HeaderValue], Field(max_length=20)]
# An integration's name (as `bastion.integrations.schemas.IntegrationName`).
IntegrationName = Annotated[
    str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")
]
INTEGRATION_DOC = (
    "An OAuth integration of the organisation (its name) whose current access token the "
    "gateway adds to every upstream request as `Authorization: Bearer …`, refreshed by "
    "the integrations service; agents never see it. Needs `integrations:use`; not with "
    "a static `Authorization` header."
)


class McpServerIn(In):
    name: ServerName
    url: Url = Field(description="The server's Streamable HTTP endpoint (https://).")
    headers: Headers = Field(
        default_factory=dict,
        repr=False,
        description="Static headers the gateway adds to every upstream request (e.g. "
        "`Authorization`): sealed in the vault, never shown again, never seen by agents.",
    )
    integration: IntegrationName | None = Field(default=None, description=INTEGRATION_DOC)


class McpServerPatch(In):
    name: ServerName | None = None
    url: Url | None = None
    headers: Headers | None = Field(default=None, repr=False, description="Replaces every header.")
    integration: IntegrationName | None = Field(
        default=None, description=INTEGRATION_DOC + " `null` removes it."
    )


class McpServerOut(Out):
    id: str
    org_id: str
    name: str
    url: str
    header_names: list[str] = Field(description="Names of the sealed headers (never values).")
    integration: str | None = Field(
        default=None, description="The OAuth integration whose access token is the bearer."
    )
    version: int
    created_at: datetime
    updated_at: datetime


class McpToolOut(Out):
    """An upstream tool as an agent declares it (`tools` of an agent), ready to copy."""

    name: str = Field(description="`server.tool`: the name agents see through the gateway.")
    description: str
    input_schema: dict[str, object]
    risk: str
    connection: str
    digest: str = Field(description="SHA-256 of this definition: the agent's pin.")

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, SecretStr, StringConstraints, model_validator

from bastion.core.schemas import In, Name, Out

PresetName = Literal["okta", "entra", "google", "onelogin", "auth0"]
ConnectionType = Literal["oidc", "saml"]
Token = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,99}$")


def _http_url(value: str) -> str:
    parsed = urlsplit(value)
    if parsed.scheme not in ("https", "http") or not parsed.hostname:
        raise ValueError("must be an https:// URL")
    if parsed.username is not None or parsed.password is not None or parsed.fragment:
        raise ValueError("must not carry credentials or a fragment")
    return value


def _tenant(value: str) -> str:
    if not _TENANT.fullmatch(value):
        raise ValueError("must be the tenant's name or id (letters, digits, '.' and '-')")
    return value


Url = Annotated[
    str, StringConstraints(strip_whitespace=True, max_length=500), AfterValidator(_http_url)
]
MetadataUrl = Annotated[
    str, StringConstraints(strip_whitespace=True, max_length=2000), AfterValidator(_http_url)
]
Tenant = Annotated[str, StringConstraints(strip_whitespace=True), AfterValidator(_tenant)]
MetadataXml = Annotated[str, StringConstraints(min_length=1, max_length=500_000)]
Scope = Annotated[str, StringConstraints(pattern=r"^[\x21\x23-\x5b\x5d-\x7e]{1,100}$")]


class RoleMapping(In):
    group: Token
    role: Token = Field(description="A built-in role name, or a custom role's id or name.")


class TeamMapping(In):
    group: Token
    team_id: Token


class ConnectionIn(In):
    type: ConnectionType
    name: Name
    preset: PresetName | None = None
    tenant: Tenant | None = Field(
        default=None,
        description="With a preset whose issuer names a tenant (okta, entra, onelogin, "
        "auth0): fills in `issuer`.",
    )
    issuer: Url | None = Field(default=None, description="OIDC issuer (discovery).")
    client_id: Token | None = None
    client_secret: SecretStr | None = Field(
        default=None, max_length=1000, description="Sealed in the vault; never returned."
    )
    scopes: Annotated[list[Scope], Field(max_length=20)] | None = None
    idp_metadata_xml: MetadataXml | None = None
    idp_metadata_url: MetadataUrl | None = None
    groups_attribute: Token | None = None
    role_mapping: Annotated[list[RoleMapping], Field(max_length=200)] = Field(default_factory=list)
    team_mapping: Annotated[list[TeamMapping], Field(max_length=200)] = Field(default_factory=list)
    default_role: Token = "member"
    jit: bool = True
    email_attribute: Token | None = Field(
        default=None,
        description="SAML: the attribute carrying the e-mail address (default: the NameID "
        "in emailAddress format, else the common attribute names).",
    )
    allow_idp_initiated: bool = Field(
        default=False,
        description="SAML: accept sign-ins started at the IdP (unsolicited responses). "
        "Off by default: they cannot be bound to the browser that signs in.",
    )

    @model_validator(mode="after")
    def _saml_metadata(self) -> ConnectionIn:
        if self.idp_metadata_xml is not None and self.idp_metadata_url is not None:
            raise ValueError("give idp_metadata_xml or idp_metadata_url, not both")
        return self


class ConnectionUpdate(In):
    """Only the fields given change; `client_secret` replaces the sealed secret."""

    name: Name | None = None
    preset: PresetName | None = None
    tenant: Tenant | None = None
    issuer: Url | None = None
    client_id: Token | None = None
    client_secret: SecretStr | None = Field(default=None, max_length=1000)
    scopes: Annotated[list[Scope], Field(max_length=20)] | None = None
    idp_metadata_xml: MetadataXml | None = None
    idp_metadata_url: MetadataUrl | None = None
    groups_attribute: Token | None = None
    role_mapping: Annotated[list[RoleMapping], Field(max_length=200)] | None = None
    team_mapping: Annotated[list[TeamMapping], Field(max_length=200)] | None = None
    default_role: Token | None = None
    jit: bool | None = None
    email_attribute: Token | None = None
    allow_idp_initiated: bool | None = None

    @model_validator(mode="after")
    def _saml_metadata(self) -> ConnectionUpdate:
        if self.idp_metadata_xml is not None and self.idp_metadata_url is not None:
            raise ValueError("give idp_metadata_xml or idp_metadata_url, not both")
        return self


class RoleMappingOut(Out):
    group: str
    role: str


class TeamMappingOut(Out):
    group: str
    team_id: str


class ConnectionOut(Out):
    id: str
    type: ConnectionType
    name: str
    preset: str | None
    issuer: str | None
    client_id: str | None
    client_secret_set: bool = Field(description="A client secret is stored (never shown).")
    scopes: list[str]
    idp_metadata_xml: str | None
    idp_metadata_url: str | None
    groups_attribute: str | None
    role_mapping: list[RoleMappingOut]
    team_mapping: list[TeamMappingOut]
    default_role: str
    jit: bool
    redirect_uri: str | None = Field(
        description="OIDC: the redirect URI to register at the provider."
    )
    email_attribute: str | None
    allow_idp_initiated: bool
    sp_entity_id: str | None = Field(
        description="SAML: our entity id (Audience) for the IdP, also the SP metadata URL."
    )
    acs_url: str | None = Field(description="SAML: the ACS (Reply, Single sign-on) URL.")
    sp_certificate: str | None = Field(
        description="SAML: our signing certificate (PEM), as in the SP metadata."
    )
    idp_metadata_fetched_at: datetime | None = Field(
        description="SAML with idp_metadata_url: when the IdP metadata was last fetched."
    )
    start_url: str = Field(description="Where a browser starts signing in with this connection.")
    created_at: datetime
    updated_at: datetime


_DOMAIN = re.compile(r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")


def _domain(value: str) -> str:
    value = value.strip().lower().rstrip(".")
    if not 3 <= len(value) <= 253 or not _DOMAIN.fullmatch(value):
        raise ValueError("must be a domain name such as example.com")
    return value


Domain = Annotated[str, StringConstraints(max_length=254), AfterValidator(_domain)]


class DomainIn(In):
    domain: Domain


class DomainOut(Out):
    id: str
    domain: str
    verified: bool
    txt_record: str = Field(description="Publish this TXT record at the domain, then verify.")
    verified_at: datetime | None
    created_at: datetime


class ExchangeIn(In):
    code: SecretStr = Field(max_length=200)

"""What one SAML connection is: our side (entity id, ACS URL, signing credentials) and
the identity provider's (from its metadata)."""

from __future__ import annotations

from dataclasses import dataclass

from bastion.sso.saml.credentials import SpCredentials


@dataclass(frozen=True)
class IdpInfo:
    """The identity provider as its metadata describes it. `certificates` holds every
    signing certificate (PEM) it publishes: during a rollover there are several, and a
    signature by any of them is accepted."""

    entity_id: str
    sso_url: str
    certificates: tuple[str, ...]


@dataclass(frozen=True)
class SamlSettings:
    """One connection. `sp_entity_id` and `acs_url` are the URLs the IdP is configured
    with (the metadata and ACS endpoints of the connection); `email_attribute` and
    `groups_attribute` name the attributes to read (matched against an attribute's Name
    or FriendlyName), None for the common names of the major IdPs."""

    sp_entity_id: str
    acs_url: str
    sp: SpCredentials
    idp: IdpInfo
    allow_idp_initiated: bool = False
    email_attribute: str | None = None
    groups_attribute: str | None = None

"""SAML 2.0 service provider: the protocol library the SSO flow uses for SAML
connections. Pure functions (no database, no HTTP framework); time comes from the caller
or `bastion.core.clock`.

    new_sp_credentials   our signing key + self-signed certificate, per connection
    parse_idp_metadata   IdP entity id, SSO URL, signing certificates (rollover: several)
    fetch_idp_metadata   the same XML from the IdP's metadata URL, through the SSRF guard
    sp_metadata          our metadata, for the IdP admin to import
    authn_request        a signed AuthnRequest (HTTP-Redirect) and its ID
    parse_response       the signed-in identity from a posted SAML Response, or SamlError

The engine is xmlsec (libxmlsec1, through the `xmlsec` binding that python3-saml also
uses) for XML signatures, lxml behind defusedxml for parsing; the checks around it are in
`response` and `signature`, each refusal a `SamlError` with a code from `errors.CODES`.
"""

from bastion.sso.saml.authn import AuthnRedirect, authn_request
from bastion.sso.saml.credentials import SpCredentials, new_sp_credentials
from bastion.sso.saml.errors import CODES, SamlError
from bastion.sso.saml.metadata import fetch_idp_metadata, parse_idp_metadata, sp_metadata
from bastion.sso.saml.response import CLOCK_SKEW, SamlIdentity, parse_response
from bastion.sso.saml.settings import IdpInfo, SamlSettings

__all__ = [
    "CLOCK_SKEW",
    "CODES",
    "AuthnRedirect",
    "IdpInfo",
    "SamlError",
    "SamlIdentity",
    "SamlSettings",
    "SpCredentials",
    "authn_request",
    "fetch_idp_metadata",
    "new_sp_credentials",
    "parse_idp_metadata",
    "parse_response",
    "sp_metadata",
]

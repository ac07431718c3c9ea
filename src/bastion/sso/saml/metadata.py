"""Metadata: the identity provider's (parsed from XML or fetched from its URL) and ours.

IdP metadata is untrusted input pasted or fetched by an organisation admin: it is parsed
with DTDs and entities refused, must describe exactly one IdP with an HTTP-Redirect
single sign-on endpoint over https, and yields every signing certificate it lists (a
KeyDescriptor with `use="signing"` or without `use`), so a certificate rollover in
progress keeps working. Fetching goes through the SSRF guard, like webhooks.
"""

from __future__ import annotations

import base64
import binascii
import ssl
from collections.abc import Sequence
from urllib.parse import urlsplit

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lxml import etree

from bastion.core.netguard import GuardedTransport, OutboundRefused, deadline
from bastion.sso.saml._xml import (
    BINDING_POST,
    BINDING_REDIRECT,
    DS,
    MD,
    NAMEID_EMAIL,
    NAMEID_UNSPECIFIED,
    SAMLP,
    parse,
    q,
    text_of,
)
from bastion.sso.saml.credentials import cert_body
from bastion.sso.saml.errors import SamlError
from bastion.sso.saml.settings import IdpInfo, SamlSettings

MAX_METADATA_BYTES = 1024 * 1024  # federation aggregates are refused; one IdP is a few KB
_ACCEPT = {"accept": "application/samlmetadata+xml, application/xml, */*"}
FETCH_TIMEOUT = 10.0  # seconds, the whole exchange (netguard.deadline)


def _invalid(message: str) -> SamlError:
    return SamlError("invalid_metadata", message)


def _https(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme == "https" and bool(parts.hostname)


def _certificate(text: str) -> str:
    """A `ds:X509Certificate` body as PEM, after checking it is a certificate."""
    try:
        der = base64.b64decode("".join(text.split()), validate=True)
        cert = x509.load_der_x509_certificate(der)
    except (binascii.Error, ValueError):
        raise _invalid("a signing certificate is not a valid X.509 certificate") from None
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _idp_descriptor(root: etree._Element) -> tuple[etree._Element, etree._Element]:
    """(EntityDescriptor, IDPSSODescriptor) of the one SAML 2.0 IdP in the document."""
    if root.tag == q(MD, "EntityDescriptor"):
        entities = [root]
    elif root.tag == q(MD, "EntitiesDescriptor"):
        entities = list(root.iter(q(MD, "EntityDescriptor")))
    else:
        raise _invalid("the document is not SAML 2.0 metadata (EntityDescriptor)")
    found = [
        (entity, descriptor)
        for entity in entities
        for descriptor in entity.findall(q(MD, "IDPSSODescriptor"))
        if SAMLP in (descriptor.get("protocolSupportEnumeration") or "").split()
    ]
    if not found:
        raise _invalid("the metadata describes no SAML 2.0 identity provider")
    if len(found) > 1:
        raise _invalid("the metadata describes several identity providers; paste one")
    return found[0]


def parse_idp_metadata(xml: str) -> IdpInfo:
    """The IdP's entity id, HTTP-Redirect SSO URL and signing certificates, or
    `SamlError("invalid_metadata")` (`"dtd_forbidden"` for a DOCTYPE)."""
    root = parse(xml.encode(), max_bytes=MAX_METADATA_BYTES, code="invalid_metadata")
    entity, descriptor = _idp_descriptor(root)
    entity_id = (entity.get("entityID") or "").strip()
    if not entity_id:
        raise _invalid("the EntityDescriptor has no entityID")
    sso_urls = [
        (service.get("Location") or "").strip()
        for service in descriptor.findall(q(MD, "SingleSignOnService"))
        if service.get("Binding") == BINDING_REDIRECT
    ]
    if not sso_urls or not sso_urls[0]:
        raise _invalid("the IdP has no SingleSignOnService with the HTTP-Redirect binding")
    if not _https(sso_urls[0]):
        raise _invalid("the IdP's SingleSignOnService URL is not an https:// URL")
    certificates: list[str] = []
    for key in descriptor.findall(q(MD, "KeyDescriptor")):
        if key.get("use", "signing") != "signing":
            continue
        for node in key.iter(q(DS, "X509Certificate")):
            body = text_of(node)
            if body is None:
                raise _invalid("a signing KeyDescriptor has an empty certificate")
            pem = _certificate(body)
            if pem not in certificates:
                certificates.append(pem)
    if not certificates:
        raise _invalid("the IdP lists no signing certificate")
    return IdpInfo(entity_id=entity_id, sso_url=sso_urls[0], certificates=tuple(certificates))


def fetch_idp_metadata(
    url: str,
    *,
    allow: Sequence[str] = (),
    proxy: str | None = None,
    plaintext: Sequence[str] = (),
    verify: ssl.SSLContext | bool = True,
    timeout: float = FETCH_TIMEOUT,
) -> str:
    """GET the IdP metadata at `url` through the SSRF guard (`GuardedTransport` with the
    operator's `allow`, `proxy` and `plaintext`: BASTION_OUTBOUND_*), https only unless
    `plaintext` admits the destination, no redirects, within `timeout` seconds in all,
    at most `MAX_METADATA_BYTES`. Returns the text; `SamlError("metadata_fetch_failed")`
    names what went wrong without echoing the response."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise SamlError("metadata_fetch_failed", "the metadata URL must be an https:// URL")
    try:
        with (
            deadline(timeout),
            httpx.Client(
                transport=GuardedTransport(allow, proxy=proxy, plaintext=plaintext, verify=verify),
                timeout=timeout,
                follow_redirects=False,
            ) as client,
            client.stream("GET", url, headers=_ACCEPT) as response,
        ):
            if response.status_code != 200:
                raise SamlError(
                    "metadata_fetch_failed",
                    f"{parts.hostname} answered HTTP {response.status_code}",
                )
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_METADATA_BYTES:
                    raise SamlError(
                        "metadata_fetch_failed",
                        f"the metadata is larger than {MAX_METADATA_BYTES} bytes",
                    )
    except OutboundRefused as exc:
        raise SamlError("metadata_fetch_failed", f"{parts.hostname}: {exc.reason}") from None
    except (httpx.HTTPError, OSError) as exc:
        raise SamlError(
            "metadata_fetch_failed", f"{parts.hostname}: {type(exc).__name__}"
        ) from None
    try:
        return bytes(body).decode("utf-8")
    except UnicodeDecodeError:
        raise SamlError("metadata_fetch_failed", "the metadata is not UTF-8 text") from None


def sp_metadata(settings: SamlSettings) -> str:
    """Our SP metadata: the entity id, the ACS endpoint (HTTP-POST binding), the signing
    certificate, signed AuthnRequests and a wish for signed assertions."""
    md = f"{{{MD}}}"
    ds = f"{{{DS}}}"
    entity = etree.Element(
        md + "EntityDescriptor", nsmap={"md": MD, "ds": DS}, entityID=settings.sp_entity_id
    )
    descriptor = etree.SubElement(
        entity,
        md + "SPSSODescriptor",
        AuthnRequestsSigned="true",
        WantAssertionsSigned="true",
        protocolSupportEnumeration=SAMLP,
    )
    key = etree.SubElement(descriptor, md + "KeyDescriptor", use="signing")
    data = etree.SubElement(etree.SubElement(key, ds + "KeyInfo"), ds + "X509Data")
    etree.SubElement(data, ds + "X509Certificate").text = cert_body(settings.sp.cert_pem)
    for name_format in (NAMEID_EMAIL, NAMEID_UNSPECIFIED):
        etree.SubElement(descriptor, md + "NameIDFormat").text = name_format
    etree.SubElement(
        descriptor,
        md + "AssertionConsumerService",
        Binding=BINDING_POST,
        Location=settings.acs_url,
        index="0",
        isDefault="true",
    )
    return etree.tostring(entity, xml_declaration=True, encoding="UTF-8").decode()

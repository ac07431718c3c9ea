"""Hardened XML for SAML: parsing that refuses DTDs and entities, the namespaces, and
xs:dateTime.

Untrusted XML is parsed twice: first by defusedxml (which refuses any DOCTYPE, entity
declaration or external reference outright), then, once known harmless, by lxml with
entity resolution, network access and DTD loading off (lxml is what xmlsec verifies
signatures on). A size cap bounds the work before either parser sees the bytes.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from xml.etree.ElementTree import ParseError

import defusedxml.ElementTree
from defusedxml import DefusedXmlException
from lxml import etree

from bastion.sso.saml.errors import SamlError

SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"
SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
MD = "urn:oasis:names:tc:SAML:2.0:metadata"
DS = "http://www.w3.org/2000/09/xmldsig#"

BINDING_REDIRECT = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"
BINDING_POST = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
NAMEID_EMAIL = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"
NAMEID_UNSPECIFIED = "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified"
STATUS_SUCCESS = "urn:oasis:names:tc:SAML:2.0:status:Success"
CM_BEARER = "urn:oasis:names:tc:SAML:2.0:cm:bearer"
ENTITY_FORMAT = "urn:oasis:names:tc:SAML:2.0:nameid-format:entity"


def q(namespace: str, name: str) -> str:
    """Clark notation: `{namespace}name`, as lxml names tags."""
    return f"{{{namespace}}}{name}"


def parse(data: bytes, *, max_bytes: int, code: str) -> etree._Element:
    """The root element of `data`, or `SamlError(code)` for anything that is not a
    small, well-formed XML document without DTD; `dtd_forbidden` for a DOCTYPE or an
    entity declaration, whatever `code` is."""
    if len(data) > max_bytes:
        raise SamlError(code, f"the document is larger than {max_bytes} bytes")
    try:
        defusedxml.ElementTree.fromstring(
            data, forbid_dtd=True, forbid_entities=True, forbid_external=True
        )
    except DefusedXmlException:
        raise SamlError("dtd_forbidden", "DOCTYPE and entity declarations are refused") from None
    except (ParseError, ValueError, UnicodeError):
        raise SamlError(code, "the document is not well-formed XML") from None
    parser = etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_blank_text=False,
    )
    try:
        root = etree.fromstring(data, parser=parser)
    except (etree.XMLSyntaxError, ValueError):
        raise SamlError(code, "the document is not well-formed XML") from None
    if root.getroottree().docinfo.doctype:  # belt and braces: defusedxml refused it already
        raise SamlError("dtd_forbidden", "DOCTYPE and entity declarations are refused")
    return root


def text_of(element: etree._Element | None) -> str | None:
    """The text of a simple element, stripped; None when absent or empty. An element
    with child nodes (elements, comments, processing instructions) has no simple text:
    a comment splitting `admin@example.com<!---->.evil.test` must not shorten it."""
    if element is None or len(element):
        return None
    value = (element.text or "").strip()
    return value or None


_DATETIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})"
)


def parse_time(value: str | None, *, what: str) -> datetime | None:
    """An xs:dateTime as an aware UTC datetime (None when absent); SAML times are UTC
    with `Z`, an explicit offset is honoured, a missing one refused."""
    if value is None:
        return None
    match = _DATETIME.fullmatch(value.strip())
    if match is None:
        raise SamlError("malformed", f"{what} is not an xs:dateTime")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction, zone = match.group(7), match.group(8)
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    try:
        moment = datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)
    except ValueError:
        raise SamlError("malformed", f"{what} is not a valid date") from None
    if zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        moment -= sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
    return moment


def saml_time(moment: datetime) -> str:
    """`moment` as SAML writes times: UTC, seconds, `Z`."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

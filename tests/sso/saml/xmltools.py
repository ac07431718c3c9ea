"""lxml helpers to inspect and manipulate the IdP's genuine responses in tests."""

from __future__ import annotations

import base64

from lxml import etree

SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"
SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
DS = "http://www.w3.org/2000/09/xmldsig#"
NS = {"samlp": SAMLP, "saml": SAML, "ds": DS}


def decode(saml_response: str) -> etree._Element:
    return etree.fromstring(base64.b64decode(saml_response))


def encode(root: etree._Element) -> str:
    return base64.b64encode(etree.tostring(root)).decode()


def signed_parts(saml_response: str) -> set[str]:
    """Local names of the elements carrying a ds:Signature."""
    root = decode(saml_response)
    return {etree.QName(sig.getparent()).localname for sig in root.iter(f"{{{DS}}}Signature")}


def one(root: etree._Element, path: str) -> etree._Element:
    found = root.xpath(path, namespaces=NS)
    assert isinstance(found, list)
    assert len(found) == 1, f"{path}: {len(found)} matches"
    element = found[0]
    assert isinstance(element, etree._Element)
    return element

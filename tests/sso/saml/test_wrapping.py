"""XML signature wrapping: the eight classic variants (Somorovsky et al., "On Breaking
SAML: Be Whoever You Want to Be", 2012, XSW1-XSW8) and a few more, each built from the
real IdP's genuinely signed response with lxml. The genuine signature still verifies
over the original element; what must never happen is that the evil assertion (for
mallory) is the one used."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
from lxml import etree

from bastion.core.clock import utcnow
from bastion.sso.saml import SamlError, SamlSettings, authn_request, parse_response
from bastion.sso.saml import response as response_module
from tests.sso.saml.conftest import Idp
from tests.sso.saml.xmltools import DS, SAML, SAMLP, decode, encode, one

EVIL = "mallory@evil.example.test"


def _evil_assertion(original: etree._Element, new_id: str = "_evil") -> etree._Element:
    evil = copy.deepcopy(original)
    evil.set("ID", new_id)
    one(evil, "saml:Subject/saml:NameID").text = EVIL
    for signature in evil.findall(f"{{{DS}}}Signature"):
        evil.remove(signature)
    return evil


def _without_signature(element: etree._Element) -> etree._Element:
    clone = copy.deepcopy(element)
    for signature in clone.findall(f"{{{DS}}}Signature"):
        clone.remove(signature)
    return clone


def xsw1(root: etree._Element) -> etree._Element:
    """Response signed: a new response (new ID, evil assertion) whose copied signature
    wraps the original response."""
    original = copy.deepcopy(root)
    evil = copy.deepcopy(root)
    evil.set("ID", "_evil_response")
    assertion = one(evil, "saml:Assertion")
    evil.replace(assertion, _evil_assertion(assertion, "_evil_assertion"))
    signature = one(evil, "ds:Signature")
    signature.append(_without_signature(original))
    return evil


def xsw2(root: etree._Element) -> etree._Element:
    """Response signed: the original response as a sibling before the (detached) copied
    signature inside the new evil response."""
    original = copy.deepcopy(root)
    evil = copy.deepcopy(root)
    evil.set("ID", "_evil_response")
    assertion = one(evil, "saml:Assertion")
    evil.replace(assertion, _evil_assertion(assertion, "_evil_assertion"))
    signature = one(evil, "ds:Signature")
    signature.addprevious(_without_signature(original))
    return evil


def xsw3(root: etree._Element) -> etree._Element:
    """Assertion signed: an evil assertion inserted before the original one."""
    original = one(root, "saml:Assertion")
    original.addprevious(_evil_assertion(original))
    return root


def xsw4(root: etree._Element) -> etree._Element:
    """Assertion signed: the evil assertion replaces the original and wraps it."""
    original = one(root, "saml:Assertion")
    evil = _evil_assertion(original)
    root.replace(original, evil)
    evil.append(original)
    return root


def xsw5(root: etree._Element) -> etree._Element:
    """Assertion signed: the evil assertion carries the copied signature; the original,
    unsigned, is appended to the response."""
    original = one(root, "saml:Assertion")
    evil = _evil_assertion(original)
    evil.insert(1, copy.deepcopy(one(original, "ds:Signature")))
    root.replace(original, evil)
    root.append(_without_signature(original))
    return root


def xsw6(root: etree._Element) -> etree._Element:
    """Assertion signed: the evil assertion carries the copied signature, which wraps the
    original assertion."""
    original = one(root, "saml:Assertion")
    evil = _evil_assertion(original)
    signature = copy.deepcopy(one(original, "ds:Signature"))
    evil.insert(1, signature)
    root.replace(original, evil)
    signature.append(_without_signature(original))
    return root


def xsw7(root: etree._Element) -> etree._Element:
    """Assertion signed: the original hidden in an Extensions element; the evil one,
    unsigned, where the original was."""
    original = one(root, "saml:Assertion")
    evil = _evil_assertion(original)
    extensions = etree.Element(f"{{{SAMLP}}}Extensions")
    root.replace(original, evil)
    evil.addprevious(extensions)
    extensions.append(original)
    return root


def xsw8(root: etree._Element) -> etree._Element:
    """Assertion signed: the evil assertion carries the copied signature with the
    original assertion inside a ds:Object."""
    original = one(root, "saml:Assertion")
    evil = _evil_assertion(original)
    signature = copy.deepcopy(one(original, "ds:Signature"))
    evil.insert(1, signature)
    root.replace(original, evil)
    obj = etree.SubElement(signature, f"{{{DS}}}Object")
    obj.append(_without_signature(original))
    return root


def same_id_swap(root: etree._Element) -> etree._Element:
    """Assertion signed: the evil assertion takes the original's ID and signature (one
    assertion, no wrapper): only the digest can tell."""
    original = one(root, "saml:Assertion")
    evil = _evil_assertion(original, original.get("ID") or "")
    evil.insert(1, copy.deepcopy(one(original, "ds:Signature")))
    root.replace(original, evil)
    return root


def duplicate_id(root: etree._Element) -> etree._Element:
    """Assertion signed: the signed original moved into Extensions, an evil assertion
    with the SAME ID in place, signed-looking with the copied signature."""
    original = one(root, "saml:Assertion")
    evil = _evil_assertion(original, original.get("ID") or "")
    evil.insert(1, copy.deepcopy(one(original, "ds:Signature")))
    extensions = etree.Element(f"{{{SAMLP}}}Extensions", ID=original.get("ID") or "")
    root.replace(original, evil)
    evil.addprevious(extensions)
    return root


def signature_moved_to_response(root: etree._Element) -> etree._Element:
    """Assertion signed: the assertion's signature moved up to the response (it still
    references the assertion), and the assertion made evil."""
    original = one(root, "saml:Assertion")
    signature = one(original, "ds:Signature")
    original.remove(signature)
    one(root, "saml:Issuer").addnext(signature)
    one(original, "saml:Subject/saml:NameID").text = EVIL
    return root


VARIANTS: list[tuple[str, Callable[[etree._Element], etree._Element]]] = [
    ("response", xsw1),
    ("response", xsw2),
    ("assertion", xsw3),
    ("assertion", xsw4),
    ("assertion", xsw5),
    ("assertion", xsw6),
    ("assertion", xsw7),
    ("assertion", xsw8),
    ("assertion", same_id_swap),
    ("assertion", duplicate_id),
    ("assertion", signature_moved_to_response),
]


@pytest.mark.parametrize(("sign", "attack"), VARIANTS, ids=[f.__name__ for _, f in VARIANTS])
def test_wrapping_refused(
    idp: Idp, settings: SamlSettings, sign: str, attack: Callable[[etree._Element], etree._Element]
) -> None:
    redirect = authn_request(settings, "relay")
    genuine = idp.login(settings, redirect.url, sign=sign)["saml_response"]
    # The genuine response is accepted: what follows is refused for the attack alone.
    parse_response(settings, genuine, expected_request_id=redirect.request_id, now=utcnow())
    forged = encode(attack(decode(genuine)))
    assert EVIL in etree.tostring(decode(forged)).decode()
    with pytest.raises(SamlError) as caught:
        parse_response(settings, forged, expected_request_id=redirect.request_id, now=utcnow())
    assert caught.value.code in {
        "multiple_assertions",
        "signature_wrapping",
        "signature_invalid",
    }


@pytest.mark.parametrize(("sign", "attack"), VARIANTS, ids=[f.__name__ for _, f in VARIANTS])
def test_wrapping_refused_by_reference_alone(
    idp: Idp,
    settings: SamlSettings,
    sign: str,
    attack: Callable[[etree._Element], etree._Element],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Defence in depth: with the one-assertion rule switched off (the first assertion
    child taken, as a naive consumer would), signature placement and references still
    refuse every variant, and never yield mallory."""

    def first_assertion(root: etree._Element) -> etree._Element:
        found = root.find(f"{{{SAML}}}Assertion")
        if found is None:
            raise SamlError("assertion_missing", "none")
        return found

    monkeypatch.setattr(response_module, "_the_assertion", first_assertion)
    redirect = authn_request(settings, "relay")
    genuine = idp.login(settings, redirect.url, sign=sign)["saml_response"]
    forged = encode(attack(decode(genuine)))
    with pytest.raises(SamlError) as caught:
        parse_response(settings, forged, expected_request_id=redirect.request_id, now=utcnow())
    assert caught.value.code in {"signature_wrapping", "signature_invalid", "signature_missing"}


def test_assertion_only_signature_covers_the_used_assertion(
    idp: Idp, settings: SamlSettings
) -> None:
    """A response-level change outside the signed assertion (sign=assertion) does not
    matter to the identity, while the assertion itself is what the signature covers."""
    redirect = authn_request(settings, "relay")
    genuine = idp.login(settings, redirect.url, sign="assertion")["saml_response"]
    root = decode(genuine)
    assert one(root, "saml:Assertion/ds:Signature/ds:SignedInfo/ds:Reference").get("URI") == "#" + (
        one(root, "saml:Assertion").get("ID") or ""
    )
    identity = parse_response(
        settings, genuine, expected_request_id=redirect.request_id, now=utcnow()
    )
    assert identity.email == "ada@example.com"


@pytest.mark.parametrize(
    "attribute", ["ID", "{urn:example:evil}ID", "{http://www.w3.org/XML/1998/namespace}id", "Id"]
)
def test_an_id_shared_in_any_spelling_is_refused(
    idp: Idp, settings: SamlSettings, attribute: str
) -> None:
    """xmlsec resolves `#id` through any attribute named ID (whatever its namespace)
    and xml:id: a second element claiming the signed assertion's ID, in any of these
    spellings, could steer the reference."""
    redirect = authn_request(settings, "relay")
    root = decode(idp.login(settings, redirect.url)["saml_response"])
    assertion_id = one(root, "saml:Assertion").get("ID") or ""
    extensions = etree.Element(f"{{{SAMLP}}}Extensions")
    extensions.set(attribute, assertion_id)
    one(root, "saml:Issuer").addnext(extensions)
    with pytest.raises(SamlError) as caught:
        parse_response(
            settings, encode(root), expected_request_id=redirect.request_id, now=utcnow()
        )
    assert caught.value.code == "signature_wrapping"

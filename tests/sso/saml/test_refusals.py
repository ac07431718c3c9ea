"""Responses signed by the real IdP but wrong in one respect each: every one refused
with its own code. The IdP's template values are overridden before it signs, so the
signature is genuine and only the checked property is off."""

from __future__ import annotations

import copy
import dataclasses
from datetime import timedelta
from typing import Any

import pytest
from lxml import etree

from bastion.core.clock import utcnow
from bastion.sso.saml import SamlError, SamlSettings, authn_request, parse_response
from tests.sso.saml.conftest import Idp
from tests.sso.saml.xmltools import DS, SAML, decode, encode, one

MINUTE = timedelta(minutes=1)


def sp_initiated(idp: Idp, settings: SamlSettings, **options: Any) -> tuple[str, str]:
    """(SAMLResponse, request id) for a fresh SP-initiated sign-in."""
    redirect = authn_request(settings, "relay")
    answer = idp.login(settings, redirect.url, **options)
    return answer["saml_response"], redirect.request_id


def refused(settings: SamlSettings, response: str, request_id: str | None, **kw: Any) -> str:
    with pytest.raises(SamlError) as caught:
        parse_response(
            settings, response, expected_request_id=request_id, now=kw.get("now", utcnow())
        )
    assert caught.value.code in caught.value.args[0]
    return caught.value.code


def future(delta: timedelta) -> str:
    return (utcnow() + delta).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclasses.dataclass(frozen=True)
class Shift:
    """A time `minutes` from when the test runs (not when it is collected: xdist
    workers must collect the same test ids)."""

    minutes: int

    def __str__(self) -> str:
        return f"now{self.minutes:+d}min"

    def resolve(self) -> str:
        return future(self.minutes * MINUTE)


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"Audience": "https://other-sp.example.test/metadata"}, "audience_mismatch"),
        ({"Destination": "https://evil.example.test/acs"}, "destination_mismatch"),
        ({"Destination": None}, "destination_mismatch"),
        ({"SubjectRecipient": "https://evil.example.test/acs"}, "recipient_mismatch"),
        ({"Issuer": "https://other-idp.example.test"}, "issuer_mismatch"),
        ({"StatusCode": "urn:oasis:names:tc:SAML:2.0:status:Responder"}, "status_not_success"),
        ({"ConditionsNotBefore": Shift(10)}, "not_yet_valid"),
        ({"ConditionsNotOnOrAfter": Shift(-3)}, "expired"),
        ({"SubjectConfirmationDataNotOnOrAfter": Shift(-3)}, "expired"),
        ({"SubjectConfirmationDataNotOnOrAfter": None}, "expired"),
        ({"IssueInstant": Shift(10)}, "not_yet_valid"),
        ({"InResponseTo": "_another_request"}, "in_response_to_mismatch"),
        ({"InResponseTo": None}, "in_response_to_mismatch"),
    ],
    ids=lambda v: v if isinstance(v, str) else ",".join(f"{k}={v[k]}" for k in v),  # stable
)
@pytest.mark.parametrize("sign", ["assertion", "response"])
def test_signed_but_wrong(
    idp: Idp, settings: SamlSettings, overrides: dict[str, Any], code: str, sign: str
) -> None:
    values = {k: v.resolve() if isinstance(v, Shift) else v for k, v in overrides.items()}
    response, request_id = sp_initiated(idp, settings, sign=sign, **values)
    assert refused(settings, response, request_id) == code


def test_status_names_the_idp_code(idp: Idp, settings: SamlSettings) -> None:
    response, request_id = sp_initiated(
        idp, settings, StatusCode="urn:oasis:names:tc:SAML:2.0:status:Requester"
    )
    with pytest.raises(SamlError, match="Requester"):
        parse_response(settings, response, expected_request_id=request_id, now=utcnow())


def test_clock_skew_of_two_minutes(idp: Idp, settings: SamlSettings) -> None:
    """Valid for 5 minutes from issue: accepted up to 5 + 2 minutes later, refused after;
    and up to 2 minutes before NotBefore, refused earlier."""
    response, request_id = sp_initiated(idp, settings)
    issued = utcnow()
    for now, ok in (
        (issued + 6 * MINUTE, True),
        (issued + 8 * MINUTE, False),
        (issued - MINUTE, True),
        (issued - 3 * MINUTE, False),
    ):
        if ok:
            parse_response(settings, response, expected_request_id=request_id, now=now)
        else:
            assert refused(settings, response, request_id, now=now) in {"expired", "not_yet_valid"}


def test_in_response_to_must_match_the_request(idp: Idp, settings: SamlSettings) -> None:
    response, _ = sp_initiated(idp, settings)
    other = authn_request(settings, "relay").request_id
    assert refused(settings, response, other) == "in_response_to_mismatch"


def test_unsolicited_response_to_an_sp_initiated_sign_in(idp: Idp, settings: SamlSettings) -> None:
    answer = idp.login(settings, None)
    request_id = authn_request(settings, "relay").request_id
    assert refused(settings, answer["saml_response"], request_id) == "in_response_to_mismatch"


def test_idp_initiated_response_must_not_answer_a_request(idp: Idp, settings: SamlSettings) -> None:
    enabled = dataclasses.replace(settings, allow_idp_initiated=True)
    response, _ = sp_initiated(idp, enabled)
    assert refused(enabled, response, None) == "in_response_to_mismatch"


@pytest.mark.parametrize("sign", ["assertion", "response", "both"])
def test_wrong_key(idp: Idp, settings: SamlSettings, sign: str) -> None:
    response, request_id = sp_initiated(idp, settings, sign=sign, key=idp.keys.rogue)
    assert refused(settings, response, request_id) == "signature_invalid"


@pytest.mark.parametrize("sign", ["assertion", "response", "both"])
def test_unsigned(idp: Idp, settings: SamlSettings, sign: str) -> None:
    response, request_id = sp_initiated(idp, settings, sign=sign)
    root = decode(response)
    for signature in list(root.iter(f"{{{DS}}}Signature")):
        signature.getparent().remove(signature)
    assert refused(settings, encode(root), request_id) == "signature_missing"


def test_signed_response_with_a_bad_assertion_signature(idp: Idp, settings: SamlSettings) -> None:
    """Every signature present must verify, even when another one does."""
    response, request_id = sp_initiated(idp, settings, sign="both")
    root = decode(response)
    value = one(root, "saml:Assertion/ds:Signature/ds:SignatureValue")
    value.text = ("A" if value.text and value.text[0] != "A" else "B") + (value.text or "")[1:]
    assert refused(settings, encode(root), request_id) == "signature_invalid"


@pytest.mark.parametrize("sign", ["assertion", "response"])
@pytest.mark.parametrize(
    "path",
    [
        "saml:Assertion/saml:AttributeStatement/saml:Attribute/saml:AttributeValue",
        "saml:Assertion/saml:Subject/saml:NameID",
        "saml:Assertion/saml:Conditions/saml:AudienceRestriction/saml:Audience",
    ],
)
def test_tampered_after_signing(idp: Idp, settings: SamlSettings, sign: str, path: str) -> None:
    response, request_id = sp_initiated(idp, settings, sign=sign)
    root = decode(response)
    element = root.xpath(path, namespaces={"saml": SAML})[0]
    element.text = "admins" if "Attribute" in path else (element.text or "") + "x"
    assert refused(settings, encode(root), request_id) == "signature_invalid"


def test_comment_in_name_id_does_not_shorten_it(idp: Idp, settings: SamlSettings) -> None:
    """Exclusive c14n drops comments, so a comment added to a signed NameID keeps the
    signature valid (the 2018 "duo" bug): the NameID must not read as its first part."""
    response, request_id = sp_initiated(idp, settings, email="ada@example.com.evil.test")
    root = decode(response)
    name_id = one(root, "saml:Assertion/saml:Subject/saml:NameID")
    name_id.text = "ada@example.com"
    comment = etree.Comment("")
    comment.tail = ".evil.test"
    name_id.append(comment)
    # The signature still verifies (comments are not signed): the NameID itself is refused.
    assert refused(settings, encode(root), request_id) == "malformed"


def test_replay_information(idp: Idp, settings: SamlSettings) -> None:
    """The library does not remember assertions: it returns the id and how long to
    remember it, the same for the same response and different for another one."""
    response, request_id = sp_initiated(idp, settings)
    first = parse_response(settings, response, expected_request_id=request_id, now=utcnow())
    again = parse_response(settings, response, expected_request_id=request_id, now=utcnow())
    assert first.assertion_id == again.assertion_id
    assert first.assertion_id == one(decode(response), "saml:Assertion").get("ID")
    other, other_id = sp_initiated(idp, settings)
    assert (
        parse_response(settings, other, expected_request_id=other_id, now=utcnow()).assertion_id
        != first.assertion_id
    )
    assert first.not_on_or_after > utcnow()


def test_encrypted_assertion_is_refused_clearly(idp: Idp, settings: SamlSettings) -> None:
    response, request_id = sp_initiated(idp, settings)
    root = decode(response)
    assertion = one(root, "saml:Assertion")
    encrypted = etree.Element(f"{{{SAML}}}EncryptedAssertion")
    etree.SubElement(encrypted, "{http://www.w3.org/2001/04/xmlenc#}EncryptedData")
    root.replace(assertion, encrypted)
    assert refused(settings, encode(root), request_id) == "encrypted_assertion"


def test_more_than_one_assertion(idp: Idp, settings: SamlSettings) -> None:
    response, request_id = sp_initiated(idp, settings, sign="response")
    root = decode(response)
    second = copy.deepcopy(one(root, "saml:Assertion"))
    second.set("ID", "_second")
    root.append(second)
    assert refused(settings, encode(root), request_id) in {"multiple_assertions"}


@pytest.mark.parametrize(
    ("algorithm", "accepted"),
    [
        ("http://www.w3.org/2000/09/xmldsig#rsa-sha1", False),
        ("http://www.w3.org/2001/04/xmldsig-more#rsa-sha256", True),
        ("http://www.w3.org/2001/04/xmldsig-more#rsa-sha512", True),
    ],
)
def test_signature_algorithms(
    idp: Idp, settings: SamlSettings, algorithm: str, accepted: bool
) -> None:
    response, request_id = sp_initiated(idp, settings, signature_algorithm=algorithm)
    if accepted:
        parse_response(settings, response, expected_request_id=request_id, now=utcnow())
    else:
        assert refused(settings, response, request_id) == "signature_unsupported"


def test_email_from_attributes_when_name_id_is_not_an_email(
    idp: Idp, settings: SamlSettings
) -> None:
    response, request_id = sp_initiated(
        idp,
        settings,
        email="00u1abcd",
        NameIDFormat="urn:oasis:names:tc:SAML:2.0:nameid-format:persistent",
        attributes={"mail": ["grace@example.com"], "memberOf": ["ops"]},
    )
    identity = parse_response(settings, response, expected_request_id=request_id, now=utcnow())
    assert (identity.name_id, identity.email, identity.groups) == (
        "00u1abcd",
        "grace@example.com",
        ("ops",),
    )
    named = dataclasses.replace(settings, email_attribute="work_email", groups_attribute="teams")
    response, request_id = sp_initiated(
        idp,
        named,
        email="00u1abcd",
        NameIDFormat="urn:oasis:names:tc:SAML:2.0:nameid-format:persistent",
        attributes={
            "mail": ["wrong@example.com"],
            "work_email": ["grace@example.com"],
            "teams": ["a", "b"],
        },
    )
    identity = parse_response(named, response, expected_request_id=request_id, now=utcnow())
    assert (identity.email, identity.groups) == ("grace@example.com", ("a", "b"))


def test_no_email_anywhere(idp: Idp, settings: SamlSettings) -> None:
    response, request_id = sp_initiated(
        idp,
        settings,
        email="00u1abcd",
        NameIDFormat="urn:oasis:names:tc:SAML:2.0:nameid-format:persistent",
        attributes={},
    )
    assert refused(settings, response, request_id) == "email_missing"


@pytest.mark.parametrize(
    "doctype",
    [
        '<!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>',
        '<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>',
        "<!DOCTYPE r>",
    ],
)
def test_dtd_and_entities_refused(idp: Idp, settings: SamlSettings, doctype: str) -> None:
    import base64

    response, request_id = sp_initiated(idp, settings)
    xml = base64.b64decode(response).decode()
    body = xml.split("?>", 1)[1] if xml.startswith("<?xml") else xml
    bad = base64.b64encode((doctype + body).encode()).decode()
    assert refused(settings, bad, request_id) == "dtd_forbidden"

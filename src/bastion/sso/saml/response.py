"""The assertion consumer: read a SAML Response posted to the ACS URL and return who
signed in, or refuse it (`SamlError`) for any deviation.

Order of checks: size, base64, XML without DTD (`_xml.parse`); a SAML 2.0 Response whose
Status is Success; exactly one assertion, not encrypted; unique IDs; signatures only
where they belong and verifying with the IdP's certificates (`signature`); then, on the
assertion a verified signature covers: issuer, destination, InResponseTo, audience,
time bounds (2 minutes of skew), bearer subject confirmation (recipient, expiry,
InResponseTo), and the e-mail and groups.

Replay is the caller's: it records `assertion_id` until `not_on_or_after` and refuses
an assertion id it has seen.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

import xmlsec
from lxml import etree

from bastion.core.clock import as_utc
from bastion.sso.saml import signature as dsig
from bastion.sso.saml._xml import (
    CM_BEARER,
    ENTITY_FORMAT,
    NAMEID_EMAIL,
    SAML,
    SAMLP,
    STATUS_SUCCESS,
    parse,
    parse_time,
    q,
    text_of,
)
from bastion.sso.saml.errors import SamlError
from bastion.sso.saml.settings import SamlSettings

CLOCK_SKEW = timedelta(minutes=2)
MAX_RESPONSE_BYTES = 256 * 1024  # decoded; real responses are a few KB (groups included)

# Attribute names the major IdPs use when none is configured (Name or FriendlyName).
EMAIL_ATTRIBUTES = (
    "email",
    "mail",
    "emailaddress",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress",
    "urn:oid:0.9.2342.19200300.100.1.3",
    "user.email",
)
GROUP_ATTRIBUTES = (
    "groups",
    "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups",
    "memberof",
    "urn:oid:1.3.6.1.4.1.5923.1.5.1.1",
)
_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]{1,255}")
_STATUS_NAME = re.compile(r"urn:oasis:names:tc:SAML:2\.0:status:([A-Za-z]{1,64})")


@dataclass(frozen=True)
class SamlIdentity:
    """Who signed in. `not_on_or_after` is when the assertion stops being acceptable
    (its earliest expiry plus the allowed skew): keep `assertion_id` in the replay store
    until then."""

    name_id: str
    email: str
    groups: tuple[str, ...]
    assertion_id: str
    not_on_or_after: datetime
    in_response_to: str | None
    session_index: str | None


def _decode(saml_response_b64: str) -> bytes:
    if not isinstance(saml_response_b64, str) or not saml_response_b64.strip():
        raise SamlError("malformed", "SAMLResponse is empty")
    if len(saml_response_b64) > MAX_RESPONSE_BYTES * 4 // 3 + 1024:
        raise SamlError("malformed", "SAMLResponse is too large")
    compact = "".join(saml_response_b64.split())  # form posts may wrap lines
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise SamlError("malformed", "SAMLResponse is not base64") from None


def _one(parent: etree._Element, tag: str, what: str, code: str = "malformed") -> etree._Element:
    found = parent.findall(tag)
    if len(found) != 1:
        raise SamlError(code, f"expected exactly one {what}")
    return found[0]


def _check_status(root: etree._Element) -> None:
    status = _one(root, q(SAMLP, "Status"), "Status")
    code = _one(status, q(SAMLP, "StatusCode"), "StatusCode")
    value = code.get("Value")
    if value == STATUS_SUCCESS:
        return
    names = [
        match.group(1)
        for node in (code, code.find(q(SAMLP, "StatusCode")))
        if node is not None and (match := _STATUS_NAME.fullmatch(node.get("Value") or ""))
    ]
    named = "/".join(names) or "an unknown status"
    raise SamlError("status_not_success", f"the identity provider answered {named}")


def _the_assertion(root: etree._Element) -> etree._Element:
    """The one assertion, a direct child of the Response. Counted over the whole
    document: a second assertion anywhere (in Extensions, in a signature's Object,
    inside the first one) is how wrapping attacks smuggle theirs in."""
    if any(True for _ in root.iter(q(SAML, "EncryptedAssertion"), q(SAML, "EncryptedID"))):
        raise SamlError(
            "encrypted_assertion",
            "encrypted assertions are not supported; turn assertion encryption off at the IdP",
        )
    assertions = list(root.iter(q(SAML, "Assertion")))
    if not assertions:
        raise SamlError("assertion_missing", "the response carries no assertion")
    if len(assertions) > 1:
        raise SamlError("multiple_assertions", "the response carries more than one assertion")
    assertion = assertions[0]
    if assertion.getparent() is not root:
        raise SamlError("signature_wrapping", "the assertion is not a child of the response")
    return assertion


def _signed_assertion(
    root: etree._Element, assertion: etree._Element, certificates: tuple[str, ...]
) -> etree._Element:
    """Verify every signature present (each must verify; at least one is required) and
    return the assertion a verified signature covers, found by that signature's
    reference: the Response (which holds the assertion) or the assertion itself."""
    ids = dsig.unique_ids(root)
    signatures = dsig.signatures_in_place(root, assertion)
    if not signatures:
        raise SamlError("signature_missing", "neither the response nor the assertion is signed")
    xmlsec.tree.add_ids(root, ["ID"])
    for signature in signatures.values():
        dsig.verify(signature, certificates)
        # What the verified reference points at (IDs are unique): the response, whose
        # one assertion child is then covered, or the assertion itself.
        parent = signature.getparent()
        referenced = ids.get(parent.get("ID") or "") if parent is not None else None
        if referenced is root:
            covered = next(referenced.iterchildren(q(SAML, "Assertion")), None)
        else:
            covered = referenced
        if covered is not assertion:
            raise SamlError("signature_wrapping", "the signature does not cover the assertion")
    return assertion


def _check_issuer(element: etree._Element, entity_id: str, *, required: bool) -> None:
    issuer = element.find(q(SAML, "Issuer"))
    if issuer is None:
        if required:
            raise SamlError("issuer_mismatch", "the assertion names no issuer")
        return
    if issuer.get("Format") not in (None, ENTITY_FORMAT) or text_of(issuer) != entity_id:
        raise SamlError("issuer_mismatch", "the issuer is not the connection's identity provider")


def _check_in_response_to(
    value: str | None, expected: str | None, allow_idp_initiated: bool
) -> None:
    if expected is not None:
        if value != expected:
            raise SamlError(
                "in_response_to_mismatch", "the response does not answer this sign-in's request"
            )
        return
    if not allow_idp_initiated:
        raise SamlError(
            "idp_initiated_disabled", "IdP-initiated sign-in is not enabled for this connection"
        )
    if value is not None:
        raise SamlError(
            "in_response_to_mismatch",
            "an unsolicited response must not answer a request (InResponseTo present)",
        )


def _check_conditions(assertion: etree._Element, audience: str, now: datetime) -> datetime | None:
    """Audience and the validity window; returns the conditions' NotOnOrAfter."""
    conditions = _one(assertion, q(SAML, "Conditions"), "Conditions", "audience_mismatch")
    not_before = parse_time(conditions.get("NotBefore"), what="NotBefore")
    not_on_or_after = parse_time(conditions.get("NotOnOrAfter"), what="NotOnOrAfter")
    if not_before is not None and now + CLOCK_SKEW < not_before:
        raise SamlError("not_yet_valid", "the assertion is not valid yet (NotBefore)")
    if not_on_or_after is not None and now - CLOCK_SKEW >= not_on_or_after:
        raise SamlError("expired", "the assertion has expired (NotOnOrAfter)")
    restrictions = conditions.findall(q(SAML, "AudienceRestriction"))
    if not restrictions:
        raise SamlError("audience_mismatch", "the assertion has no audience restriction")
    for restriction in restrictions:  # each restriction must admit us (core §2.5.1.4)
        audiences = [text_of(a) for a in restriction.findall(q(SAML, "Audience"))]
        if audience not in audiences:
            raise SamlError("audience_mismatch", "the assertion is meant for another audience")
    return not_on_or_after


def _check_confirmation(
    subject: etree._Element, settings: SamlSettings, expected: str | None, now: datetime
) -> tuple[datetime, str | None]:
    """A bearer SubjectConfirmation whose data names our ACS URL, has not expired and
    answers the expected request: (its NotOnOrAfter, its InResponseTo). When none
    qualifies, the first one's first failure is the error."""
    first_error: SamlError | None = None
    for confirmation in subject.findall(q(SAML, "SubjectConfirmation")):
        if confirmation.get("Method") != CM_BEARER:
            continue
        try:
            data = _one(
                confirmation,
                q(SAML, "SubjectConfirmationData"),
                "SubjectConfirmationData",
                "subject_confirmation_missing",
            )
            if data.get("Recipient") != settings.acs_url:
                raise SamlError("recipient_mismatch", "the confirmation names another ACS URL")
            not_on_or_after = parse_time(data.get("NotOnOrAfter"), what="NotOnOrAfter")
            if not_on_or_after is None:
                raise SamlError("expired", "the bearer confirmation has no NotOnOrAfter")
            if now - CLOCK_SKEW >= not_on_or_after:
                raise SamlError("expired", "the bearer confirmation has expired")
            not_before = parse_time(data.get("NotBefore"), what="NotBefore")
            if not_before is not None and now + CLOCK_SKEW < not_before:
                raise SamlError("not_yet_valid", "the bearer confirmation is not valid yet")
            in_response_to = data.get("InResponseTo")
            _check_in_response_to(in_response_to, expected, settings.allow_idp_initiated)
        except SamlError as exc:
            first_error = first_error or exc
            continue
        return not_on_or_after, in_response_to
    raise first_error or SamlError(
        "subject_confirmation_missing", "the assertion has no bearer subject confirmation"
    )


def _attributes(assertion: etree._Element) -> list[tuple[set[str], list[str]]]:
    """(names, values) per attribute: the lower-cased Name and FriendlyName, and the
    simple text values."""
    found = []
    for statement in assertion.findall(q(SAML, "AttributeStatement")):
        if statement.find(q(SAML, "EncryptedAttribute")) is not None:
            raise SamlError("encrypted_assertion", "encrypted attributes are not supported")
        for attribute in statement.findall(q(SAML, "Attribute")):
            names = {
                name.lower()
                for name in (attribute.get("Name"), attribute.get("FriendlyName"))
                if name
            }
            values = [
                value
                for node in attribute.findall(q(SAML, "AttributeValue"))
                if (value := text_of(node)) is not None
            ]
            found.append((names, values))
    return found


def _values(attributes: list[tuple[set[str], list[str]]], wanted: tuple[str, ...]) -> list[str]:
    for name in wanted:
        for names, values in attributes:
            if name.lower() in names and values:
                return values
    return []


def _email(
    name_id: etree._Element, attributes: list[tuple[set[str], list[str]]], settings: SamlSettings
) -> str:
    if settings.email_attribute:
        candidates = _values(attributes, (settings.email_attribute,))
    elif name_id.get("Format") == NAMEID_EMAIL:
        candidates = [text_of(name_id) or ""]
    else:
        candidates = _values(attributes, EMAIL_ATTRIBUTES)
        nameid = text_of(name_id) or ""
        if not candidates and _EMAIL.fullmatch(nameid):
            candidates = [nameid]
    email = candidates[0] if candidates else ""
    if not _EMAIL.fullmatch(email):
        raise SamlError(
            "email_missing",
            "no e-mail address in the assertion (NameID in emailAddress format or attribute)",
        )
    return email


def _identity(
    settings: SamlSettings, root: etree._Element, expected: str | None, now: datetime
) -> SamlIdentity:
    if root.tag != q(SAMLP, "Response") or root.get("Version") != "2.0":
        raise SamlError("malformed", "the message is not a SAML 2.0 Response")
    _check_status(root)
    assertion = _signed_assertion(root, _the_assertion(root), settings.idp.certificates)
    if assertion.get("Version") != "2.0" or not assertion.get("ID"):
        raise SamlError("malformed", "the assertion is not a SAML 2.0 assertion")
    _check_issuer(root, settings.idp.entity_id, required=False)
    _check_issuer(assertion, settings.idp.entity_id, required=True)
    if root.get("Destination") != settings.acs_url:
        raise SamlError("destination_mismatch", "the response was sent to another endpoint")
    _check_in_response_to(root.get("InResponseTo"), expected, settings.allow_idp_initiated)
    for element, what in ((root, "response"), (assertion, "assertion")):
        issued = parse_time(element.get("IssueInstant"), what="IssueInstant")
        if issued is None:
            raise SamlError("malformed", f"the {what} has no IssueInstant")
        if now + CLOCK_SKEW < issued:
            raise SamlError("not_yet_valid", f"the {what} was issued in the future")
    conditions_end = _check_conditions(assertion, settings.sp_entity_id, now)
    subject = _one(assertion, q(SAML, "Subject"), "Subject")
    confirmation_end, in_response_to = _check_confirmation(subject, settings, expected, now)
    name_id = _one(subject, q(SAML, "NameID"), "NameID")
    name_id_value = text_of(name_id)
    if name_id_value is None:
        raise SamlError("malformed", "the NameID is empty")
    session_index = None
    authn = assertion.find(q(SAML, "AuthnStatement"))
    if authn is not None:
        session_index = authn.get("SessionIndex")
        session_end = parse_time(authn.get("SessionNotOnOrAfter"), what="SessionNotOnOrAfter")
        if session_end is not None and now - CLOCK_SKEW >= session_end:
            raise SamlError("expired", "the IdP session has ended (SessionNotOnOrAfter)")
    attributes = _attributes(assertion)
    wanted = (settings.groups_attribute,) if settings.groups_attribute else GROUP_ATTRIBUTES
    groups = _values(attributes, wanted)
    end = min(t for t in (conditions_end, confirmation_end) if t is not None)
    return SamlIdentity(
        name_id=name_id_value,
        email=_email(name_id, attributes, settings),
        groups=tuple(dict.fromkeys(groups)),
        assertion_id=assertion.get("ID") or "",
        not_on_or_after=end + CLOCK_SKEW,
        in_response_to=in_response_to,
        session_index=session_index,
    )


def parse_response(
    settings: SamlSettings,
    saml_response_b64: str,
    *,
    expected_request_id: str | None,
    now: datetime,
) -> SamlIdentity:
    """The identity in a SAML Response posted to the ACS URL (`SAMLResponse`), or
    `SamlError`. `expected_request_id` is the ID of the AuthnRequest this sign-in sent
    (SP-initiated), or None for an unsolicited response (IdP-initiated: refused unless
    `settings.allow_idp_initiated`, and then refused if it claims to answer a request).
    `now` is an aware datetime (`bastion.core.clock.utcnow()` in the service)."""
    now = as_utc(now)  # a naive time is UTC, as everywhere in Bastion
    root = parse(_decode(saml_response_b64), max_bytes=MAX_RESPONSE_BYTES, code="malformed")
    try:
        return _identity(settings, root, expected_request_id, now)
    except SamlError:
        raise
    except (xmlsec.Error, etree.LxmlError, ValueError, TypeError, OverflowError):
        # Default deny: whatever the XML libraries choke on is a refused response.
        raise SamlError("malformed", "the SAML response could not be processed") from None

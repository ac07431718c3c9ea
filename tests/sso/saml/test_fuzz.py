"""Whatever arrives at the ACS URL, `parse_response` answers with a SamlIdentity for a
genuine response or a SamlError, never another exception (which would be a 500)."""

from __future__ import annotations

import base64
import re
from datetime import datetime

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from bastion.core.clock import utcnow
from bastion.sso.saml import (
    CODES,
    SamlError,
    SamlSettings,
    SpCredentials,
    authn_request,
    parse_response,
)
from tests.sso.saml.conftest import Idp, IdpKeys, SamlIdpProcess, make_settings

FUZZ = hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Genuine:
    def __init__(
        self, settings: SamlSettings, response: str, request_id: str, now: datetime
    ) -> None:
        self.settings, self.response, self.request_id, self.now = (
            settings,
            response,
            request_id,
            now,
        )
        self.xml = base64.b64decode(response)


@pytest.fixture(scope="module")
def genuine(
    idp_process: SamlIdpProcess, idp_keys: IdpKeys, sp_credentials: SpCredentials
) -> Genuine:
    settings = make_settings(sp_credentials, (idp_keys.primary.cert_pem,))
    redirect = authn_request(settings, "fuzz")
    answer = Idp(idp_process, idp_keys).login(settings, redirect.url, sign="both")
    return Genuine(settings, answer["saml_response"], redirect.request_id, utcnow())


def _outcome(genuine: Genuine, value: str) -> str:
    try:
        identity = parse_response(
            genuine.settings, value, expected_request_id=genuine.request_id, now=genuine.now
        )
    except SamlError as exc:
        return exc.code
    assert identity.email == "ada@example.com"  # accepted only as the genuine identity
    return "accepted"


def test_genuine_is_accepted(genuine: Genuine) -> None:
    assert _outcome(genuine, genuine.response) == "accepted"


@FUZZ
@given(st.text(max_size=2000))
def test_any_text(genuine: Genuine, value: str) -> None:
    assert _outcome(genuine, value) != "accepted"


@FUZZ
@given(st.binary(max_size=2000))
def test_any_base64(genuine: Genuine, value: bytes) -> None:
    assert _outcome(genuine, base64.b64encode(value).decode()) != "accepted"


@FUZZ
@given(st.data())
def test_truncated(genuine: Genuine, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(genuine.response) - 1))
    assert _outcome(genuine, genuine.response[:cut]) != "accepted"
    xml_cut = data.draw(st.integers(0, len(genuine.xml) - 1))
    assert _outcome(genuine, base64.b64encode(genuine.xml[:xml_cut]).decode()) != "accepted"


@FUZZ
@given(st.data())
def test_mutated(genuine: Genuine, data: st.DataObject) -> None:
    """Bytes of the genuine XML replaced: refused, or (for an inert change such as
    whitespace outside what is signed) accepted as the same identity."""
    xml = bytearray(genuine.xml)
    for _ in range(data.draw(st.integers(1, 4))):
        xml[data.draw(st.integers(0, len(xml) - 1))] = data.draw(st.integers(0, 255))
    _outcome(genuine, base64.b64encode(bytes(xml)).decode())
    b64 = list(genuine.response)
    b64[data.draw(st.integers(0, len(b64) - 1))] = data.draw(st.sampled_from("A+/=%\n !é"))
    _outcome(genuine, "".join(b64))


KEYINFO = {"ds:KeyInfo", "ds:X509Data", "ds:X509Certificate"}


def _inert(text: str, at: int, dropped: str) -> bool:
    """Whether cutting `dropped` (at offset `at` of `text`) may leave the answer standing:
    the certificate a signature's KeyInfo carries (unsigned, and ignored: the IdP's
    certificates come from its metadata); one whole signature of the two (the response
    and its assertion are both signed: the other still covers the assertion); and with
    that, the response's own Issuer before it (optional, and unsigned once the response's
    signature is gone; the assertion's Issuer is required and signed)."""
    rest = dropped
    issuer = re.match(r"<saml:Issuer\b.*?</saml:Issuer>", rest, re.S)
    responses_issuer = issuer is not None and at == text.index("<saml:Issuer")
    if len(re.findall(r"<ds:Signature[\s>]", text)) == 2:  # not SignatureValue etc.
        rest, cut = re.subn(r"<ds:Signature[\s>].*?</ds:Signature>", "", rest, count=1, flags=re.S)
        if cut and responses_issuer and issuer is not None:
            rest = rest.replace(issuer.group(0), "", 1)
    return set(re.findall(r"</?([A-Za-z0-9:]+)", rest)) <= KEYINFO


@FUZZ
@given(st.data())
def test_elements_dropped(genuine: Genuine, data: st.DataObject) -> None:
    """Whole elements or attributes cut out of the genuine XML by text surgery."""
    text = genuine.xml.decode()
    starts = [i for i, c in enumerate(text) if c == "<"]
    a = data.draw(st.sampled_from(starts))
    b = data.draw(st.sampled_from([s for s in starts if s >= a] + [len(text)]))
    outcome = _outcome(genuine, base64.b64encode((text[:a] + text[b:]).encode()).decode())
    dropped = text[a:b]
    # Only dropping nothing, or the XML declaration (not part of any signed element),
    # leaves an acceptable response; anything else is refused with a known code, but for
    # what `_inert` allows.
    if dropped == "" or (dropped.startswith("<?xml") and dropped.endswith("?>")):
        assert outcome == "accepted"
    elif outcome == "accepted":
        assert re.findall(r"</?([A-Za-z0-9:]+)", dropped), dropped
        assert _inert(text, a, dropped), dropped
    else:
        assert outcome in CODES, dropped


def test_non_string_input(genuine: Genuine) -> None:
    for value in (None, b"bytes", 42):
        with pytest.raises(SamlError):
            parse_response(
                genuine.settings,
                value,
                expected_request_id=genuine.request_id,
                now=genuine.now,  # type: ignore[arg-type]
            )

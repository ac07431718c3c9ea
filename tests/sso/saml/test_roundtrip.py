"""SP-initiated and IdP-initiated sign-in against a real IdP (samlify): our signed
AuthnRequest is parsed and its signature verified by the IdP, whose signed response
our `parse_response` accepts."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from bastion.core.clock import utcnow
from bastion.sso.saml import CLOCK_SKEW, SamlError, SamlSettings, authn_request, parse_response
from tests.sso.saml.conftest import Idp
from tests.sso.saml.xmltools import signed_parts

# Which elements samlify signed for each mode (so each mode is really tested).
EXPECTED_SIGNED = {
    "assertion": {"Assertion"},
    "response": {"Response"},
    "both": {"Assertion", "Response"},
}


@pytest.mark.parametrize("sign", ["assertion", "response", "both"])
def test_sp_initiated_round_trip(idp: Idp, settings: SamlSettings, sign: str) -> None:
    redirect = authn_request(settings, "state-123")
    answer = idp.login(settings, redirect.url, sign=sign)
    assert signed_parts(answer["saml_response"]) == EXPECTED_SIGNED[sign]
    # The IdP read OUR request: its ID and the relay state came through.
    assert answer["request_id"] == redirect.request_id
    assert answer["relay_state"] == "state-123"
    identity = parse_response(
        settings, answer["saml_response"], expected_request_id=redirect.request_id, now=utcnow()
    )
    assert identity.email == "ada@example.com"
    assert identity.name_id == "ada@example.com"
    assert identity.groups == ("eng", "admins")
    assert identity.in_response_to == redirect.request_id
    assert identity.session_index is not None
    assert identity.session_index.startswith("_session_")
    assert identity.assertion_id
    # Replay bookkeeping: the id is kept until the assertion could no longer be accepted.
    assert utcnow() + timedelta(minutes=4) < identity.not_on_or_after
    assert identity.not_on_or_after <= utcnow() + timedelta(minutes=5) + CLOCK_SKEW


def test_each_request_has_a_fresh_id(settings: SamlSettings) -> None:
    ids = {authn_request(settings, "").request_id for _ in range(20)}
    assert len(ids) == 20


def test_idp_initiated_when_enabled(idp: Idp, settings: SamlSettings) -> None:
    enabled = dataclasses.replace(settings, allow_idp_initiated=True)
    answer = idp.login(enabled, None)
    identity = parse_response(
        enabled, answer["saml_response"], expected_request_id=None, now=utcnow()
    )
    assert identity.email == "ada@example.com"
    assert identity.in_response_to is None


def test_idp_initiated_refused_by_default(idp: Idp, settings: SamlSettings) -> None:
    answer = idp.login(settings, None)
    with pytest.raises(SamlError) as caught:
        parse_response(settings, answer["saml_response"], expected_request_id=None, now=utcnow())
    assert caught.value.code == "idp_initiated_disabled"


def test_a_naive_now_is_utc(idp: Idp, settings: SamlSettings) -> None:
    redirect = authn_request(settings, "")
    answer = idp.login(settings, redirect.url)
    naive = utcnow().replace(tzinfo=None)
    identity = parse_response(
        settings, answer["saml_response"], expected_request_id=redirect.request_id, now=naive
    )
    assert identity.email == "ada@example.com"
    with pytest.raises(SamlError, match="expired"):
        parse_response(
            settings,
            answer["saml_response"],
            expected_request_id=redirect.request_id,
            now=naive + timedelta(minutes=8),
        )

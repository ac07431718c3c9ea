"""Client addresses behind trusted proxies, allowlist membership, and the settings that
name them (`BASTION_TRUSTED_PROXIES`, `BASTION_PUBLIC_URL`)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.core.clientip import (
    BadNetwork,
    TrustedProxies,
    contains,
    normalize_networks,
    parse_address,
    parse_networks,
)
from bastion.core.config import ConfigError, load_settings

PROXIES = TrustedProxies(["10.0.0.0/8", "fd00::/8"])


@pytest.mark.parametrize(
    ("peer", "header", "client"),
    [
        ("198.51.100.1", "203.0.113.9", "198.51.100.1"),  # peer not a proxy: header ignored
        ("10.0.0.2", None, "10.0.0.2"),  # a proxy that says nothing
        ("10.0.0.2", "203.0.113.9", "203.0.113.9"),
        ("10.0.0.2", "1.1.1.1, 203.0.113.9", "203.0.113.9"),  # the left part is the client's
        ("10.0.0.2", "203.0.113.9, 10.0.0.3", "203.0.113.9"),  # proxies chained
        ("10.0.0.2", "10.0.0.4, 10.0.0.3", "10.0.0.4"),  # every hop a proxy: the leftmost
        ("10.0.0.2", "203.0.113.9, garbage", "10.0.0.2"),  # unparsable: stop believing
        ("fd00::1", "2001:db8::7", "2001:db8::7"),
        ("10.0.0.2", "[2001:db8::7]:443", "2001:db8::7"),
        ("10.0.0.2", " 203.0.113.9 ", "203.0.113.9"),
        (None, "203.0.113.9", None),
        ("testclient", "203.0.113.9", "testclient"),
    ],
)
def test_client_address(peer: str | None, header: str | None, client: str | None) -> None:
    assert PROXIES.client(peer, header) == client


def test_no_trusted_proxies_means_the_peer() -> None:
    nobody = TrustedProxies([])
    assert not nobody
    assert nobody.client("10.0.0.2", "203.0.113.9") == "10.0.0.2"


def test_networks_and_membership() -> None:
    networks = parse_networks(["10.1.0.0/16", "2001:db8::/32", "192.0.2.1", "10.2.3.4/8"])
    assert [str(n) for n in networks] == [
        "10.1.0.0/16",
        "2001:db8::/32",
        "192.0.2.1/32",
        "10.0.0.0/8",
    ]
    assert contains(networks, parse_address("10.1.200.3"))
    assert contains(networks, parse_address("::ffff:10.1.0.1"))  # v4-mapped
    assert contains(networks, parse_address("2001:db8::1"))
    assert not contains(networks, parse_address("192.0.2.2"))
    assert not contains(networks, parse_address("2001:db9::1"))
    assert not contains(networks, None)
    assert parse_address("not an address") is None
    assert normalize_networks(["10.0.0.1/8", "10.0.0.0/8", "::1"]) == ["10.0.0.0/8", "::1/128"]
    with pytest.raises(BadNetwork) as bad:
        parse_networks(["10.0.0.0/8", "10.0.0.0/99"])
    assert bad.value.index == 1


@pytest.mark.parametrize(
    ("given", "origin"),
    [
        ("https://bastion.example.com", "https://bastion.example.com"),
        ("https://bastion.example.com/", "https://bastion.example.com"),
        ("HTTP://LOCALHOST:8400", "http://localhost:8400"),
        ("http://[::1]:8400", "http://[::1]:8400"),
    ],
)
def test_public_url_is_an_origin(given: str, origin: str) -> None:
    assert load_settings(public_url=given).public_url == origin


def test_public_url_default() -> None:
    # localhost, not 127.0.0.1: the WebAuthn RP ID is its host, and browsers refuse an IP.
    assert load_settings().public_url == "http://localhost:8400"


@pytest.mark.parametrize(
    "given",
    [
        "bastion.example.com",
        "ftp://bastion.example.com",
        "https://bastion.example.com/app",
        "https://bastion.example.com?x=1",
        "https://user:pw@bastion.example.com",
        "https://bastion.example.com:99999",
        "https://",
    ],
)
def test_bad_public_urls_are_refused(given: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(public_url=given)
    assert "BASTION_PUBLIC_URL" in str(refused.value)
    assert "pw@" not in str(refused.value)


def test_bad_trusted_proxies_are_refused() -> None:
    with pytest.raises(ConfigError, match="BASTION_TRUSTED_PROXIES"):
        load_settings(trusted_proxies=["*"])
    assert load_settings(trusted_proxies=["10.0.0.0/8"]).trusted_proxies == ["10.0.0.0/8"]


def test_smtp_credentials_stay_out_of_reprs() -> None:
    settings = load_settings(smtp_username="mailer-user", smtp_password="mailer-password-x")
    assert "mailer-user" not in repr(settings)
    assert "mailer-password-x" not in repr(settings)


_HOPS = st.lists(
    st.sampled_from(
        ["10.0.0.2", "10.0.0.3", "fd00::9", "203.0.113.9", "198.51.100.4", "2001:db8::1"]
    ),
    max_size=5,
)


@given(peer=st.sampled_from(["10.0.0.1", "198.51.100.1"]), hops=_HOPS)
def test_the_client_is_the_rightmost_hop_not_a_proxy(peer: str, hops: list[str]) -> None:
    """Against a naive reference: walk the chain peer ← hops from the right while the
    current address is a trusted proxy; nothing left of the first untrusted address is
    ever believed."""
    trusted = {"10.0.0.1", "10.0.0.2", "10.0.0.3", "fd00::9"}
    expected = peer
    if peer in trusted:
        for hop in reversed(hops):
            expected = hop
            if hop not in trusted:
                break
    got = PROXIES.client(peer, ", ".join(hops) or None)
    assert got == expected

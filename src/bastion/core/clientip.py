"""Client addresses: who sent a request (behind trusted proxies), and whether an address
is inside a list of networks (an organisation's IP allowlist).

Both are parsed once (the trusted proxies when the app starts, an allowlist when its
credential is cached) and then answer each request with a few integer comparisons.

`X-Forwarded-For` is believed only when the peer that connected is a trusted proxy, and
then only as far as the chain of trusted proxies goes: its addresses are read from the
right, skipping trusted proxies, and the first one that is not a proxy is the client.
Anything to the left of it was written by the client and is never believed. A header
that does not parse leaves the peer as the client.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class BadNetwork(ValueError):
    """An entry of a list of networks is not an address or a CIDR network."""

    def __init__(self, index: int) -> None:
        super().__init__(f"entry {index} is not an IPv4 or IPv6 address or CIDR network")
        self.index = index


def parse_address(text: str | None) -> Address | None:
    if not text:
        return None
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[2001:db8::1]:443"
        text = text[1 : text.index("]")]
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # "::ffff:10.0.0.1" is 10.0.0.1
    return address


def parse_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """Each entry as a network (an address alone is a /32 or /128); raises `BadNetwork`
    naming the first bad entry. Host bits set are allowed (`10.0.0.1/8` is 10.0.0.0/8)."""
    parsed: list[Network] = []
    for index, entry in enumerate(entries):
        try:
            parsed.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise BadNetwork(index) from None
    return tuple(parsed)


def normalize_networks(entries: Sequence[str]) -> list[str]:
    """The canonical text of each network, duplicates removed, order kept."""
    seen: dict[str, None] = {}
    for network in parse_networks(entries):
        seen.setdefault(str(network), None)
    return list(seen)


def contains(networks: Sequence[Network], address: Address | None) -> bool:
    """Whether `address` is in one of `networks` (an unknown address is in none)."""
    if address is None:
        return False
    return any(address in network for network in networks if network.version == address.version)


class TrustedProxies:
    """The proxies whose `X-Forwarded-For` is believed (`BASTION_TRUSTED_PROXIES`)."""

    def __init__(self, entries: Iterable[str]) -> None:
        self._networks = parse_networks(entries)

    def __bool__(self) -> bool:
        return bool(self._networks)

    def __repr__(self) -> str:
        return f"TrustedProxies({[str(n) for n in self._networks]})"

    def client(self, peer: str | None, forwarded_for: str | None) -> str | None:
        """The client's address: the peer's, unless the peer is a trusted proxy and the
        header names hops before it (then the rightmost hop that is not a proxy)."""
        if not self._networks or not forwarded_for:
            return peer
        if not contains(self._networks, parse_address(peer)):
            return peer
        client = peer
        for hop in reversed(forwarded_for.split(",")):
            address = parse_address(hop)
            if address is None:
                return client  # a hop that does not parse ends what can be believed
            client = str(address)
            if not contains(self._networks, address):
                return client
        return client  # every hop a proxy: the leftmost one

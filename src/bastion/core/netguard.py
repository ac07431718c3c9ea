"""Outbound destinations: refuse loopback, private, link-local, reserved and metadata
addresses (SSRF) unless the operator allowlists them (`BASTION_OUTBOUND_ALLOW`)."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class OutboundRefused(Exception):
    """The destination is not allowed; the message names the host, never a secret."""


def _allowed_networks(allow: Sequence[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    networks = []
    for entry in allow:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            continue  # a host name entry
    return networks


def _internal(ip: Address) -> bool:
    return (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_reserved
        or ip.is_multicast
        or ip.is_unspecified
        or (isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None
            and _internal(ip.ipv4_mapped))
    )  # fmt: skip


def check_destination(host: str, port: int, allow: Sequence[str]) -> None:
    """Resolve `host` and refuse it when any address is internal and not allowlisted.
    Allowlist entries are host names (exact) or CIDR networks."""
    if host in allow:
        return
    networks = _allowed_networks(allow)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise OutboundRefused(f"cannot resolve {host!r}") from exc
    if not infos:
        raise OutboundRefused(f"cannot resolve {host!r}")
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if any(ip in network for network in networks):
            continue
        if _internal(ip):
            raise OutboundRefused(
                f"{host!r} resolves to an internal address; allowlist it in "
                "BASTION_OUTBOUND_ALLOW to send there"
            )


def network_of(ip: str | None) -> str | None:
    """The network an address belongs to for "new network" checks: IPv4 /24, IPv6 /48;
    None for anything that is not an IP address."""
    if not ip:
        return None
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))

"""The gateway's own connections to upstreams pass the instance's outbound guard
(`bastion.core.netguard`, through `bastion.mcp.transport`) on every connection, not only
when a server is registered: a destination that resolves to a private or loopback
address is refused unless `BASTION_OUTBOUND_ALLOW` lists it, and plain http:// is
refused unless `BASTION_OUTBOUND_PLAINTEXT_ALLOW` does. The real upstream MCP server
proves a refused connection never reached it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from bastion.mcp.service import Upstream as Server
from bastion.mcp.upstream import UpstreamError, Upstreams
from tests.mcp.upstream import Upstream

LOOPBACK = ("127.0.0.0/8",)


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with Upstream() as up:
        yield up


def _server(url: str) -> Server:
    return Server("mcs_egress", "org_egress", "calc", url, 1)


def _tools(upstreams: Upstreams, server: Server) -> list[str]:
    async def go() -> list[str]:
        try:
            return sorted(await upstreams.tools(server, fresh=True))
        finally:
            await upstreams.aclose()

    return asyncio.run(go())


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_a_private_destination_is_refused_unless_allowed(upstream: Upstream, host: str) -> None:
    server = _server(f"http://{host}:{upstream.port}/mcp")
    before = len(upstream.methods)
    with pytest.raises(UpstreamError) as refused:
        _tools(Upstreams(allow=(), plaintext=LOOPBACK), server)
    assert refused.value.reason == "calc: destination refused by the outbound guard"
    assert len(upstream.methods) == before  # never connected
    # The operator's allowance opens it (and only it).
    assert _tools(Upstreams(allow=LOOPBACK, plaintext=LOOPBACK), server) == ["add", "refund"]
    assert len(upstream.methods) > before


def test_plain_http_is_refused_unless_allowed(upstream: Upstream) -> None:
    server = _server(upstream.url)
    before = len(upstream.methods)
    with pytest.raises(UpstreamError) as refused:
        _tools(Upstreams(allow=LOOPBACK, plaintext=()), server)
    assert refused.value.reason == "calc: destination refused by the outbound guard"
    assert len(upstream.methods) == before

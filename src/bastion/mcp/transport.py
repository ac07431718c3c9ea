"""The outbound guard for the gateway's upstream connections (the async httpx2 stack the
`mcp` SDK's client uses), as `bastion.core.netguard.GuardedTransport` guards webhooks:
each new connection resolves its host once, every address is vetted against the SSRF
policy (`BASTION_OUTBOUND_ALLOW`) and the connection goes to a vetted address (no
second lookup for a rebinding name to exploit); plain http:// connects only to a
destination in `BASTION_OUTBOUND_PLAINTEXT_ALLOW`. Environment proxies never apply."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import anyio.to_thread
import httpcore2
import httpx2
from httpcore2 import AsyncNetworkStream
from httpcore2._backends.anyio import AnyIOBackend

from bastion.core.netguard import check_plaintext, vetted_addresses

CONNECT_TIMEOUT = 10.0


class _GuardedBackend(AnyIOBackend):
    def __init__(self, allow: Sequence[str], plaintext: Sequence[str] | None) -> None:
        self._allow = tuple(allow)
        # None: the transport's URL is https:// (TLS, always allowed); else the allowance.
        self._plaintext = None if plaintext is None else tuple(plaintext)

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore2's signature
        local_address: str | None = None,
        socket_options: Iterable[httpcore2.SOCKET_OPTION] | None = None,
    ) -> AsyncNetworkStream:
        addresses = await anyio.to_thread.run_sync(vetted_addresses, host, port, self._allow)
        if self._plaintext is not None:
            check_plaintext(host, port, self._plaintext, addresses)
        last: Exception | None = None
        for address in addresses or [host]:  # None: an allowlisted host name
            try:
                return await super().connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except (httpcore2.ConnectError, httpcore2.ConnectTimeout) as exc:
                last = exc
        raise last or httpcore2.ConnectError("no address")


class GuardedAsyncTransport(httpx2.AsyncHTTPTransport):
    """An httpx2 transport for one upstream URL whose every connection is vetted."""

    def __init__(self, url: str, allow: Sequence[str], plaintext: Sequence[str]) -> None:
        super().__init__(trust_env=False)
        plain = not url.lower().startswith("https://")
        self._pool = httpcore2.AsyncConnectionPool(
            ssl_context=httpx2.create_ssl_context(trust_env=False),
            max_connections=20,
            max_keepalive_connections=10,
            keepalive_expiry=30.0,
            network_backend=_GuardedBackend(allow, plaintext if plain else None),
        )


def guarded_client(
    url: str,
    allow: Sequence[str],
    plaintext: Sequence[str],
    headers: dict[str, str],
    auth: httpx2.Auth | None = None,
) -> httpx2.AsyncClient:
    """The httpx2 client the SDK speaks to one upstream through: the guard, the sealed
    static headers, no redirects followed but the SDK's own same-origin ones, no
    environment proxies; `auth`, a credential added per request (an integration's token)."""
    return httpx2.AsyncClient(
        transport=GuardedAsyncTransport(url, allow, plaintext),
        headers=headers,
        auth=auth,
        timeout=httpx2.Timeout(30.0, connect=CONNECT_TIMEOUT),
        follow_redirects=False,
        trust_env=False,
    )

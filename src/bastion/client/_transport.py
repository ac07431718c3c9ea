"""What the generated resource classes need of a client: send a request description
and parse the answer into the operation's type."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, Protocol

from bastion.client._base import Req, T


class SyncTransport(Protocol):
    def set_token(self, token: Any) -> None: ...

    def _request(self, req: Req, result: Any) -> Any: ...

    def _request_list(self, req: Req, item: type[T]) -> list[T]: ...

    def _iterate(self, req: Req, item: type[T]) -> Iterator[T]: ...


class AsyncTransport(Protocol):
    def set_token(self, token: Any) -> None: ...

    async def _request(self, req: Req, result: Any) -> Any: ...

    async def _request_list(self, req: Req, item: type[T]) -> list[T]: ...

    def _iterate(self, req: Req, item: type[T]) -> AsyncIterator[T]: ...

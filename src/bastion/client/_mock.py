"""Offline testing: serve canned responses to a `Client` without a server.

    from bastion.client import Client, MockBastion

    mock = MockBastion()
    mock.add("GET", "/v1/me", {"principal_type": "api_key", "id": "key_1", "org_id": "org_1",
                               "role": "admin", "permissions": []})
    mock.add("DELETE", "/v1/orgs/org_1/users/usr_1", status=404,
             json={"status": 404, "code": "not_found", "detail": "user not found"})
    client = Client("http://bastion.test", token="bsk_test", transport=mock.transport())
    assert client.me()["id"] == "key_1"

Responses registered for the same method and path are served in order; the last one
repeats. Every request is kept in `mock.requests` for assertions.
"""

from __future__ import annotations

import json as _json
from collections import defaultdict
from typing import Any

import httpx


class MockBastion:
    def __init__(self) -> None:
        self._routes: dict[tuple[str, str], list[httpx.Response]] = defaultdict(list)
        self.requests: list[httpx.Request] = []

    def add(
        self,
        method: str,
        path: str,
        json: Any = None,
        *,
        status: int = 200,
        headers: dict[str, str] | None = None,
    ) -> MockBastion:
        content_type = "application/problem+json" if status >= 400 else "application/json"
        body = b"" if json is None else _json.dumps(json).encode()
        response = httpx.Response(
            status, content=body, headers={"content-type": content_type, **(headers or {})}
        )
        self._routes[(method.upper(), path)].append(response)
        return self

    def _handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        queue = self._routes.get((request.method, request.url.path))
        if not queue:
            return httpx.Response(
                404,
                json={
                    "status": 404,
                    "code": "not_found",
                    "title": "Not found",
                    "detail": f"no mock for {request.method} {request.url.path}",
                },
            )
        return queue.pop(0) if len(queue) > 1 else queue[0]

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self._handle)

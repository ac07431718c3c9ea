"""The asynchronous client: the same surface as `Client`, awaited."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

import httpx

from bastion.client._base import (
    JSON,
    RETRY_STATUSES,
    Endpoints,
    Req,
    RetryPolicy,
    decode,
    headers_for,
    may_retry,
)
from bastion.client._errors import TransportError

E = Endpoints


class AsyncClient:
    """Bastion API client.

        client = Client("http://127.0.0.1:8400", token="bsk_…")
        for user in client.users.list(org_id):
            ...

    `token` is an API key (`bsk_…`) or a session token (`bss_…`). Pass `http_client`
    (any `httpx.Client`, e.g. with a mock transport) to control the connection.
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8400",
        token: str | None = None,
        *,
        timeout: float = 30.0,
        max_retries: int = 2,
        http_client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._token = token
        self._own = http_client is None
        self._http = http_client or httpx.AsyncClient(
            base_url=base_url, timeout=timeout, transport=transport
        )
        self.retry = retry or RetryPolicy(max_retries=max_retries)
        self.auth = _Auth(self)
        self.sessions = _Sessions(self)
        self.orgs = _Orgs(self)
        self.users = _Users(self, "users")
        self.teams = _Teams(self, "teams")
        self.roles = _Collection(self, "roles")
        self.api_keys = _ApiKeys(self, "api-keys")
        self.service_accounts = _Collection(self, "service-accounts")
        self.audit_events = _Audit(self, "audit-events")

    def __repr__(self) -> str:
        token = "set" if self._token else "none"
        return f"AsyncClient(base_url={str(self._http.base_url)!r}, token={token})"

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own:
            await self._http.aclose()

    def set_token(self, token: str | None) -> None:
        self._token = token

    async def me(self) -> JSON:
        return await self._call(E.me())

    async def permissions(self) -> list[JSON]:
        return list((await self._call(E.permissions()))["data"])

    # --- plumbing --------------------------------------------------------------
    async def _call(self, req: Req) -> JSON:
        return cast(JSON, await self._run(req))

    async def _run(self, req: Req) -> Any:
        attempt = 0
        while True:
            try:
                response = await self._http.request(
                    req.method,
                    req.path,
                    params=req.params,
                    json=req.json,
                    headers=headers_for(self._token, req),
                )
            except httpx.TransportError as exc:
                if attempt < self.retry.max_retries and may_retry(req):
                    await asyncio.sleep(self.retry.delay(attempt, None))
                    attempt += 1
                    continue
                raise TransportError(f"{req.method} {req.path}: {type(exc).__name__}") from None
            if (
                response.status_code in RETRY_STATUSES
                and attempt < self.retry.max_retries
                and may_retry(req)
            ):
                await asyncio.sleep(self.retry.delay(attempt, _retry_after(response)))
                attempt += 1
                continue
            return decode(
                response.status_code,
                response.content,
                _json(response),
                response.headers.get("retry-after"),
            )

    async def _pages(self, req: Req) -> AsyncIterator[JSON]:
        cursor: str | None = None
        while True:
            params = dict(req.params or {})
            if cursor:
                params["cursor"] = cursor
            page = await self._run(Req(req.method, req.path, params=params))
            for item in page["data"]:
                yield item
            cursor = page.get("next_cursor")
            if not cursor:
                return


def _json(response: httpx.Response) -> Any:
    try:
        return response.json() if response.content else None
    except ValueError:
        return None


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers["retry-after"])
    except (KeyError, ValueError):
        return None


class _Auth:
    def __init__(self, c: AsyncClient) -> None:
        self._c = c

    async def login(self, email: str, password: str, *, use: bool = True) -> JSON:
        """Sign in; with `use=True` the client sends the new session token from now on."""
        result = await self._c._call(E.login(email, password))
        if use:
            self._c.set_token(result["token"])
        return result

    async def logout(self) -> None:
        await self._c._run(E.logout())

    async def setup(self, token: str, password: str) -> JSON:
        return await self._c._call(E.setup(token, password))


class _Sessions:
    def __init__(self, c: AsyncClient) -> None:
        self._c = c

    def list(self) -> AsyncIterator[JSON]:
        return self._c._pages(E.sessions())

    async def revoke(self, session_id: str) -> None:
        await self._c._run(E.revoke_session(session_id))

    async def revoke_others(self) -> None:
        await self._c._run(E.revoke_other_sessions())


class _Orgs:
    def __init__(self, c: AsyncClient) -> None:
        self._c = c

    async def get(self, org: str) -> JSON:
        return await self._c._call(E.get_org(org))

    async def update(self, org: str, **changes: Any) -> JSON:
        return await self._c._call(E.update_org(org, **changes))


class _Collection:
    def __init__(self, c: AsyncClient, name: str) -> None:
        self._c = c
        self._name = name

    async def create(self, org: str, *, idempotency_key: str | None = None, **fields: Any) -> JSON:
        return await self._c._call(E.create(org, self._name, fields, idempotency_key))

    def list(
        self, org: str, *, page_size: int | None = None, **filters: Any
    ) -> AsyncIterator[JSON]:
        """Every item, newest first, fetching pages lazily (`async for`)."""
        return self._c._pages(E.list(org, self._name, page_size, **filters))

    async def page(
        self, org: str, *, limit: int | None = None, cursor: str | None = None, **filters: Any
    ) -> JSON:
        """One page: `{"data": [...], "next_cursor": ...}`."""
        return await self._c._call(E.list(org, self._name, limit, cursor=cursor, **filters))

    async def get(self, org: str, item: str) -> JSON:
        return await self._c._call(E.get(org, self._name, item))

    async def update(self, org: str, item: str, **changes: Any) -> JSON:
        return await self._c._call(E.update(org, self._name, item, changes))

    async def delete(self, org: str, item: str) -> None:
        await self._c._run(E.delete(org, self._name, item))


class _Users(_Collection):
    async def grant_role(
        self, org: str, user: str, *, role: str, expires_at: str, reason: str
    ) -> JSON:
        body = {"role": role, "expires_at": expires_at, "reason": reason}
        return await self._c._call(E.grant_role(org, user, body))

    def list_grants(self, org: str, user: str) -> AsyncIterator[JSON]:
        return self._c._pages(E.list_grants(org, user))

    async def revoke_grant(self, org: str, user: str, grant: str) -> None:
        await self._c._run(E.revoke_grant(org, user, grant))


class _Teams(_Collection):
    async def add_member(self, org: str, team: str, user: str) -> None:
        await self._c._run(E.add_member(org, team, user))

    async def remove_member(self, org: str, team: str, user: str) -> None:
        await self._c._run(E.remove_member(org, team, user))


class _ApiKeys(_Collection):
    async def rotate(self, org: str, key: str, *, overlap_seconds: int = 0) -> JSON:
        return await self._c._call(E.rotate_key(org, key, overlap_seconds))

    async def revoke(self, org: str, key: str) -> None:
        await self.delete(org, key)


class _Audit(_Collection):
    async def verify(self, org: str) -> JSON:
        return await self._c._call(E.verify_audit(org))

"""The synchronous client."""

from __future__ import annotations

import time
from collections.abc import Iterator
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


class Client:
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
        http_client: httpx.Client | None = None,
        transport: httpx.BaseTransport | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._token = token
        self._own = http_client is None
        self._http = http_client or httpx.Client(
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
        return f"Client(base_url={str(self._http.base_url)!r}, token={token})"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        if self._own:
            self._http.close()

    def set_token(self, token: str | None) -> None:
        self._token = token

    def me(self) -> JSON:
        return self._call(E.me())

    def permissions(self) -> list[JSON]:
        return list(self._call(E.permissions())["data"])

    # --- plumbing --------------------------------------------------------------
    def _call(self, req: Req) -> JSON:
        return cast(JSON, self._run(req))

    def _run(self, req: Req) -> Any:
        attempt = 0
        while True:
            try:
                response = self._http.request(
                    req.method,
                    req.path,
                    params=req.params,
                    json=req.json,
                    headers=headers_for(self._token, req),
                )
            except httpx.TransportError as exc:
                if attempt < self.retry.max_retries and may_retry(req):
                    time.sleep(self.retry.delay(attempt, None))
                    attempt += 1
                    continue
                raise TransportError(f"{req.method} {req.path}: {type(exc).__name__}") from None
            if (
                response.status_code in RETRY_STATUSES
                and attempt < self.retry.max_retries
                and may_retry(req)
            ):
                time.sleep(self.retry.delay(attempt, _retry_after(response)))
                attempt += 1
                continue
            return decode(
                response.status_code,
                response.content,
                _json(response),
                response.headers.get("retry-after"),
            )

    def _pages(self, req: Req) -> Iterator[JSON]:
        cursor: str | None = None
        while True:
            params = dict(req.params or {})
            if cursor:
                params["cursor"] = cursor
            page = self._run(Req(req.method, req.path, params=params))
            yield from page["data"]
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
    def __init__(self, c: Client) -> None:
        self._c = c

    def login(self, email: str, password: str, *, use: bool = True) -> JSON:
        """Sign in; with `use=True` the client sends the new session token from now on."""
        result = self._c._call(E.login(email, password))
        if use:
            self._c.set_token(result["token"])
        return result

    def logout(self) -> None:
        self._c._run(E.logout())

    def setup(self, token: str, password: str) -> JSON:
        return self._c._call(E.setup(token, password))


class _Sessions:
    def __init__(self, c: Client) -> None:
        self._c = c

    def list(self) -> Iterator[JSON]:
        return self._c._pages(E.sessions())

    def revoke(self, session_id: str) -> None:
        self._c._run(E.revoke_session(session_id))

    def revoke_others(self) -> None:
        self._c._run(E.revoke_other_sessions())


class _Orgs:
    def __init__(self, c: Client) -> None:
        self._c = c

    def get(self, org: str) -> JSON:
        return self._c._call(E.get_org(org))

    def update(self, org: str, **changes: Any) -> JSON:
        return self._c._call(E.update_org(org, **changes))


class _Collection:
    def __init__(self, c: Client, name: str) -> None:
        self._c = c
        self._name = name

    def create(self, org: str, *, idempotency_key: str | None = None, **fields: Any) -> JSON:
        return self._c._call(E.create(org, self._name, fields, idempotency_key))

    def list(self, org: str, *, page_size: int | None = None, **filters: Any) -> Iterator[JSON]:
        """Every item, newest first, fetching pages lazily."""
        return self._c._pages(E.list(org, self._name, page_size, **filters))

    def page(
        self, org: str, *, limit: int | None = None, cursor: str | None = None, **filters: Any
    ) -> JSON:
        """One page: `{"data": [...], "next_cursor": ...}`."""
        return self._c._call(E.list(org, self._name, limit, cursor=cursor, **filters))

    def get(self, org: str, item: str) -> JSON:
        return self._c._call(E.get(org, self._name, item))

    def update(self, org: str, item: str, **changes: Any) -> JSON:
        return self._c._call(E.update(org, self._name, item, changes))

    def delete(self, org: str, item: str) -> None:
        self._c._run(E.delete(org, self._name, item))


class _Users(_Collection):
    def grant_role(self, org: str, user: str, *, role: str, expires_at: str, reason: str) -> JSON:
        body = {"role": role, "expires_at": expires_at, "reason": reason}
        return self._c._call(E.grant_role(org, user, body))

    def list_grants(self, org: str, user: str) -> Iterator[JSON]:
        return self._c._pages(E.list_grants(org, user))

    def revoke_grant(self, org: str, user: str, grant: str) -> None:
        self._c._run(E.revoke_grant(org, user, grant))


class _Teams(_Collection):
    def add_member(self, org: str, team: str, user: str) -> None:
        self._c._run(E.add_member(org, team, user))

    def remove_member(self, org: str, team: str, user: str) -> None:
        self._c._run(E.remove_member(org, team, user))


class _ApiKeys(_Collection):
    def rotate(self, org: str, key: str, *, overlap_seconds: int = 0) -> JSON:
        return self._c._call(E.rotate_key(org, key, overlap_seconds))

    def revoke(self, org: str, key: str) -> None:
        self.delete(org, key)


class _Audit(_Collection):
    def verify(self, org: str) -> JSON:
        return self._c._call(E.verify_audit(org))

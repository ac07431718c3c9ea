"""The synchronous client."""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, cast, overload

import httpx

from bastion.client import _runs
from bastion.client._base import (
    JSON,
    Endpoints,
    Req,
    RetryPolicy,
    decode,
    headers_for,
    may_retry,
    retryable,
)
from bastion.client._errors import BastionError, TransportError
from bastion.client._oauth import ClientCredentials
from bastion.client._runs import DEFAULT_TIMEOUT, Arguments, F, OnPending

E = Endpoints


class Client:
    """Bastion API client.

        client = Client("http://127.0.0.1:8400", token="bsk_…")
        for user in client.users.list(org_id):
            ...

    `token` is an API key (`bsk_…`), a session token (`bss_…`) or a service account's
    OAuth client (`ClientCredentials(client_id, client_secret)`: access tokens are
    fetched and renewed as needed). Pass `http_client`
    (any `httpx.Client`, e.g. with a mock transport) to control the connection.
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8400",
        token: str | ClientCredentials | None = None,
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
        self.oauth_clients = _OAuthClients(self)
        self.audit_events = _Audit(self, "audit-events")
        self.agents = _Agents(self, "agents")
        self.workflows = _Collection(self, "workflows")
        self.approval_policies = _Policies(self, "approval-policies")
        self.approvals = _Approvals(self)
        self.sso_connections = _Collection(self, "sso-connections")
        self.domains = _Domains(self, "domains")
        self.runs = _Runs(self)
        self.privacy = _Privacy(self)

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

    def set_token(self, token: str | ClientCredentials | None) -> None:
        self._token = token

    def me(self) -> JSON:
        return self._call(E.me())

    def permissions(self) -> list[JSON]:
        return list(self._call(E.permissions())["data"])

    # --- plumbing --------------------------------------------------------------
    def _call(self, req: Req) -> JSON:
        return cast(JSON, self._run(req))

    def _bearer(self) -> str | None:
        """The bearer token: the one given, or a current access token of the OAuth
        client given (fetched when it has none that lasts)."""
        source = self._token
        if not isinstance(source, ClientCredentials):
            return source
        held = source.current()
        if held is not None:
            return held
        path, form, headers = source.token_request()
        try:
            response = self._http.post(path, data=form, headers=headers)
        except httpx.TransportError as exc:
            raise TransportError(f"POST {path}: {type(exc).__name__}") from None
        return source.accept(
            response.status_code, _json(response), response.headers.get("retry-after")
        )

    def _run(self, req: Req) -> Any:
        attempt = 0
        renewed = False
        while True:
            try:
                response = self._http.request(
                    req.method,
                    req.path,
                    params=req.params,
                    json=req.json,
                    headers=headers_for(self._bearer(), req),
                    # Omitted, not httpx's USE_CLIENT_DEFAULT: a test's Starlette TestClient
                    # may be an httpx2 client (installed with the `mcp` SDK).
                    **cast(dict[str, Any], {} if req.timeout is None else {"timeout": req.timeout}),
                )
            except httpx.TransportError as exc:
                if attempt < self.retry.max_retries and may_retry(req):
                    time.sleep(self.retry.delay(attempt, None))
                    attempt += 1
                    continue
                raise TransportError(f"{req.method} {req.path}: {type(exc).__name__}") from None
            if (
                retryable(response.status_code, _json(response))
                and attempt < self.retry.max_retries
                and may_retry(req)
            ):
                time.sleep(self.retry.delay(attempt, _retry_after(response)))
                attempt += 1
                continue
            if (
                response.status_code == 401
                and not renewed
                and isinstance(self._token, ClientCredentials)
            ):
                self._token.forget()  # revoked or expired early: one new token, once
                renewed = True
                continue
            if req.raw and response.status_code < 400:
                return response.content
            return decode(
                response.status_code,
                response.content,
                _json(response),
                response.headers.get("retry-after"),
                response.headers.get("www-authenticate"),
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
        """Sign in; with `use=True` the client sends the new session token from now on.
        When a second factor is owed the answer has `mfa_required` (or
        `mfa_enrolment_required`) and an `mfa_token` instead: finish with `mfa(...)`."""
        result = self._c._call(E.login(email, password))
        if use and "token" in result:
            self._c.set_token(result["token"])
        return result

    def mfa(self, mfa_token: str, method: str, code: str, *, use: bool = True) -> JSON:
        """Finish a sign-in with a second factor (`method`: "totp" or "recovery_code")."""
        result = self._c._call(E.mfa(mfa_token, method, code))
        if use:
            self._c.set_token(result["token"])
        return result

    def step_up(self, method: str, *, code: str | None = None, password: str | None = None) -> JSON:
        """Verify again (RFC 9470) after a `StepUpRequired`: `{"auth_time", "amr"}`."""
        return self._c._call(E.step_up(method, code, password))

    def sso_exchange(self, code: str, *, use: bool = True) -> JSON:
        """Exchange the one-time `code` an SSO sign-in sent to `return_to` for a session
        (`{"token", "expires_at", "user_id"}`); with `use=True` the client uses it."""
        result = self._c._call(E.sso_exchange(code))
        if use:
            self._c.set_token(result["token"])
        return result

    def logout(self) -> None:
        self._c._run(E.logout())

    def setup(self, token: str, password: str) -> JSON:
        return self._c._call(E.setup(token, password))

    def change_password(self, current_password: str, new_password: str) -> None:
        """Change the signed-in user's password; their other sessions end."""
        self._c._run(E.change_password(current_password, new_password))

    def request_password_reset(self, email: str) -> None:
        """Ask for a reset link by email (the same answer whether the email is known)."""
        self._c._run(E.request_password_reset(email))

    def confirm_password_reset(self, token: str, password: str) -> None:
        """Set a new password with the emailed token; every session of the user ends."""
        self._c._run(E.confirm_password_reset(token, password))


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

    def end_sessions(self, org: str) -> None:
        """End every session of every user of the organisation now but the caller's."""
        self._c._run(E.end_org_sessions(org))


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

    def sessions(self, org: str, user: str) -> Iterator[JSON]:
        """A user's active sessions, newest first."""
        return self._c._pages(E.user_sessions(org, user))

    def end_sessions(self, org: str, user: str, session: str | None = None) -> None:
        """End every session of the user now, or only `session`."""
        self._c._run(E.end_user_sessions(org, user, session))


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


class _OAuthClients:
    """A service account's OAuth clients: `create` shows the `client_secret` once."""

    def __init__(self, c: Client) -> None:
        self._c = c

    def create(self, org: str, account: str, *, name: str, scopes: list[str] | None = None) -> JSON:
        body: JSON = {"name": name}
        if scopes is not None:
            body["scopes"] = scopes
        return self._c._call(E.create_oauth_client(org, account, body))

    def list(self, org: str, account: str) -> Iterator[JSON]:
        return self._c._pages(E.oauth_clients(org, account))

    def delete(self, org: str, account: str, client: str) -> None:
        """Delete the client: every token it obtained stops working at once."""
        self._c._run(E.delete_oauth_client(org, account, client))


class _Domains(_Collection):
    def verify(self, org: str, domain: str) -> JSON:
        """Look the domain's TXT record up; 422 `domain_not_verified` while it is absent."""
        return self._c._call(E.verify_domain(org, domain))


class _Audit(_Collection):
    def verify(self, org: str) -> JSON:
        return self._c._call(E.verify_audit(org))


class _Agents(_Collection):
    def hub(self, *, page_size: int | None = None) -> Iterator[JSON]:
        """Public agents of every organisation (their published definitions)."""
        return self._c._pages(E.hub_agents(page_size))


class _Policies(_Collection):
    def reapprove(self, org: str, policy: str) -> JSON:
        """Re-pin an `allow` policy to the current definitions of the tools it matches."""
        return self._c._call(E.reapprove_policy(org, policy))


class _Approvals:
    def __init__(self, c: Client) -> None:
        self._c = c

    def list(
        self,
        org: str,
        *,
        status: str | None = None,
        mine: bool | None = None,
        page_size: int | None = None,
    ) -> Iterator[JSON]:
        """Approvals, newest first; `mine=True` is the caller's inbox (those they may
        decide now), `status` one of pending, approved, denied, expired."""
        return self._c._pages(E.list(org, "approvals", page_size, status=status, mine=mine))

    def get(self, org: str, approval: str) -> JSON:
        return self._c._call(E.get(org, "approvals", approval))

    def approve(self, org: str, approval: str, *, comment: str = "") -> JSON:
        return self._c._call(E.decide_approval(org, approval, "approve", comment))

    def deny(self, org: str, approval: str, *, comment: str = "") -> JSON:
        return self._c._call(E.decide_approval(org, approval, "deny", comment))


class _Runs:
    def __init__(self, c: Client) -> None:
        self._c = c

    def start(
        self,
        agent: str | Mapping[str, Any],
        *,
        on_behalf_of: str | None = None,
        org: str | None = None,
        workflow_id: str | None = None,
        ttl_seconds: int | None = None,
        max_tool_calls: int | None = None,
        max_pending_approvals: int | None = None,
        idempotency_key: str | None = None,
    ) -> Run:
        """Start a run of `agent` (its id, or the agent object) acting for `on_behalf_of`
        (default: the caller). `org` defaults to the agent object's, else the caller's."""
        org_id, agent_id = _runs.org_and_agent(agent, org)
        if org_id is None:
            org_id = str(self._c.me()["org_id"])
        body = _runs.run_body(
            on_behalf_of, workflow_id, ttl_seconds, max_tool_calls, max_pending_approvals
        )
        started = self._c._call(E.start_run(org_id, agent_id, body, idempotency_key))
        return Run(self._c, org_id, agent_id, started)

    def get(self, run: str) -> JSON:
        return self._c._call(E.get_run(run))

    def list(self, org: str, agent: str, *, page_size: int | None = None) -> Iterator[JSON]:
        return self._c._pages(E.list_runs(org, agent, page_size))

    def revoke(self, org: str, run: str) -> JSON:
        return self._c._call(E.revoke_run(org, run))


class Run:
    """A started run: it talks to the gate with its own `bat_…` token over the parent
    client's connection (closing the run never closes that connection).

        run = bastion.runs.start(agent_id, on_behalf_of=user_id)

        @run.guard(timeout=120)
        def refund_payment(order: str, amount: float) -> str: ...

        refund_payment("A-1", 250)   # asks the gate first; ActionDenied unless allowed

    As a context manager (`with bastion.runs.start(...) as run:`) the run is revoked on
    exit, so its token stops working at once.
    """

    def __init__(self, parent: Client, org_id: str, agent_id: str, started: JSON) -> None:
        self.id: str = started["run_id"]
        self.token: str = started["token"]
        self.expires_at = _runs.parse_time(started["expires_at"])
        self.org_id = org_id
        self.agent_id = agent_id
        self._parent = parent
        self._c = Client(http_client=parent._http, token=self.token, retry=parent.retry)

    def __repr__(self) -> str:
        return _runs.run_repr("Run", self.id, self.agent_id, self.expires_at)

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        try:
            self.revoke()
        except BastionError:
            if exc_type is None:
                raise

    def status(self) -> JSON:
        """The run as the server sees it: `status` (active, expired, revoked), counts…"""
        return self._c._call(E.get_run(self.id))

    def revoke(self) -> JSON:
        """End the run (with the parent client's credentials)."""
        return self._parent._call(E.revoke_run(self.org_id, self.id))

    def tool_call(
        self,
        tool: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        connection: str | None = None,
        idempotency_key: str | None = None,
    ) -> JSON:
        """Ask the gate once: the call with `decision` allow, deny or pending."""
        body = {"tool": tool, "arguments": dict(arguments or {}), "connection": connection}
        return self._c._call(E.tool_call(self.id, body, idempotency_key))

    def wait(self, call_id: str, timeout: float | None = 60.0) -> JSON:
        """The call once decided, or still pending after `timeout` seconds (None: until
        decided; an approval's expiry bounds that). Long-polls in chunks of ≤ 60 s."""
        deadline = _runs.deadline_of(timeout)
        while True:
            call = self._c._call(E.get_tool_call(self.id, call_id, _runs.next_wait(deadline)))
            if _runs.waited_enough(call, deadline):
                return call

    def authorize(
        self,
        tool: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        connection: str | None = None,
        on_pending: OnPending = None,
    ) -> JSON:
        """Ask the gate and wait for a pending approval: the allowed call, or
        `ActionDenied` (denied, or still pending after `timeout` seconds). `on_pending`
        is called with the pending call (its `approval_id`) before waiting."""
        call = self.tool_call(tool, arguments, connection=connection)
        if call["decision"] == "pending":
            if on_pending is not None:
                on_pending(call)
            call = self.wait(call["id"], timeout)
        return _runs.settle(tool, call)

    @overload
    def guard(self, tool: F) -> F: ...

    @overload
    def guard(
        self,
        tool: str | None = None,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        arguments: Arguments = None,
        connection: str | None = None,
        on_pending: OnPending = None,
    ) -> Guard: ...

    def guard(
        self,
        tool: str | Callable[..., Any] | None = None,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        arguments: Arguments = None,
        connection: str | None = None,
        on_pending: OnPending = None,
    ) -> Guard | Callable[..., Any]:
        """Gate a function (sync or `async def`) or a block of code behind the tool-call
        gate. `tool` defaults to the function's name; `arguments` to the function's
        bound arguments (defaults applied) — or give an object, or a function of the
        bound arguments. `on_pending(call)` is told when the call waits for people.
        Used bare (`@run.guard`) it decorates directly."""
        if callable(tool):
            return Guard(self, None, timeout, arguments, connection, on_pending)(tool)
        return Guard(self, tool, timeout, arguments, connection, on_pending)


class Guard:
    """`run.guard(...)`: a decorator for sync and async functions, and a context manager
    (`with` and `async with`). The gate is asked before the code runs; it runs only when
    allowed, else `ActionDenied` is raised. An `async def` waits in a worker thread."""

    def __init__(
        self,
        run: Run,
        tool: str | None,
        timeout: float | None,
        arguments: Arguments,
        connection: str | None,
        on_pending: OnPending = None,
    ) -> None:
        self._run = run
        self._on_pending = on_pending
        self._tool = tool
        self._timeout = timeout
        self._arguments = arguments
        self._connection = connection
        self.call: JSON | None = None  # the allowed call, once entered as a context manager

    def _authorize(self, tool: str, arguments: dict[str, Any]) -> JSON:
        return self._run.authorize(
            tool,
            arguments,
            timeout=self._timeout,
            connection=self._connection,
            on_pending=self._on_pending,
        )

    def __call__(self, fn: F) -> F:
        tool = _runs.tool_name(self._tool, fn)
        if inspect.isasyncgenfunction(fn):  # asking at call time would block its event loop
            raise TypeError(
                "guard does not decorate async generators; guard the work inside with "
                "`async with run.guard(...)`"
            )

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def guarded_async(*args: Any, **kwargs: Any) -> Any:
                arguments = _runs.arguments_of(tool, self._arguments, _runs.bind(fn, args, kwargs))
                await asyncio.to_thread(self._authorize, tool, arguments)
                return await fn(*args, **kwargs)

            return cast(F, guarded_async)

        @functools.wraps(fn)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            arguments = _runs.arguments_of(tool, self._arguments, _runs.bind(fn, args, kwargs))
            self._authorize(tool, arguments)
            return fn(*args, **kwargs)

        return cast(F, guarded)

    def __enter__(self) -> JSON:
        tool = _runs.tool_name(self._tool)
        self.call = self._authorize(tool, _runs.fixed_arguments(tool, self._arguments))
        return self.call

    def __exit__(self, *_: object) -> None:
        return None

    async def __aenter__(self) -> JSON:
        tool = _runs.tool_name(self._tool)
        arguments = _runs.fixed_arguments(tool, self._arguments)
        self.call = await asyncio.to_thread(self._authorize, tool, arguments)
        return self.call

    async def __aexit__(self, *_: object) -> None:
        return None


class _Privacy:
    """Personal data and secrets: scan and redact texts (`redact_prompt` before a prompt
    goes to a model, `detokenize` for the answer), data policies, subject requests and
    retention."""

    def __init__(self, c: Client) -> None:
        self._c = c
        self.policies = _Collection(c, "privacy/policies")
        self.subject_requests = _Collection(c, "privacy/subject-requests")

    def scan(self, org: str, texts: list[str], *, types: list[str] | None = None) -> JSON:
        """`{"results": [{"findings": [{"type", "start", "end", "score"}]}]}`; offsets in
        code points. Texts are neither stored nor logged by the server."""
        return self._c._call(E.privacy(org, "scan", {"texts": texts, "types": types}))

    def redact(
        self, org: str, texts: list[str], *, mode: str = "replace", types: list[str] | None = None
    ) -> JSON:
        """`mode`: mask, replace, hash (keyed) or tokenize (reversible with `detokenize`)."""
        body = {"texts": texts, "mode": mode, "types": types}
        return self._c._call(E.privacy(org, "redact", body))

    def redact_prompt(
        self, org: str, prompt: str, *, mode: str = "tokenize", types: list[str] | None = None
    ) -> str:
        """The prompt with its personal data and secrets replaced, to send to a model.
        With `tokenize` (the default) the model sees stable tokens (`<EMAIL_1f3a…>`) it
        can refer to, and `detokenize` turns them back in its answer."""
        done = self.redact(org, [prompt], mode=mode, types=types)
        return str(done["results"][0]["text"])

    def detokenize(self, org: str, texts: list[str]) -> list[str]:
        """Tokens of this organisation turned back into values (needs
        `privacy:detokenize`; audited)."""
        done = self._c._call(E.privacy(org, "detokenize", {"texts": texts}))
        return [str(r["text"]) for r in done["results"]]

    def retention(self, org: str) -> JSON:
        return self._c._call(E.retention(org))

    def set_retention(self, org: str, **periods: int) -> JSON:
        """Change retention periods (e.g. `tool_calls_days=30`); a person must have
        stepped up recently."""
        return self._c._call(E.set_retention(org, periods))

    def access_request(
        self, org: str, *, user_id: str | None = None, email: str | None = None
    ) -> JSON:
        body = {"kind": "access", "user_id": user_id, "email": email}
        return self.subject_requests.create(org, **body)

    def erasure_request(
        self, org: str, *, user_id: str | None = None, email: str | None = None
    ) -> JSON:
        """Erase the person (cannot be undone; a person must have stepped up recently)."""
        body = {"kind": "erasure", "user_id": user_id, "email": email}
        return self.subject_requests.create(org, **body)

    def package(self, org: str, request: str) -> bytes:
        """An access request's package: a ZIP of JSON files."""
        return cast(bytes, self._c._run(E.subject_package(org, request)))

"""The asynchronous client: the same surface as `Client`, awaited."""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import datetime
from typing import Any, Literal, cast, overload

import httpx

from bastion.client import _generated as g
from bastion.client import _runs
from bastion.client import models as m
from bastion.client._base import (
    JSON,
    Endpoints,
    RedactMode,
    Req,
    RetryPolicy,
    T,
    Types,
    _path,
    _query,
    decode,
    headers_for,
    may_retry,
    parse,
    parse_list,
    retryable,
    subject_package,
)
from bastion.client._errors import BastionError, TransportError
from bastion.client._oauth import ClientCredentials
from bastion.client._runs import DEFAULT_TIMEOUT, Arguments, F, OnPending
from bastion.client.integrations import AsyncIntegrations, AsyncMcpServers

E = Endpoints


class AsyncClient:
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
        self.meta = g.AsyncMetaAPI(self)
        self.auth = _Auth(self)
        self.profile = g.AsyncProfileAPI(self)  # the caller's own profile: get(), update(...)
        self.sessions = g.AsyncSessionsAPI(self)
        self.mfa = g.AsyncMfaAPI(self)
        self.orgs = g.AsyncOrgsAPI(self)
        self.users = _Users(self)
        self.teams = g.AsyncTeamsAPI(self)
        self.roles = g.AsyncRolesAPI(self)
        self.api_keys = _ApiKeys(self)
        self.service_accounts = g.AsyncServiceAccountsAPI(self)
        self.oauth_clients = g.AsyncOauthClientsAPI(self)
        self.oauth = g.AsyncOauthAPI(self)
        self.audit_events = _Audit(self)
        self.audit_checkpoints = g.AsyncAuditCheckpointsAPI(self)
        self.audit_sinks = g.AsyncAuditSinksAPI(self)
        self.alert_rules = g.AsyncAlertRulesAPI(self)
        self.alerts = g.AsyncAlertsAPI(self)
        self.authz = g.AsyncAuthzAPI(self)
        self.sources = g.AsyncSourcesAPI(self)
        self.documents = g.AsyncDocumentsAPI(self)
        self.secrets = g.AsyncSecretsAPI(self)
        self.agents = g.AsyncAgentsAPI(self)
        self.workflows = g.AsyncWorkflowsAPI(self)
        self.approval_policies = g.AsyncApprovalPoliciesAPI(self)
        self.approvals = _Approvals(self)
        self.runs = _Runs(self)
        self.mcp_servers = AsyncMcpServers(self)
        self.webhook_endpoints = g.AsyncWebhookEndpointsAPI(self)
        self.webhook_subscriptions = g.AsyncWebhookSubscriptionsAPI(self)
        self.sso_connections = g.AsyncSsoConnectionsAPI(self)
        self.domains = g.AsyncDomainsAPI(self)
        self.scim_tokens = g.AsyncScimTokensAPI(self)
        self.integrations = AsyncIntegrations(self)
        self.privacy = _Privacy(self)
        self.privacy_policies = self.privacy.policies
        self.subject_requests = self.privacy.subject_requests
        self.encryption_key = g.AsyncEncryptionKeyAPI(self)
        self.workspaces = g.AsyncWorkspacesAPI(self)
        self.compliance = g.AsyncComplianceAPI(self)
        self.access_reviews = g.AsyncAccessReviewsAPI(self)

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

    def set_token(self, token: str | ClientCredentials | None) -> None:
        self._token = token

    async def me(self) -> m.MeOut:
        """The caller: principal type, id, organisation, role and permissions."""
        return await self.profile.get()

    async def permissions(self) -> list[m.PermissionOut]:
        """Every permission there is, with its description."""
        return await self.meta.permissions()

    # --- plumbing --------------------------------------------------------------
    async def _call(self, req: Req) -> JSON:
        return cast(JSON, await self._run(req))

    async def _request(self, req: Req, result: Any) -> Any:
        return parse(result, await self._run(req))

    async def _request_list(self, req: Req, item: type[T]) -> list[T]:
        return parse_list(item, await self._run(req))

    async def _iterate(self, req: Req, item: type[T]) -> AsyncIterator[T]:
        async for raw in self._pages(req):
            yield item.model_validate(raw)

    async def _bearer(self) -> str | None:
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
            response = await self._http.post(path, data=form, headers=headers)
        except httpx.TransportError as exc:
            raise TransportError(f"POST {path}: {type(exc).__name__}") from None
        return source.accept(
            response.status_code, _json(response), response.headers.get("retry-after")
        )

    async def _run(self, req: Req) -> Any:
        attempt = 0
        renewed = False
        while True:
            try:
                response = await self._http.request(
                    req.method,
                    req.path,
                    params=req.params,
                    json=req.json,
                    data=req.form,
                    headers=headers_for(await self._bearer(), req),
                    # Omitted, not httpx's USE_CLIENT_DEFAULT: a test's Starlette TestClient
                    # may be an httpx2 client (installed with the `mcp` SDK).
                    **cast(dict[str, Any], {} if req.timeout is None else {"timeout": req.timeout}),
                )
            except httpx.TransportError as exc:
                if attempt < self.retry.max_retries and may_retry(req):
                    await asyncio.sleep(self.retry.delay(attempt, None))
                    attempt += 1
                    continue
                raise TransportError(f"{req.method} {req.path}: {type(exc).__name__}") from None
            if (
                retryable(response.status_code, _json(response))
                and attempt < self.retry.max_retries
                and may_retry(req)
            ):
                await asyncio.sleep(self.retry.delay(attempt, _retry_after(response)))
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


class _Auth(g.AsyncAuthAPI):
    async def login(  # type: ignore[override]
        self, email: str, password: str, *, use: bool = True
    ) -> m.LoginOut | m.MfaRequiredOut | m.MfaEnrolmentOut:
        """Sign in; with `use=True` the client sends the new session token from now on.
        When a second factor is owed the answer is `MfaRequiredOut` (or
        `MfaEnrolmentOut`) with an `mfa_token` instead: finish with `mfa(...)`."""
        result = await super().login(email=email, password=password)
        if use and isinstance(result, m.LoginOut):
            self._c.set_token(result.token)
        return result

    async def mfa(  # type: ignore[override]
        self, mfa_token: str, method: str, code: str, *, use: bool = True
    ) -> m.LoginOut:
        """Finish a sign-in with a second factor (`method`: "totp" or "recovery_code")."""
        result = await super().mfa(mfa_token=mfa_token, method=method, code=code)  # type: ignore[arg-type]
        if use:
            self._c.set_token(result.token)
        return result

    async def step_up(  # type: ignore[override]
        self, method: str, *, code: str | None = None, password: str | None = None
    ) -> m.StepUpOut:
        """Verify again (RFC 9470) after a `StepUpRequired`: `auth_time` and `amr`."""
        return await super().step_up(method=method, code=code, password=password)  # type: ignore[arg-type]

    async def sso_exchange(self, code: str, *, use: bool = True) -> m.LoginOut:  # type: ignore[override]
        """Exchange the one-time `code` an SSO sign-in sent to `return_to` for a session;
        with `use=True` the client uses it."""
        result = await super().sso_exchange(code=code)
        if use:
            self._c.set_token(result.token)
        return result

    async def setup(self, token: str, password: str) -> m.SetupOut:  # type: ignore[override]
        """Set the first password of an invited user with the emailed setup token."""
        return await super().setup(token=token, password=password)

    async def change_password(self, current_password: str, new_password: str) -> None:  # type: ignore[override]
        """Change the signed-in user's password; their other sessions end."""
        await super().change_password(current_password=current_password, new_password=new_password)

    async def request_password_reset(self, email: str) -> None:  # type: ignore[override]
        """Ask for a reset link by email (the same answer whether the email is known)."""
        await super().request_password_reset(email=email)

    async def confirm_password_reset(self, token: str, password: str) -> None:  # type: ignore[override]
        """Set a new password with the emailed token; every session of the user ends."""
        await super().confirm_password_reset(token=token, password=password)


class _Users(g.AsyncUsersAPI):
    async def end_sessions(self, org: str, user: str, session: str | None = None) -> None:
        """End every session of the user now, or only `session`."""
        if session is None:
            await self.end_all_sessions(org, user)
        else:
            await self.end_session(org, user, session)


class _ApiKeys(g.AsyncApiKeysAPI):
    async def delete(self, org: str, key: str) -> None:
        """The same as `revoke`."""
        await self.revoke(org, key)


class _Audit(g.AsyncAuditEventsAPI):
    async def export(
        self,
        org: str,
        *,
        format: Literal["jsonl", "csv"] = "jsonl",
        type: str | None = None,
        actor: str | None = None,
        resource: str | None = None,
        outcome: Literal["success", "failure", "denied"] | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        q: str | None = None,
    ) -> AsyncIterator[bytes]:
        """GET /v1/orgs/{org}/audit-events/export: every matching event, streamed as
        JSON Lines or CSV (the same filters as `list`), in chunks of bytes."""
        params = _query(
            {
                "format": format,
                "type": type,
                "actor": actor,
                "resource": resource,
                "outcome": outcome,
                "since": since,
                "until": until,
                "q": q,
            }
        )
        req = Req("GET", _path("v1", "orgs", org, "audit-events", "export"), params=params)
        c = cast(AsyncClient, self._c)
        async with c._http.stream(
            "GET", req.path, params=params, headers=headers_for(await c._bearer(), req)
        ) as response:
            if response.status_code >= 400:
                await response.aread()
                decode(
                    response.status_code,
                    response.content,
                    _json(response),
                    response.headers.get("retry-after"),
                )
            async for chunk in response.aiter_bytes():
                yield chunk


class _Approvals(g.AsyncApprovalsAPI):
    async def approve(self, org: str, approval: str, *, comment: str = "") -> m.ApprovalOut:
        return await self.decide(org, approval, decision="approve", comment=comment)

    async def deny(self, org: str, approval: str, *, comment: str = "") -> m.ApprovalOut:
        return await self.decide(org, approval, decision="deny", comment=comment)


class _Runs(g.AsyncRunsAPI):
    async def start(
        self,
        agent: str | Mapping[str, Any] | m.AgentOut,
        *,
        on_behalf_of: str | None = None,
        org: str | None = None,
        workflow_id: str | None = None,
        ttl_seconds: int | None = None,
        max_tool_calls: int | None = None,
        max_pending_approvals: int | None = None,
        idempotency_key: str | None = None,
    ) -> AsyncRun:
        """Start a run of `agent` (its id, or the agent object) acting for `on_behalf_of`
        (default: the caller). `org` defaults to the agent object's, else the caller's."""
        c = cast(AsyncClient, self._c)
        org_id, agent_id = _runs.org_and_agent(agent, org)
        if org_id is None:
            org_id = (await c.me()).org_id
        body = _runs.run_body(
            on_behalf_of, workflow_id, ttl_seconds, max_tool_calls, max_pending_approvals
        )
        req = E.start_run(org_id, agent_id, body, idempotency_key)
        started = await c._request(req, m.RunStarted)
        return AsyncRun(c, org_id, agent_id, started)


class AsyncRun:
    """A started run (async): it talks to the gate with its own `bat_…` token over the
    parent client's connection (closing the run never closes that connection).

        run = await bastion.runs.start(agent_id, on_behalf_of=user_id)

        @run.guard(timeout=120)
        async def refund_payment(order: str, amount: float) -> str: ...

        await refund_payment("A-1", 250)   # ActionDenied unless the gate allows it

    As an async context manager (`async with run:`) the run is revoked on exit.
    """

    def __init__(
        self, parent: AsyncClient, org_id: str, agent_id: str, started: m.RunStarted | JSON
    ) -> None:
        self.id: str = started["run_id"]
        self.token: str = started["token"]
        self.expires_at = _runs.parse_time(started["expires_at"])
        self.org_id = org_id
        self.agent_id = agent_id
        self._parent = parent
        self._c = AsyncClient(http_client=parent._http, token=self.token, retry=parent.retry)

    def __repr__(self) -> str:
        return _runs.run_repr("AsyncRun", self.id, self.agent_id, self.expires_at)

    async def __aenter__(self) -> AsyncRun:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        try:
            await self.revoke()
        except BastionError:
            if exc_type is None:
                raise

    async def status(self) -> m.RunOut:
        """The run as the server sees it: `status` (active, expired, revoked), counts…"""
        return await self._c.runs.get(self.id)

    async def revoke(self) -> m.RunOut:
        """End the run (with the parent client's credentials)."""
        return await self._parent.runs.revoke(self.org_id, self.id)

    async def tool_call(
        self,
        tool: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        connection: str | None = None,
        idempotency_key: str | None = None,
    ) -> m.ToolCallOut:
        """Ask the gate once: the call with `decision` allow, deny or pending."""
        body = {"tool": tool, "arguments": dict(arguments or {}), "connection": connection}
        req = E.tool_call(self.id, body, idempotency_key)
        call: m.ToolCallOut = await self._c._request(req, m.ToolCallOut)
        return call

    async def wait(self, call_id: str, timeout: float | None = 60.0) -> m.ToolCallOut:  # noqa: ASYNC109 - the server waits, not a cancellation
        """The call once decided, or still pending after `timeout` seconds (None: until
        decided; an approval's expiry bounds that). Long-polls in chunks of ≤ 60 s."""
        deadline = _runs.deadline_of(timeout)
        while True:
            req = E.get_tool_call(self.id, call_id, _runs.next_wait(deadline))
            call: m.ToolCallOut = await self._c._request(req, m.ToolCallOut)
            if _runs.waited_enough(call, deadline):
                return call

    async def authorize(
        self,
        tool: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - how long to wait for people
        connection: str | None = None,
        on_pending: OnPending = None,
    ) -> m.ToolCallOut:
        """Ask the gate and wait for a pending approval: the allowed call, or
        `ActionDenied` (denied, or still pending after `timeout` seconds). `on_pending`
        is called with the pending call (its `approval_id`) before waiting."""
        call = await self.tool_call(tool, arguments, connection=connection)
        if call.decision == "pending":
            if on_pending is not None:
                await _runs.maybe_await(on_pending(call))
            call = await self.wait(call.id, timeout)
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
    ) -> AsyncGuard: ...

    def guard(
        self,
        tool: str | Callable[..., Any] | None = None,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        arguments: Arguments = None,
        connection: str | None = None,
        on_pending: OnPending = None,
    ) -> AsyncGuard | Callable[..., Any]:
        """Gate an `async def` function or an `async with` block behind the tool-call
        gate. `tool` defaults to the function's name; `arguments` to the function's
        bound arguments (defaults applied) — or give an object, or a function of the
        bound arguments. `on_pending(call)` is told when the call waits for people.
        Used bare (`@run.guard`) it decorates directly."""
        if callable(tool):
            return AsyncGuard(self, None, timeout, arguments, connection, on_pending)(tool)
        return AsyncGuard(self, tool, timeout, arguments, connection, on_pending)


class AsyncGuard:
    """`async_run.guard(...)`: a decorator for `async def` functions and an `async with`
    context manager. The gate is asked before the code runs; it runs only when allowed,
    else `ActionDenied` is raised."""

    def __init__(
        self,
        run: AsyncRun,
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
        self.call: m.ToolCallOut | None = None  # the allowed call, once entered with `with`

    async def _authorize(self, tool: str, arguments: dict[str, Any]) -> m.ToolCallOut:
        return await self._run.authorize(
            tool,
            arguments,
            timeout=self._timeout,
            connection=self._connection,
            on_pending=self._on_pending,
        )

    def __call__(self, fn: F) -> F:
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(
                "AsyncRun.guard decorates `async def` functions; use Client's Run.guard "
                "for sync ones"
            )
        tool = _runs.tool_name(self._tool, fn)

        @functools.wraps(fn)
        async def guarded(*args: Any, **kwargs: Any) -> Any:
            arguments = _runs.arguments_of(tool, self._arguments, _runs.bind(fn, args, kwargs))
            await self._authorize(tool, arguments)
            return await fn(*args, **kwargs)

        return cast(F, guarded)

    def __enter__(self) -> m.ToolCallOut:
        raise TypeError("use `async with run.guard(...)` with an AsyncRun")

    def __exit__(self, *_: object) -> None:
        return None

    async def __aenter__(self) -> m.ToolCallOut:
        tool = _runs.tool_name(self._tool)
        self.call = await self._authorize(tool, _runs.fixed_arguments(tool, self._arguments))
        return self.call

    async def __aexit__(self, *_: object) -> None:
        return None


class _Privacy(g.AsyncPrivacyAPI):
    """Personal data and secrets: the generated `scan`, `redact`, `detokenize`,
    `retention`, `set_retention` and `types`, plus `redact_prompt` (before a prompt goes
    to a model; `detokenize` for the answer), data policies, subject requests and their
    packages."""

    def __init__(self, c: AsyncClient) -> None:
        super().__init__(c)
        self.policies = g.AsyncPrivacyPoliciesAPI(c)
        self.subject_requests = g.AsyncSubjectRequestsAPI(c)

    async def redact_prompt(
        self, org: str, prompt: str, *, mode: RedactMode = "tokenize", types: Types = None
    ) -> str:
        """The prompt with its personal data and secrets replaced, to send to a model.
        With `tokenize` (the default) the model sees stable tokens (`<EMAIL_1f3a…>`) it
        can refer to, and `detokenize` turns them back in its answer."""
        done = await self.redact(org, texts=[prompt], mode=mode, types=types)
        return done.results[0].text

    async def access_request(
        self, org: str, *, user_id: str | None = None, email: str | None = None
    ) -> m.SubjectRequestOut:
        return await self.subject_requests.create(org, kind="access", user_id=user_id, email=email)

    async def erasure_request(
        self, org: str, *, user_id: str | None = None, email: str | None = None
    ) -> m.SubjectRequestOut:
        """Erase the person (cannot be undone; a person must have stepped up recently)."""
        return await self.subject_requests.create(org, kind="erasure", user_id=user_id, email=email)

    async def package(self, org: str, request: str) -> bytes:
        """An access request's package: a ZIP of JSON files."""
        return cast(bytes, await cast(AsyncClient, self._c)._run(subject_package(org, request)))

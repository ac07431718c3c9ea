"""What the sync and async clients share: request descriptions for every endpoint,
headers, idempotency keys, retry policy and problem-document decoding. Only sending
bytes differs between the two clients."""

from __future__ import annotations

import random
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, TypeVar
from urllib.parse import quote

from pydantic import BaseModel, TypeAdapter

from bastion.client._errors import APIError, from_response

JSON = dict[str, Any]
T = TypeVar("T", bound=BaseModel)
MAX_WAIT_SECONDS = 60.0  # the server's longest long-poll
LONG_POLL_MARGIN = 15.0  # read timeout beyond the long-poll's own wait
RETRY_STATUSES = frozenset({429, 502, 503, 504})
IN_USE = "idempotency_key_in_use"
USER_AGENT = "bastion-python"

# What the privacy detector finds, and how `redact` replaces it (`redact_prompt`'s types).
EntityType = Literal[
    "ADDRESS",
    "API_KEY",
    "AWS_ACCESS_KEY",
    "CREDIT_CARD",
    "EMAIL",
    "GITHUB_TOKEN",
    "IBAN",
    "IP_ADDRESS",
    "JWT",
    "PERSON",
    "PHONE",
    "PRIVATE_KEY",
    "US_SSN",
]
RedactMode = Literal["hash", "mask", "replace", "tokenize"]
Types = list[EntityType] | None


@dataclass(frozen=True)
class Req:
    method: str
    path: str
    params: Mapping[str, Any] | None = None
    json: Any = None
    idempotency_key: str | None = None
    expect_body: bool = True
    timeout: float | None = None  # seconds for this request; None: the client's default
    raw: bool = False  # the body as bytes (a ZIP), not JSON
    form: Mapping[str, Any] | None = None  # an application/x-www-form-urlencoded body


def _p(*parts: str) -> str:
    return "/v1/" + "/".join(quote(p, safe="") for p in parts)


def _clean(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


@dataclass
class RetryPolicy:
    """Exponential backoff with full jitter; honours Retry-After. `sleep_scale` lets
    tests run retries instantly."""

    max_retries: int = 2
    base: float = 0.25
    cap: float = 8.0
    sleep_scale: float = 1.0
    _rng: random.Random = field(default_factory=random.Random, repr=False)

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.cap) * self.sleep_scale
        return self._rng.uniform(0, min(self.cap, self.base * 2**attempt)) * self.sleep_scale


def may_retry(req: Req) -> bool:
    """GET/PUT/DELETE are idempotent by definition; a POST only with an idempotency key."""
    return req.method != "POST" or req.idempotency_key is not None


def retryable(status: int, body: Any) -> bool:
    """Worth asking again: overloaded or unavailable, or (409 `idempotency_key_in_use`)
    an earlier try with the same key finished meanwhile, whose answer a retry replays."""
    if status in RETRY_STATUSES:
        return True
    return status == 409 and isinstance(body, dict) and body.get("code") == IN_USE


def headers_for(token: str | None, req: Req) -> dict[str, str]:
    """Headers of a request; `token` is the bearer token itself."""
    headers = {"user-agent": USER_AGENT, "accept": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    if req.idempotency_key:
        headers["idempotency-key"] = req.idempotency_key
    return headers


def decode(
    status: int,
    content: bytes,
    json_body: Any,
    retry_after: str | None,
    www_authenticate: str | None = None,
) -> Any:
    if status >= 400:
        raise from_response(status, json_body, retry_after, www_authenticate)
    if not content:
        return None
    return json_body


def error_of(exc: BaseException) -> APIError | None:
    return exc if isinstance(exc, APIError) else None


def post(path: str, body: Any, idempotency_key: str | None) -> Req:
    return Req("POST", path, json=body, idempotency_key=idempotency_key or str(uuid.uuid4()))


class Endpoints:
    """Every endpoint the SDK speaks, as request descriptions."""

    # auth and the caller
    @staticmethod
    def login(email: str, password: str) -> Req:
        return Req("POST", _p("auth", "login"), json={"email": email, "password": password})

    @staticmethod
    def mfa(mfa_token: str, method: str, code: str) -> Req:
        body = {"mfa_token": mfa_token, "method": method, "code": code}
        return Req("POST", _p("auth", "mfa"), json=body)

    @staticmethod
    def step_up(method: str, code: str | None, password: str | None) -> Req:
        body = _clean({"method": method, "code": code, "password": password})
        return Req("POST", _p("auth", "step-up"), json=body)

    @staticmethod
    def sso_exchange(code: str) -> Req:
        return Req("POST", _p("auth", "sso", "exchange"), json={"code": code})

    @staticmethod
    def logout() -> Req:
        return Req("POST", _p("auth", "logout"), expect_body=False)

    @staticmethod
    def setup(token: str, password: str) -> Req:
        return Req("POST", _p("auth", "setup"), json={"token": token, "password": password})

    @staticmethod
    def change_password(current_password: str, new_password: str) -> Req:
        body = {"current_password": current_password, "new_password": new_password}
        return Req("POST", _p("me", "password"), json=body, expect_body=False)

    @staticmethod
    def request_password_reset(email: str) -> Req:
        return Req("POST", _p("auth", "password-reset"), json={"email": email}, expect_body=False)

    @staticmethod
    def confirm_password_reset(token: str, password: str) -> Req:
        body = {"token": token, "password": password}
        return Req("POST", _p("auth", "password-reset", "confirm"), json=body, expect_body=False)

    @staticmethod
    def user_sessions(org: str, user: str, limit: int | None = None) -> Req:
        return Req(
            "GET", _p("orgs", org, "users", user, "sessions"), params=_clean({"limit": limit})
        )

    @staticmethod
    def end_user_sessions(org: str, user: str, session: str | None = None) -> Req:
        parts = ("orgs", org, "users", user, "sessions", *((session,) if session else ()))
        return Req("DELETE", _p(*parts), expect_body=False)

    @staticmethod
    def end_org_sessions(org: str) -> Req:
        return Req("DELETE", _p("orgs", org, "sessions"), expect_body=False)

    @staticmethod
    def me() -> Req:
        return Req("GET", _p("me"))

    @staticmethod
    def sessions(limit: int | None = None) -> Req:
        return Req("GET", _p("me", "sessions"), params=_clean({"limit": limit}))

    @staticmethod
    def revoke_session(session_id: str) -> Req:
        return Req("DELETE", _p("me", "sessions", session_id), expect_body=False)

    @staticmethod
    def revoke_other_sessions() -> Req:
        return Req("DELETE", _p("me", "sessions"), expect_body=False)

    @staticmethod
    def permissions() -> Req:
        return Req("GET", _p("permissions"))

    # organisations
    @staticmethod
    def get_org(org: str) -> Req:
        return Req("GET", _p("orgs", org))

    @staticmethod
    def update_org(org: str, **changes: Any) -> Req:
        return Req("PATCH", _p("orgs", org), json=_clean(changes))

    # generic collection operations: users, teams, roles, api-keys, service-accounts…
    # (a collection's name is the SDK's own constant: `privacy/policies` is two segments)
    @staticmethod
    def create(org: str, collection: str, body: JSON, idempotency_key: str | None = None) -> Req:
        return post(_p("orgs", org, *collection.split("/")), _clean(body), idempotency_key)

    @staticmethod
    def list(org: str, collection: str, limit: int | None = None, **filters: Any) -> Req:
        return Req(
            "GET",
            _p("orgs", org, *collection.split("/")),
            params=_clean({"limit": limit, **filters}),
        )

    @staticmethod
    def oauth_clients(org: str, account: str) -> Req:
        return Req("GET", _p("orgs", org, "service-accounts", account, "oauth-clients"))

    @staticmethod
    def create_oauth_client(org: str, account: str, body: JSON) -> Req:
        return post(_p("orgs", org, "service-accounts", account, "oauth-clients"), body, None)

    @staticmethod
    def delete_oauth_client(org: str, account: str, client: str) -> Req:
        path = _p("orgs", org, "service-accounts", account, "oauth-clients", client)
        return Req("DELETE", path, expect_body=False)

    @staticmethod
    def get(org: str, collection: str, item: str) -> Req:
        return Req("GET", _p("orgs", org, *collection.split("/"), item))

    @staticmethod
    def update(org: str, collection: str, item: str, body: JSON) -> Req:
        return Req("PATCH", _p("orgs", org, *collection.split("/"), item), json=_clean(body))

    @staticmethod
    def delete(org: str, collection: str, item: str) -> Req:
        return Req("DELETE", _p("orgs", org, *collection.split("/"), item), expect_body=False)

    # sub-resources
    @staticmethod
    def add_member(org: str, team: str, user: str) -> Req:
        return Req("PUT", _p("orgs", org, "teams", team, "members", user), expect_body=False)

    @staticmethod
    def remove_member(org: str, team: str, user: str) -> Req:
        return Req("DELETE", _p("orgs", org, "teams", team, "members", user), expect_body=False)

    @staticmethod
    def grant_role(org: str, user: str, body: JSON, idempotency_key: str | None = None) -> Req:
        return post(_p("orgs", org, "users", user, "role-grants"), body, idempotency_key)

    @staticmethod
    def list_grants(org: str, user: str, limit: int | None = None) -> Req:
        return Req(
            "GET", _p("orgs", org, "users", user, "role-grants"), params=_clean({"limit": limit})
        )

    @staticmethod
    def revoke_grant(org: str, user: str, grant: str) -> Req:
        return Req(
            "DELETE", _p("orgs", org, "users", user, "role-grants", grant), expect_body=False
        )

    @staticmethod
    def rotate_key(
        org: str, key: str, overlap_seconds: int, idempotency_key: str | None = None
    ) -> Req:
        return post(
            _p("orgs", org, "api-keys", key, "rotate"),
            {"overlap_seconds": overlap_seconds},
            idempotency_key,
        )

    @staticmethod
    def verify_domain(org: str, domain: str) -> Req:
        return post(_p("orgs", org, "domains", domain, "verify"), None, None)

    @staticmethod
    def verify_audit(org: str) -> Req:
        return post(_p("orgs", org, "audit-events", "verify"), None, None)

    # agents, runs and the tool-call gate
    @staticmethod
    def hub_agents(limit: int | None = None) -> Req:
        return Req("GET", _p("hub", "agents"), params=_clean({"limit": limit}))

    @staticmethod
    def start_run(org: str, agent: str, body: JSON, idempotency_key: str | None = None) -> Req:
        return post(_p("orgs", org, "agents", agent, "runs"), _clean(body), idempotency_key)

    @staticmethod
    def list_runs(org: str, agent: str, limit: int | None = None) -> Req:
        return Req("GET", _p("orgs", org, "agents", agent, "runs"), params=_clean({"limit": limit}))

    @staticmethod
    def get_run(run: str) -> Req:
        return Req("GET", _p("runs", run))

    @staticmethod
    def revoke_run(org: str, run: str) -> Req:
        return post(_p("orgs", org, "runs", run, "revoke"), None, None)

    @staticmethod
    def tool_call(run: str, body: JSON, idempotency_key: str | None = None) -> Req:
        return post(_p("runs", run, "tool-calls"), _clean(body), idempotency_key)

    @staticmethod
    def get_tool_call(run: str, call: str, wait: float = 0) -> Req:
        """With `wait` > 0 the server holds the request until the call is decided or
        `wait` seconds (at most 60) have passed; the read timeout allows for that."""
        wait = max(0.0, min(wait, MAX_WAIT_SECONDS))
        return Req(
            "GET",
            _p("runs", run, "tool-calls", call),
            params={"wait": round(wait, 3)} if wait else None,
            timeout=wait + LONG_POLL_MARGIN if wait else None,
        )

    # approval policies and approvals
    @staticmethod
    def reapprove_policy(org: str, policy: str) -> Req:
        return post(_p("orgs", org, "approval-policies", policy, "reapprove"), None, None)

    @staticmethod
    def decide_approval(
        org: str, approval: str, decision: str, comment: str, idempotency_key: str | None = None
    ) -> Req:
        return post(
            _p("orgs", org, "approvals", approval, "decisions"),
            {"decision": decision, "comment": comment},
            idempotency_key,
        )


def subject_package(org: str, request: str) -> Req:
    """An access request's package: a ZIP (bytes), which the generator does not speak."""
    path = _p("orgs", org, "privacy", "subject-requests", request, "package")
    return Req("GET", path, raw=True)


# --- helpers of the generated layer (bastion.client._generated) ---------------------


def _path(*parts: str) -> str:
    """`/v1/orgs/{org}/…` with every part percent-encoded (ids never break the path)."""
    return "/" + "/".join(quote(p, safe="") for p in parts)


def _wire(value: Any) -> Any:
    """A request value as JSON: models by their API names, times as RFC 3339."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True, exclude_none=True)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _wire(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_wire(v) for v in value]
    return value


def _body(values: Mapping[str, Any]) -> JSON:
    """A request body: the parameters given (None means "not given")."""
    return {k: _wire(v) for k, v in values.items() if v is not None}


def _query(values: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif isinstance(value, datetime):
            out[key] = value.isoformat()
        else:
            out[key] = value
    return out


def _key(idempotency_key: str | None) -> str:
    return idempotency_key or str(uuid.uuid4())


_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}


def parse(result: Any, body: Any) -> Any:
    """The answer as the operation's type: a model, a union of models, a list, a dict."""
    if result is None:
        return None
    if isinstance(result, type) and issubclass(result, BaseModel):
        return result.model_validate(body)
    adapter = _ADAPTERS.get(result)
    if adapter is None:
        adapter = _ADAPTERS[result] = TypeAdapter(result)
    return adapter.validate_python(body)


def parse_list(item: type[T], body: Any) -> list[T]:
    """A `{"data": [...]}` answer (not paginated) as a list of models."""
    return [item.model_validate(x) for x in body["data"]]

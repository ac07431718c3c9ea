"""Python SDK for the Bastion API: `Client` (sync) and `AsyncClient` (async).

    from bastion.client import Client
    with Client("http://127.0.0.1:8400", token="bsk_…") as bastion:
        me = bastion.me()
        for user in bastion.users.list(me["org_id"]):
            print(user["email"])

Errors are typed (`NotFoundError`, `PermissionDeniedError`, …) and carry the problem
document's fields. Lists iterate lazily over every page. POSTs carry an idempotency key,
so they are retried safely on 429/502/503/504 and connection errors.

Agents ask before they act: `client.runs.start(agent, on_behalf_of=user)` returns a
`Run` whose `guard` asks the tool-call gate before a function runs, waits for human
approval, and raises `ActionDenied` unless the call is allowed:

    run = bastion.runs.start(agent_id, on_behalf_of=user_id)

    @run.guard(timeout=120)
    def refund_payment(order: str, amount: float) -> None: ...

A service account authenticates with its OAuth client: the SDK fetches and renews
short-lived access tokens itself.

    bastion = Client(url, token=ClientCredentials("oac_…", "boc_…"))
"""

from bastion.client._async import AsyncClient, AsyncRun
from bastion.client._base import RetryPolicy
from bastion.client._errors import (
    ActionDenied,
    APIError,
    AuthenticationError,
    BastionError,
    ConflictError,
    FieldError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    StepUpRequired,
    TransportError,
    ValidationError,
)
from bastion.client._mock import MockBastion
from bastion.client._oauth import ClientCredentials
from bastion.client._sync import Client, Run

__all__ = [
    "APIError",
    "ActionDenied",
    "AsyncClient",
    "AsyncRun",
    "AuthenticationError",
    "BastionError",
    "Client",
    "ClientCredentials",
    "ConflictError",
    "FieldError",
    "MockBastion",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "RetryPolicy",
    "Run",
    "ServerError",
    "StepUpRequired",
    "TransportError",
    "ValidationError",
]

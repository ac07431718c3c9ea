"""Python SDK for the Bastion API: `Client` (sync) and `AsyncClient` (async).

    from bastion.client import Client
    with Client("http://127.0.0.1:8400", token="bsk_…") as bastion:
        me = bastion.me()
        for user in bastion.users.list(me["org_id"]):
            print(user["email"])

Errors are typed (`NotFoundError`, `PermissionDeniedError`, …) and carry the problem
document's fields. Lists iterate lazily over every page. POSTs carry an idempotency key,
so they are retried safely on 429/502/503/504 and connection errors.
"""

from bastion.client._async import AsyncClient
from bastion.client._base import RetryPolicy
from bastion.client._errors import (
    APIError,
    AuthenticationError,
    BastionError,
    ConflictError,
    FieldError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    TransportError,
    ValidationError,
)
from bastion.client._mock import MockBastion
from bastion.client._sync import Client

__all__ = [
    "APIError",
    "AsyncClient",
    "AuthenticationError",
    "BastionError",
    "Client",
    "ConflictError",
    "FieldError",
    "MockBastion",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "RetryPolicy",
    "ServerError",
    "TransportError",
    "ValidationError",
]

"""What the console needs from the app that mounts it (`bastion.api`), handed over as
one `Edge` when the app is built: the console sits below the API in the layers, so it
never imports `bastion.api`; the API builds the edge from its own request context and
state (`bastion.api.console_edge`).

Authentication and refusals go through the API's own functions (`authenticate` is the
API's `authenticate_request`, `refused` queues the audit trace of a refusal exactly as
the API's problem handler does): one principal, one set of checks for both edges."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy.orm import Session
from starlette.requests import Request

from bastion.core.config import Settings
from bastion.core.context import Actor
from bastion.core.errors import BastionError
from bastion.core.mail import Mailer
from bastion.core.principal import Principal
from bastion.core.ratelimit import RateLimiter
from bastion.identity.tokens import TokenHasher
from bastion.secrets.vault import Vault
from bastion.sso.oidc import RelyingParty


class AppServices(Protocol):
    """The parts of the running app (`bastion.api.state.AppState`) pages use. A page
    that needs more declares a Protocol of its own with those attributes and reads
    them from `Edge.app` (the object is the app's state)."""

    @property
    def settings(self) -> Settings: ...
    @property
    def hasher(self) -> TokenHasher: ...
    @property
    def limiter(self) -> RateLimiter: ...
    @property
    def vault(self) -> Vault: ...
    @property
    def mailer(self) -> Mailer: ...
    @property
    def sso_rp(self) -> RelyingParty: ...


class Unit(Protocol):
    """The request's unit of work (`bastion.api.context.RequestContext`): one
    transaction, committed by the middleware when the answer is below 400 and rolled
    back otherwise (a refusal's audit events are written after the rollback)."""

    @property
    def db(self) -> Session: ...
    @property
    def actor(self) -> Actor: ...
    @property
    def request_id(self) -> str: ...
    @property
    def ip(self) -> str | None: ...
    @property
    def principal(self) -> Principal | None: ...
    @property
    def after_commit(self) -> list[Callable[[Session], None]]: ...


# (request, token, enrolment) -> the caller. `enrolment`: the page is one a person who
# still owes a second factor may use (the API's `/v1/me/mfa…`), with a session or an
# enrolment `mfa_token`; otherwise such a person is refused `mfa_enrolment_required`.
Authenticate = Callable[[Request, str | None, bool], Awaitable[Principal]]
Refused = Callable[[Request, BastionError], Awaitable[None]]


@dataclass(frozen=True)
class Edge:
    app: AppServices = field(repr=False)
    authenticate: Authenticate = field(repr=False)
    refused: Refused = field(repr=False)
    unit: Callable[[Request], Unit] = field(repr=False)

"""The facts authorization needs from the domains above it, and the registry through
which they arrive.

An organisation's index needs rows that identity and agents own: users' and service
accounts' roles and statuses, the API keys that configured agents, and the agents
themselves (the facts their visibility rule reads, their connected sources, who
configured them). authz sits below both in the layer order, so it never imports their
models: it says here what it needs, and each of them registers a provider when its
package is imported (`bastion.identity.facts`, `bastion.agents.facts`).

Without a provider those facts are absent, and every decision that needs them refuses
(fail closed): an unknown user, service account or agent is denied, as are an agent's
sources when its configurer cannot be found, and an ACL entry cannot name a user or
service account. An index is built with the providers registered at the time; the app
imports both domains before it serves a request.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from bastion.authz.engine import Decision
    from bastion.core.permissions import Permission

RoleStatus = tuple[str, str]  # (role, status)


class PrincipalFacts(Protocol):
    """What identity tells the engine about the people and accounts of an organisation."""

    def roles(
        self, db: Session, org_id: str
    ) -> tuple[dict[str, RoleStatus], dict[str, RoleStatus]]:
        """Users, then service accounts: id -> (role, status); one query per table."""
        ...

    def key_roles(
        self, db: Session, org_id: str, key_ids: Sequence[str]
    ) -> dict[str, tuple[str, datetime | None]]:
        """Of these API keys, those of the organisation: id -> (role, when it stops
        working, revoked or expired, if ever); one query."""
        ...

    def exists(self, db: Session, org_id: str, principal_id: str) -> bool:
        """Whether the id names a user or service account of the organisation."""
        ...


@dataclass(frozen=True)
class AgentRecord:
    """One agent as the index holds it. `facts` is the agents domain's own value, handed
    back unchanged to its `decide`."""

    id: str
    facts: Any
    connections: Sequence[str]  # the sources connected to it
    configured_by: str  # who last set its connections (a user, account or key id)


class AgentFacts(Protocol):
    """What the agents domain tells the engine: its agents, and who may do what to one."""

    def agents(self, db: Session, org_id: str) -> Iterable[AgentRecord]:
        """Every agent of the organisation; one query."""
        ...

    def decide(
        self,
        facts: Any,
        subject_id: str,
        subject_teams: frozenset[str],
        perms: frozenset[Permission],
        action: str,
    ) -> Decision:
        """Whether a user or service account may do `action` to the agent."""
        ...


_providers: dict[str, Any] = {}


def register_principal_facts(provider: PrincipalFacts) -> None:
    """Identity's provider (replacing any registered before)."""
    _providers["principals"] = provider


def register_agent_facts(provider: AgentFacts) -> None:
    """The agents domain's provider (replacing any registered before)."""
    _providers["agents"] = provider


def principal_facts() -> PrincipalFacts | None:
    """The registered provider, or None: then no user or service account is known."""
    found: PrincipalFacts | None = _providers.get("principals")
    return found


def agent_facts() -> AgentFacts | None:
    """The registered provider, or None: then no agent is known."""
    found: AgentFacts | None = _providers.get("agents")
    return found

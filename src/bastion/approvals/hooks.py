"""What approvals needs from the agents whose tool calls it approves.

Approvals sits below agents in the layers: it records requests and decisions and owns
policies, quorum and expiry, but the agents, their runs and their tool calls belong to
`bastion.agents`. What approvals must know of them (an agent's tools to pin, whether a
caller may read an agent, who started a run and whether it still acts) and what must
happen to a tool call once its approval closes are asked of one `AgentSide`, which
`bastion.agents` registers when its gate is imported.

With nothing registered, every use raises `NoAgentSide`: nothing is pinned, shown,
decided or expired on guesses, and the transaction that asked rolls back (a call whose
approval cannot close stays pending, and is denied as expired at its deadline).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.orm import Session

from bastion.core.clock import as_utc
from bastion.core.principal import Principal


@dataclass(frozen=True)
class RunFacts:
    """What approvals reads of the run that asked: who started it (for separation of
    duties) and until when it may act."""

    started_by: str
    expires_at: datetime
    revoked: bool

    def ended(self, now: datetime) -> bool:
        return self.revoked or as_utc(self.expires_at) <= now


@dataclass(frozen=True)
class CallFacts:
    """The call an approval holds, as its notification describes it."""

    agent_name: str
    arguments: Any


class AgentSide(Protocol):
    def tools(
        self, db: Session, org_id: str, agent_ids: Iterable[str] | None
    ) -> Iterable[tuple[str, list[dict[str, Any]]]]:
        """Each agent of the organisation (only those named, unless None) with its tool
        definitions, each carrying `name`, `risk` and `digest`."""
        ...

    def agent_reader(self, db: Session, principal: Principal) -> Callable[[str], bool]:
        """Whether the principal may read the agent with this id."""
        ...

    def run(self, db: Session, run_id: str) -> RunFacts | None:
        """The run, or None when it is gone."""
        ...

    def settle(
        self, db: Session, call_id: str, *, allowed: bool, reason: str, now: datetime
    ) -> None:
        """Apply a closed approval's outcome to its tool call, in the same transaction."""
        ...

    def describe(self, db: Session, agent_id: str, call_id: str) -> CallFacts | None:
        """What approvers are told of the call: its agent's name and its arguments
        (None when the call is gone)."""
        ...


class NoAgentSide(RuntimeError):
    """Approvals was used before `bastion.agents` registered its side."""


_registered: list[AgentSide] = []


def register(side: AgentSide) -> None:
    """Make `side` the one approvals asks (registering again replaces it)."""
    _registered[:] = [side]


def agent_side() -> AgentSide:
    if not _registered:
        raise NoAgentSide("bastion.agents has not registered its side of approvals")
    return _registered[0]

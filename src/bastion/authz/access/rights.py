"""`SourceRights`: which sources a principal may hand to an agent, and which an agent
may read now.

Its own module because its callers are not the API's access routes: the app state
builds one (it holds the engine and a session factory), agents ask it when an agent's
sources are configured and the gate when a run reads; both are answered from the engine.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from bastion.authz import engine
from bastion.authz.access.questions import Sessions
from bastion.authz.engine import Engine
from bastion.core.clock import utcnow
from bastion.core.permissions import Permission
from bastion.core.principal import Principal


@dataclass(frozen=True)
class SourceRights:
    """Which sources a principal may hand to an agent, and which an agent may read now,
    answered by the engine against the organisation's current index."""

    eng: Engine = field(repr=False)
    sessions: Sessions = field(repr=False)

    def connectable(self, principal: Principal, source_ids: Iterable[str]) -> set[str]:
        """The sources the principal may connect: it edits them (editor or owner) or
        holds `sources:manage`. An API key counts its owner's entries, never more than
        its own role: a key without `sources:manage` does not borrow its owner's."""
        wanted = set(source_ids)
        if not wanted or principal.can(Permission.SOURCES_MANAGE):
            return wanted
        index = self.eng.index(self.sessions, principal.org_id)
        now = utcnow()
        who = engine.subject_of(index, principal.user_id or principal.id, now)
        found = set()
        for source_id in wanted:
            verdict = engine.decide(index, who, "edit", "source", source_id, now)
            if verdict.allowed and verdict != engine.MANAGES:
                found.add(source_id)
        return found

    def of_agent(self, org_id: str, agent_id: str) -> frozenset[str]:
        """The sources the agent may read now: those connected to it that whoever
        configured it may still connect."""
        index = self.eng.index(self.sessions, org_id)
        subject = engine.subject_of(index, agent_id, utcnow())
        return subject.sources if subject is not None else frozenset()

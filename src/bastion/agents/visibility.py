"""Who may see, use, edit, share and delete an agent: one rule for the agent registry
(`bastion.agents.service`) and for authorization's API, which applies it through the
provider in `bastion.agents.facts`."""

from __future__ import annotations

from dataclasses import dataclass

from bastion.authz.engine import Decision
from bastion.core.permissions import Permission

AGENT_ACTIONS = frozenset({"read", "use", "edit", "share", "delete"})


@dataclass(frozen=True)
class AgentFacts:
    """What decides access to an agent: its owner, visibility and teams."""

    owner: str
    visibility: str
    teams: frozenset[str]


def agent_decision(
    agent: AgentFacts,
    subject_id: str,
    subject_teams: frozenset[str],
    perms: frozenset[Permission],
    action: str,
) -> Decision:
    """`agents:manage` holders do everything to every agent of their organisation; the
    owner does everything to their own; others may `read` (with `agents:read`) and `use`
    (with `agents:use`) an agent visible to them: `org` and `public` to every member,
    `team` to members of its teams, `private` to nobody else. Editing, sharing and
    deleting are for the owner and managers only."""
    if action not in AGENT_ACTIONS:
        return Decision(False, "unknown_action")
    if Permission.AGENTS_MANAGE in perms:
        return Decision(True, "permission:agents:manage")
    if subject_id == agent.owner:
        return Decision(True, "owner")
    if agent.visibility in ("org", "public"):
        via = f"visibility:{agent.visibility}"
    elif agent.visibility == "team" and subject_teams & agent.teams:
        via = f"team:{min(subject_teams & agent.teams)}"
    else:
        return Decision(False, "not_visible")
    needed = {"read": Permission.AGENTS_READ, "use": Permission.AGENTS_USE}.get(action)
    if needed is None:
        return Decision(False, "owner_or_manager_only")
    if needed not in perms:
        return Decision(False, f"missing_permission:{needed}")
    return Decision(True, via)

"""What agents register with the layers below them, at import (`bastion.agents`
imports this module, so any use of the package has it in place): which agent rows
change what cached answers depend on (`bastion.core.revisions`). Revoking a run, or
any change to an agent, bumps the auth revision (and an agent, part of the data-access
model, the authz revision too). A new run bumps nothing: its token is not cached
before its first use. Counting tool calls is bookkeeping.
"""

from __future__ import annotations

from bastion.agents.models import Agent, Run
from bastion.core import revisions

revisions.watch(Run, bookkeeping={"tool_calls"}, inserts_change_nothing=True)
revisions.watch(Agent, counters=(revisions.AuthzRevision, revisions.AuthRevision))

"""Runs and the tool-call gate, by concern: `runs` (starting, revoking and reading
runs, their tokens, what a run may reveal), `arguments` (the arguments' digest and
their JSON Schema check) and `decide` (deciding a call, writing it through the group
commit, and reading its state). The names the API and the SDK's tests use are here.

Importing the gate registers agents' side of approvals (`bastion.agents.approval_hooks`):
approvals exist only for calls the gate held, and the app imports the gate.
"""

from __future__ import annotations

from bastion.agents import approval_hooks  # noqa: F401  (registers it)
from bastion.agents.gate.arguments import arguments_digest
from bastion.agents.gate.decide import CallState, Gate, get_tool_call, request_tool_call
from bastion.agents.gate.runs import (
    get_run,
    list_runs,
    reveal_secret,
    revoke_run,
    run_status,
    start_run,
)

__all__ = [
    "CallState",
    "Gate",
    "arguments_digest",
    "get_run",
    "get_tool_call",
    "list_runs",
    "request_tool_call",
    "reveal_secret",
    "revoke_run",
    "run_status",
    "start_run",
]

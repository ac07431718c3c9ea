"""Approvals' public surface: approval policies and human approval of agents' tool
calls. Other domains and the edges call these; the logic lives by concern in
`policies` (policies, and what they say of one call), `decisions` (requests, reading
them, quorum and closing), `approvers` (who may decide) and `sweeper` (recording
expiry and escalation). What approvals needs of agents comes through `hooks`.
"""

from __future__ import annotations

from bastion.approvals.decisions import (
    decide,
    decisions_of,
    effective_status,
    end_for_run,
    get_approval,
    list_approvals,
    open_approval,
    overdue,
    pending_count,
    readable_by,
    status_of,
)
from bastion.approvals.policies import (
    Policies,
    Verdict,
    create_policy,
    delete_policy,
    evaluate,
    get_policy,
    list_policies,
    policies_of,
    reapprove_policy,
    update_policy,
)
from bastion.approvals.sweeper import sweep

__all__ = [
    "Policies",
    "Verdict",
    "create_policy",
    "decide",
    "decisions_of",
    "delete_policy",
    "effective_status",
    "end_for_run",
    "evaluate",
    "get_approval",
    "get_policy",
    "list_approvals",
    "list_policies",
    "open_approval",
    "overdue",
    "pending_count",
    "policies_of",
    "readable_by",
    "reapprove_policy",
    "status_of",
    "sweep",
    "update_policy",
]

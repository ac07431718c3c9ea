"""Writing a decided call: the run's budget spent, the call's row, its approval when it
is held, and its audit event, in the writing transaction (a group-commit unit on the
hot path, see `bastion.agents.gate.decide.Gate`, or the caller's transaction).

In a group-commit batch a unit issues no statement of its own for a decided call: the
run's budget is read once per run and transaction (its row locked), each unit counts
the calls the batch has spent before it (`groupcommit.staged`, so a unit that failed
spends nothing), and the batch writes each run's count with one UPDATE, its calls with
one INSERT and their events with another. Every statement a writer thread issues gives
up the interpreter lock, which it then waits to get back from a busy event loop: a
statement per call was most of the writer's time.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import String, Table, bindparam, insert, select, update
from sqlalchemy.orm import Session

from bastion.agents.gate.arguments import arguments_digest
from bastion.agents.models import Agent, Run, ToolCall
from bastion.approvals import service as approvals
from bastion.audit import service as audit
from bastion.core import groupcommit
from bastion.core.events import EventType, Outcome
from bastion.core.ids import new_id
from bastion.core.principal import Principal
from bastion.privacy import service as privacy


@dataclass(frozen=True, slots=True)
class Decided:
    """A call decided at once (allow or deny), as its row is written: what the gate
    answers without building an ORM object (the attributes of `ToolCall`)."""

    id: str
    org_id: str
    run_id: str
    agent_id: str
    tool: str
    arguments: Any
    arguments_digest: str
    decision: str
    reason: str
    approval_id: str | None
    policy_id: str | None
    created_at: datetime
    decided_at: datetime | None


Call = ToolCall | Decided  # a held call is an ORM object: its approval refers to it

_calls = cast(Table, ToolCall.__table__)
# The longest reason a call can store: the column's length.
REASON_MAX = int(cast(String, _calls.c.reason.type).length)  # type: ignore[arg-type]

# Core statements on the session's connection: no ORM bookkeeping, and no autoflush
# (`tool_calls` is a counter that never changes what the run's token may do: no
# revision to bump).
_runs = cast(Table, Run.__table__)
_SPEND = (
    update(_runs)
    .where(_runs.c.id == bindparam("run_id"), _runs.c.tool_calls < _runs.c.max_tool_calls)
    .values(tool_calls=_runs.c.tool_calls + 1)
)
_BUDGET = (
    select(_runs.c.max_tool_calls - _runs.c.tool_calls)
    .where(_runs.c.id == bindparam("run_id"))
    .with_for_update()
)
_SPEND_MANY = (
    update(_runs)
    .where(_runs.c.id == bindparam("run_id"))
    .values(tool_calls=_runs.c.tool_calls + bindparam("spent"))
)
_STAGED_SPENDS = "agents.run_spends"  # a run's id per call that spent its budget
_BUDGETS = "bastion.agents.budgets"  # session.info: (transaction, {run id: calls left})


def _spend(db: Session, run_id: str) -> bool:
    """Spend one call of the run's budget; False when it is exhausted."""
    if not groupcommit.in_batch(db):  # the caller's transaction: at once
        spent = db.connection().execute(_SPEND, {"run_id": run_id})
        return bool(getattr(spent, "rowcount", 0))
    if _left(db, run_id) - groupcommit.staged(db, _STAGED_SPENDS).count(run_id) <= 0:
        return False
    groupcommit.stage(db, _STAGED_SPENDS, run_id)
    return True


def _left(db: Session, run_id: str) -> int:
    """The calls the run had left when this transaction first read it (its row locked
    until the transaction ends: no other writer spends it meanwhile)."""
    transaction = db.get_transaction()
    held: tuple[object, dict[str, int]] | None = db.info.get(_BUDGETS)
    if held is None or held[0] is not transaction:
        held = (transaction, {})
        db.info[_BUDGETS] = held
    left = held[1].get(run_id)
    if left is None:
        found = db.connection().execute(_BUDGET, {"run_id": run_id}).scalar_one_or_none()
        left = int(found or 0)  # a run gone: nothing left (its calls fail to insert)
        held[1][run_id] = left
    return left


def _write_spends(db: Session, run_ids: list[str]) -> None:
    rows = [{"run_id": run, "spent": n} for run, n in sorted(Counter(run_ids).items())]
    db.connection().execute(_SPEND_MANY, rows)


def record(
    db: Session,
    principal: Principal,
    run: Run,
    agent: Agent,
    tool_name: str,
    screened: privacy.Applied,
    verdict: approvals.Verdict,
    now: datetime,
) -> Call:
    """Spend the run's budget (every call does, whatever its decision), hold a pending
    call to the run's limit of open approvals, write a pending call, its approval and
    its audit event; a decided call and its event are staged for the batch's one insert
    per table when run as a group-commit unit. Safe to run again in a fresh transaction
    (see `GroupCommit`)."""
    arguments = screened.value  # what a data policy found is never stored
    # The chain head before the run's row: every gate transaction locks in this order
    # (a group sorts its calls by organisation, then run), so none waits on another's
    # locks in the opposite order.
    audit.lock_chain(db, run.org_id)
    if not _spend(db, run.id):
        verdict = approvals.Verdict("deny", "budget_exhausted")
    elif (
        verdict.decision == "pending"
        and approvals.pending_count(db, run.id, now) >= run.max_pending_approvals
    ):
        verdict = approvals.Verdict("deny", "too_many_pending_approvals", verdict.policy)
    fields: dict[str, Any] = {
        "id": new_id("call"),
        "org_id": run.org_id,
        "run_id": run.id,
        "agent_id": agent.id,
        "tool": tool_name,
        "arguments": arguments,
        "arguments_digest": arguments_digest(arguments),
        "decision": verdict.decision,
        "reason": verdict.reason[:REASON_MAX],
        "policy_id": verdict.policy_id,
        "approval_id": None,
        "created_at": now,
    }
    call: Call
    if verdict.decision == "pending":
        call = ToolCall(**fields, decided_at=None)
        db.add(call)
        db.flush()
        call.approval_id = approvals.open_approval(
            db,
            org_id=call.org_id,
            run_id=run.id,
            call_id=call.id,
            agent_id=call.agent_id,
            tool=call.tool,
            arguments_digest=call.arguments_digest,
            requested_for=run.on_behalf_of,
            run_expires_at=run.expires_at,
            policy=verdict.policy,
            now=now,
        )
    else:
        call = Decided(**fields, decided_at=now)
    audit.record(
        db,
        type=EventType.TOOL_CALL_DECIDED,
        actor=principal.actor,
        org_id=run.org_id,
        resource=("tool_call", call.id),
        outcome=Outcome.DENIED if verdict.decision == "deny" else Outcome.SUCCESS,
        reason=call.reason,
        metadata={
            "run_id": run.id,
            "agent_id": agent.id,
            "tool": tool_name,
            "decision": verdict.decision,
            "policy_id": call.policy_id,
            "approval_id": call.approval_id,
            "arguments_digest": call.arguments_digest,
            **(_privacy_note(screened) if screened.action else {}),
        },
    )
    if isinstance(call, Decided):
        # Written with the batch's other decided calls, one statement for them all:
        # nothing in the transaction reads it before.
        row = {column: getattr(call, column) for column in _CALL_COLUMNS}
        if not groupcommit.stage(db, _STAGED_CALLS, row):
            _insert_calls(db, [row])
    return call


def _privacy_note(screened: privacy.Applied) -> dict[str, Any]:
    """What the audit event says of the data policies that matched: types, never values."""
    return {
        "privacy": {
            "action": screened.action,
            "policy_id": screened.rule.id if screened.rule else None,
            "types": list(screened.types),
        }
    }


_STAGED_CALLS = "agents.tool_calls"
_CALL_COLUMNS = tuple(column.key for column in _calls.columns)
_INSERT_CALLS = insert(_calls)


def _insert_calls(db: Session, rows: list[dict[str, Any]]) -> None:
    db.connection().execute(_INSERT_CALLS, rows)


groupcommit.on_flush(_STAGED_CALLS, _insert_calls)
groupcommit.on_flush(_STAGED_SPENDS, _write_spends)

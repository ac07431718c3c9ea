"""Workflows: the contexts a run may be bound to, and the agents each admits."""

from __future__ import annotations

from fastapi import APIRouter, Response

from bastion.agents import workflows
from bastion.agents.schemas import WorkflowIn, WorkflowOut, WorkflowPatch
from bastion.api.deps import DB, DEFAULT_PAGE, Caller, Cursor, Limit
from bastion.core.schemas import ListOf

router = APIRouter(prefix="/v1/orgs/{org}/workflows", tags=["agents"])


@router.post("", status_code=201, summary="Create a workflow (workflows:manage)")
def create_workflow(org: str, body: WorkflowIn, principal: Caller, db: DB) -> WorkflowOut:
    workflow = workflows.create_workflow(db, principal, org, body)
    db.flush()
    return WorkflowOut.model_validate(workflow)


@router.get("", summary="Workflows, newest first")
def list_workflows(
    org: str, principal: Caller, db: DB, limit: Limit = DEFAULT_PAGE, cursor: Cursor = None
) -> ListOf[WorkflowOut]:
    page = workflows.list_workflows(db, principal, org, limit=limit, cursor=cursor)
    return ListOf[WorkflowOut](
        data=[WorkflowOut.model_validate(w) for w in page.data], next_cursor=page.next_cursor
    )


@router.get("/{wf}", summary="One workflow")
def get_workflow(org: str, wf: str, principal: Caller, db: DB) -> WorkflowOut:
    return WorkflowOut.model_validate(workflows.get_workflow(db, principal, org, wf))


@router.patch("/{wf}", summary="Rename a workflow or change the agents it admits")
def update_workflow(
    org: str, wf: str, body: WorkflowPatch, principal: Caller, db: DB
) -> WorkflowOut:
    workflow = workflows.update_workflow(db, principal, org, wf, body)
    db.flush()
    return WorkflowOut.model_validate(workflow)


@router.delete("/{wf}", status_code=204, summary="Delete a workflow")
def delete_workflow(org: str, wf: str, principal: Caller, db: DB) -> Response:
    workflows.delete_workflow(db, principal, org, wf)
    return Response(status_code=204)

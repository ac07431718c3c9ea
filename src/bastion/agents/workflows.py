"""Workflows: named contexts a run can be bound to. A workflow selects its own secret
values (secrets at scope `workflow`), so binding a run to one is a right, not free
text: the workflow must admit the run's agent (an explicit list kept by holders of
`workflows:manage`), and whoever starts the run must be able to see workflows.
Checked when the run starts and again whenever the run reveals a secret."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.agents.models import Agent, Workflow
from bastion.agents.schemas import WorkflowIn, WorkflowPatch
from bastion.audit import service as audit
from bastion.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from bastion.core.events import EventType
from bastion.core.ids import new_id
from bastion.core.pagination import Page, newest_first
from bastion.core.permissions import Permission
from bastion.core.principal import Principal


def _agents(db: Session, org_id: str, agent_ids: list[str]) -> list[str]:
    unique = sorted(set(agent_ids))
    if unique:
        stmt = select(Agent.id).where(Agent.org_id == org_id, Agent.id.in_(unique))
        missing = set(unique) - set(db.execute(stmt).scalars())
        if missing:
            raise InvalidInput.field("agent_ids", "names an agent that does not exist")
    return unique


def _name_free(db: Session, org_id: str, name: str, keep: str | None = None) -> None:
    stmt = select(Workflow.id).where(Workflow.org_id == org_id, Workflow.name == name)
    taken = db.execute(stmt).scalar_one_or_none()
    if taken is not None and taken != keep:
        raise Conflict("a workflow with this name exists")


def _find(db: Session, org_id: str, workflow_id: str) -> Workflow:
    found = db.get(Workflow, (org_id, workflow_id))
    if found is None:
        raise NotFound("workflow not found")
    return found


def create_workflow(db: Session, principal: Principal, org_id: str, body: WorkflowIn) -> Workflow:
    principal.require_org(org_id)
    principal.require(Permission.WORKFLOWS_MANAGE)
    _name_free(db, org_id, body.name)
    workflow = Workflow(
        org_id=org_id,
        id=new_id("wf"),
        name=body.name,
        description=body.description,
        agent_ids=_agents(db, org_id, body.agent_ids),
        created_by=principal.user_id or principal.id,
    )
    db.add(workflow)
    audit.record(
        db,
        type=EventType.WORKFLOW_CREATED,
        actor=principal.actor,
        org_id=org_id,
        resource=("workflow", workflow.id),
        metadata={"name": workflow.name, "agent_ids": workflow.agent_ids},
    )
    return workflow


def get_workflow(db: Session, principal: Principal, org_id: str, workflow_id: str) -> Workflow:
    principal.require_org(org_id)
    principal.require(Permission.WORKFLOWS_READ)
    return _find(db, org_id, workflow_id)


def list_workflows(
    db: Session, principal: Principal, org_id: str, *, limit: int, cursor: str | None
) -> Page[Workflow]:
    principal.require_org(org_id)
    principal.require(Permission.WORKFLOWS_READ)
    stmt = select(Workflow).where(Workflow.org_id == org_id)
    return newest_first(db, stmt, Workflow.id, limit=limit, cursor=cursor)


def update_workflow(
    db: Session, principal: Principal, org_id: str, workflow_id: str, body: WorkflowPatch
) -> Workflow:
    principal.require_org(org_id)
    principal.require(Permission.WORKFLOWS_MANAGE)
    workflow = _find(db, org_id, workflow_id)
    changes = body.model_dump(exclude_unset=True)
    metadata: dict[str, Any] = {"fields": sorted(changes)}
    if body.name is not None:
        _name_free(db, org_id, body.name, keep=workflow.id)
        workflow.name = body.name
    if body.description is not None:
        workflow.description = body.description
    if body.agent_ids is not None:
        workflow.agent_ids = _agents(db, org_id, body.agent_ids)
        metadata["agent_ids"] = workflow.agent_ids
    audit.record(
        db,
        type=EventType.WORKFLOW_UPDATED,
        actor=principal.actor,
        org_id=org_id,
        resource=("workflow", workflow.id),
        metadata=metadata,
    )
    return workflow


def delete_workflow(db: Session, principal: Principal, org_id: str, workflow_id: str) -> None:
    principal.require_org(org_id)
    principal.require(Permission.WORKFLOWS_MANAGE)
    workflow = _find(db, org_id, workflow_id)
    db.delete(workflow)
    audit.record(
        db,
        type=EventType.WORKFLOW_DELETED,
        actor=principal.actor,
        org_id=org_id,
        resource=("workflow", workflow_id),
        metadata={"name": workflow.name},
    )


def admits(db: Session, org_id: str, workflow_id: str, agent_id: str) -> bool:
    """Whether the organisation's workflow exists and admits the agent's runs."""
    workflow = db.get(Workflow, (org_id, workflow_id))
    return workflow is not None and agent_id in (workflow.agent_ids or ())


def bind(db: Session, principal: Principal, org_id: str, workflow_id: str, agent_id: str) -> None:
    """Check that a run of the agent, started by `principal`, may be bound to the
    workflow: 422 when there is no such workflow (or the caller may not see
    workflows), 403 when it does not admit the agent."""
    if (
        not principal.can(Permission.WORKFLOWS_READ)
        or db.get(Workflow, (org_id, workflow_id)) is None
    ):
        raise InvalidInput.field("workflow_id", "no such workflow")
    if not admits(db, org_id, workflow_id, agent_id):
        raise Forbidden(
            "this workflow does not admit this agent", permission=str(Permission.WORKFLOWS_MANAGE)
        )

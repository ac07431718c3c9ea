"""Data access: sources, documents, ACLs, metadata rules, and the authorization
questions (check, check-batch, filter, list, search-filter, acl-tokens)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from bastion.api.deps import DB, Caller, State
from bastion.api.state import AppState
from bastion.authz import access
from bastion.authz.engine import OrgIndex
from bastion.authz.models import AclEntry, Document
from bastion.authz.schemas import (
    AclEntryOut,
    AclIn,
    CheckBatchIn,
    CheckBatchOut,
    CheckIn,
    CheckOut,
    DocumentIn,
    DocumentOut,
    DocumentPatch,
    EngineStatsOut,
    FilterIn,
    FilterOut,
    ListIn,
    RuleIn,
    RuleOut,
    SearchFilterIn,
    SearchFilterOut,
    SourceIn,
    SourceOut,
    TokensOut,
)
from bastion.core.principal import Principal
from bastion.core.schemas import ListOf

T = TypeVar("T")
sources_router = APIRouter(prefix="/v1/orgs/{org}", tags=["data access"])
authz_router = APIRouter(prefix="/v1/orgs/{org}/authz", tags=["authorization"])


def _document_out(doc: Document, acl: list[AclEntry]) -> DocumentOut:
    return DocumentOut(
        id=doc.id,
        source_id=doc.source_id,
        external_id=doc.external_id,
        metadata=doc.doc_metadata,
        inherit=doc.inherit,
        acl=[AclEntryOut.model_validate(e) for e in acl],
        created_at=doc.created_at,
        updated_at=doc.updated_at,
    )


@sources_router.post("/sources", status_code=201, summary="Add a data source")
def create_source(org: str, body: SourceIn, principal: Caller, db: DB) -> SourceOut:
    return SourceOut.model_validate(access.create_source(db, principal, org, body.name))


@sources_router.get("/sources", summary="Data sources")
def list_sources(org: str, principal: Caller, db: DB) -> dict[str, list[SourceOut]]:
    return {"data": [SourceOut.model_validate(s) for s in access.list_sources(db, principal, org)]}


@sources_router.put(
    "/sources/{src}/acl/{member}", summary="Give a user, team or service account a relation"
)
def put_source_acl(
    org: str, src: str, member: str, body: AclIn, principal: Caller, db: DB
) -> AclEntryOut:
    entry = access.put_acl(
        db, principal, org, ("source", src), member, body.relation, body.expires_at
    )
    return AclEntryOut.model_validate(entry)


@sources_router.delete("/sources/{src}/acl/{member}", status_code=204, summary="Remove a relation")
def delete_source_acl(org: str, src: str, member: str, principal: Caller, db: DB) -> Response:
    access.delete_acl(db, principal, org, ("source", src), member)
    return Response(status_code=204)


@sources_router.post(
    "/sources/{src}/documents", status_code=201, summary="Register a document and its ACL"
)
def create_document(org: str, src: str, body: DocumentIn, principal: Caller, db: DB) -> DocumentOut:
    acl = body.acl
    doc = access.create_document(
        db,
        principal,
        org,
        src,
        external_id=body.external_id,
        metadata=body.metadata,
        inherit=acl.inherit if acl else True,
        entries=[
            access.AclSpec(e.principal, e.relation, e.expires_at)
            for e in (acl.entries if acl else [])
        ],
    )
    db.flush()
    return _document_out(doc, access.acl_of(db, org, doc.id))


@sources_router.get("/documents/{doc}", summary="One document with its own ACL")
def get_document(org: str, doc: str, principal: Caller, db: DB, state: State) -> DocumentOut:
    found = access.get_document(db, state.authz, state.sessions, principal, org, doc)
    return _document_out(found, access.acl_of(db, org, found.id))


@sources_router.patch("/documents/{doc}", summary="Change a document's metadata or inheritance")
def update_document(
    org: str, doc: str, body: DocumentPatch, principal: Caller, db: DB
) -> DocumentOut:
    found = access.update_document(
        db, principal, org, doc, metadata=body.metadata, inherit=body.inherit
    )
    return _document_out(found, access.acl_of(db, org, found.id))


@sources_router.delete("/documents/{doc}", status_code=204, summary="Remove a document")
def delete_document(org: str, doc: str, principal: Caller, db: DB) -> Response:
    access.delete_document(db, principal, org, doc)
    return Response(status_code=204)


@sources_router.get(
    "/documents/{doc}/acl-tokens", summary="Tokens to index with the document for pre-filtering"
)
def document_acl_tokens(org: str, doc: str, principal: Caller, state: State) -> TokensOut:
    tokens, until = access.document_tokens(state.authz, state.sessions, principal, org, doc)
    return TokensOut(tokens=tokens, valid_until=until)


@authz_router.post("/rules", status_code=201, summary="Add a metadata rule (CEL)")
def create_rule(org: str, body: RuleIn, principal: Caller, db: DB) -> RuleOut:
    rule = access.create_rule(
        db,
        principal,
        org,
        effect=body.effect,
        action=body.action,
        resource_type=body.resource_type,
        condition=body.condition,
    )
    return RuleOut.model_validate(rule)


@authz_router.get("/rules", summary="Metadata rules")
def list_rules(org: str, principal: Caller, db: DB) -> dict[str, list[RuleOut]]:
    return {"data": [RuleOut.model_validate(r) for r in access.list_rules(db, principal, org)]}


@authz_router.delete("/rules/{rule}", status_code=204, summary="Remove a metadata rule")
def delete_rule(org: str, rule: str, principal: Caller, db: DB) -> Response:
    access.delete_rule(db, principal, org, rule)
    return Response(status_code=204)


def _answers(
    org: str,
    checks: list[CheckIn],
    principal: Principal,
    state: AppState,
    index: OrgIndex | None = None,
) -> list[CheckOut]:
    questions = [
        access.Question(c.subject, c.action, c.resource, c.explain, c.on_behalf_of) for c in checks
    ]
    decisions = access.check(state.authz, state.sessions, principal, org, questions, index)
    return [
        CheckOut(allowed=d.allowed, reason=d.reason, trace=list(d.trace) if c.explain else None)
        for c, d in zip(checks, decisions, strict=True)
    ]


def _state(request: Request) -> AppState:
    # Straight from the request, not a `State` dependency: on these routes each
    # dependency level costs as much as the answer (as in `get_principal`).
    state: AppState = request.app.state.bastion
    return state


async def _answer(state: AppState, org: str, work: Callable[[OrgIndex | None], T]) -> T:
    """Run `work` on the event loop when the organisation's index is current and its
    revision read is local (SQLite: one primary-key read, as `get_principal` does on a
    cache hit): the answer is a few dictionary lookups, cheaper than the hop to a worker
    thread. Otherwise (an index to build, or PostgreSQL) in a worker thread, which reads
    the revision and builds as needed."""
    engine = state.authz
    index = engine.cached(org) if engine.local else None
    if index is not None:
        return work(index)
    return await run_in_threadpool(work, None)


@authz_router.post("/check", summary="May the subject do the action to the resource?")
async def check(org: str, body: CheckIn, principal: Caller, request: Request) -> CheckOut:
    return await check_one(_state(request), org, body, principal)


async def check_one(state: AppState, org: str, body: CheckIn, principal: Principal) -> CheckOut:
    """The answer of `POST …/authz/check` (also served by `bastion.api.fast`)."""
    if body.explain:  # evaluates every rule: in a worker thread
        return (await run_in_threadpool(_answers, org, [body], principal, state))[0]
    return (
        await _answer(state, org, lambda index: _answers(org, [body], principal, state, index))
    )[0]


@authz_router.post("/check-batch", summary="Several checks, answered in order")
async def check_batch(
    org: str, body: CheckBatchIn, principal: Caller, request: Request
) -> CheckBatchOut:
    return await check_many(_state(request), org, body, principal)


async def check_many(
    state: AppState, org: str, body: CheckBatchIn, principal: Principal
) -> CheckBatchOut:
    """The answer of `POST …/authz/check-batch` (also served by `bastion.api.fast`)."""
    if any(c.explain for c in body.checks):
        results = await run_in_threadpool(_answers, org, body.checks, principal, state)
    else:
        results = await _answer(
            state, org, lambda index: _answers(org, body.checks, principal, state, index)
        )
    return CheckBatchOut(results=results)


@authz_router.post("/filter", summary="The ids the subject may act on, in input order")
async def filter_ids(org: str, body: FilterIn, principal: Caller, request: Request) -> FilterOut:
    return await filter_allowed(_state(request), org, body, principal)


async def filter_allowed(
    state: AppState, org: str, body: FilterIn, principal: Principal
) -> FilterOut:
    """The answer of `POST …/authz/filter` (also served by `bastion.api.fast`)."""

    def work(index: OrgIndex | None) -> list[str]:
        return access.filter_ids(
            state.authz,
            state.sessions,
            principal,
            org,
            subject=body.subject,
            action=body.action,
            resource_type=body.resource_type,
            ids=body.resource_ids,
            on_behalf_of=body.on_behalf_of,
            index=index,
        )

    return FilterOut(allowed_ids=await _answer(state, org, work))


@authz_router.post("/list", summary="Every resource of a type the subject may act on")
def list_ids(org: str, body: ListIn, principal: Caller, state: State) -> ListOf[str]:
    page, next_cursor = access.list_ids(
        state.authz,
        state.sessions,
        principal,
        org,
        subject=body.subject,
        action=body.action,
        resource_type=body.resource_type,
        limit=body.limit,
        after=body.cursor,
        on_behalf_of=body.on_behalf_of,
    )
    return ListOf[str](data=page, next_cursor=next_cursor)


@authz_router.post("/search-filter", summary="A pre-filter for vector stores and SQL")
def search_filter(
    org: str, body: SearchFilterIn, principal: Caller, state: State
) -> SearchFilterOut:
    result = access.search_filter(
        state.authz,
        state.sessions,
        principal,
        org,
        subject=body.subject,
        action=body.action,
        on_behalf_of=body.on_behalf_of,
    )
    return SearchFilterOut.model_validate(result)


@authz_router.get("/stats", summary="Engine counters and memory (this worker)")
def stats(org: str, principal: Caller, state: State) -> EngineStatsOut:
    access.require_stats(principal, org)
    engine = state.authz
    return EngineStatsOut(
        decisions=engine.stats.decisions,
        index_builds=engine.stats.index_builds,
        rule_errors=engine.stats.rule_errors,
        **engine.memory(),
    )

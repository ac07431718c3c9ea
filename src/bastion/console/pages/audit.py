"""Audit log: search the organisation's trail (filters and text), one event's detail,
the export link (JSONL or CSV, streamed and itself audited) and the hash chain's
verification — through `bastion.audit`, as `/v1/orgs/{org}/audit-events` does."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Protocol, cast
from urllib.parse import urlencode

from fastapi import APIRouter
from sqlalchemy.orm import Session, sessionmaker
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from bastion.audit import export
from bastion.audit import service as audit
from bastion.audit.export import ExportFormat
from bastion.console.pages.common import form_time
from bastion.console.web import SignedIn, SignedInPost, render
from bastion.core.db import begin_write
from bastion.core.errors import InvalidInput
from bastion.core.pagination import DEFAULT_LIMIT
from bastion.core.signing import InstanceSigner

router = APIRouter()
PAGE = "/console/audit"
FIELDS = ("type", "actor", "resource", "outcome", "since", "until", "q")
OUTCOMES = ("success", "failure", "denied")


class _State(Protocol):
    @property
    def sessions(self) -> sessionmaker[Session]: ...
    @property
    def signer(self) -> InstanceSigner: ...


def _time(name: str, value: str | None) -> datetime | None:
    text = form_time(value)
    if text is None:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput.field(name, "is not a date and time") from None
    if parsed.tzinfo is None:
        raise InvalidInput.field(name, "needs a time zone")
    return parsed


def filters_of(query: Mapping[str, str]) -> tuple[audit.EventFilter, dict[str, str]]:
    """The search's filters from the query string (as the API's `event_filter` takes
    them), and the values to put back in the form and in links."""
    given = {k: query[k].strip() for k in FIELDS if query.get(k, "").strip()}
    for name, value in given.items():
        if len(value) > 200:
            raise InvalidInput.field(name, "is longer than 200 characters")
    if given.get("outcome") not in (None, *OUTCOMES):
        raise InvalidInput.field("outcome", "is not one of success, failure, denied")
    return (
        audit.EventFilter(
            type=given.get("type"), actor=given.get("actor"), resource=given.get("resource"),
            outcome=given.get("outcome"), since=_time("since", given.get("since")),
            until=_time("until", given.get("until")), q=given.get("q"),
        ),
        given,
    )  # fmt: skip


def _page(viewer: SignedIn, verification: object | None = None) -> Response:
    query = viewer.request.query_params
    filters, given = filters_of(query)
    cursor = query.get("cursor") or None
    page = audit.search(
        viewer.db, viewer.signed_in, viewer.org_id, filters, limit=DEFAULT_LIMIT, cursor=cursor
    )
    return render(
        viewer, "audit.html", title="Audit log", events=page.data, given=given,
        outcomes=OUTCOMES, verification=verification,
        next_link=f"{PAGE}?{urlencode({**given, 'cursor': page.next_cursor})}"
        if page.next_cursor else None,
        export_query=urlencode(given),
    )  # fmt: skip


@router.get("/audit")
def audit_page(viewer: SignedIn) -> Response:
    return _page(viewer)


@router.post("/audit/verify")
def verify_chain(posted: SignedInPost) -> Response:
    """Walk the organisation's hash chain now and show the result on the page."""
    signer = cast(_State, posted.viewer.edge.app).signer
    result = audit.verify_org(posted.db, posted.principal, posted.org_id, signer.public_keys)
    return _page(posted.viewer, result)


@router.get("/audit/export")
def export_events(viewer: SignedIn, request: Request) -> StreamingResponse:
    """The matching events as a file, oldest first (the export is audited, as the API's)."""
    filters, _ = filters_of(request.query_params)
    try:
        fmt = ExportFormat(request.query_params.get("format", "jsonl"))
    except ValueError:
        raise InvalidInput.field("format", "is not one of jsonl, csv") from None
    db, org = viewer.db, viewer.org_id
    begin_write(db)
    export.begin(db, viewer.signed_in, org, filters, fmt)
    return StreamingResponse(
        export.stream(cast(_State, viewer.edge.app).sessions, org, filters, fmt),
        media_type=export.MEDIA_TYPES[fmt],
        headers={"content-disposition": f'attachment; filename="audit-{org}.{fmt}"'},
    )


@router.get("/audit/{event}")
def event_page(event: str, viewer: SignedIn) -> Response:
    found = audit.get(viewer.db, viewer.signed_in, viewer.org_id, event)
    detail = json.dumps(found.event_metadata, indent=2, sort_keys=True, ensure_ascii=False)
    return render(viewer, "audit_event.html", title="Audit event", event=found, detail=detail)

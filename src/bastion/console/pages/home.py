"""The console's home: who is signed in, and the pages."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from bastion.console.web import SignedIn, render
from bastion.identity import service as users
from bastion.tenancy import service as tenancy

router = APIRouter()


@router.get("/")
def home(viewer: SignedIn) -> Response:
    principal = viewer.signed_in
    me = users.find_user_in_org(viewer.db, principal.org_id, principal.user_id or "")
    org = tenancy.find_org(viewer.db, principal.org_id)
    return render(viewer, "home.html", title="Overview", me=me, org_name=org.name if org else "")

"""What every console page uses: who is looking (`Viewer`), the posted form with its
CSRF token checked (`Posted`), rendering a template, and redirects.

A page route (see `bastion.console.pages.users` for the pattern):

    router = APIRouter()

    @router.get("/users")
    def users_page(viewer: SignedIn) -> Response:
        page = users.list_users(viewer.db, viewer.principal, viewer.org_id, ...)
        return render(viewer, "users.html", title="Users", users=page.data)

    @router.post("/users/{user}/suspend")
    def suspend(user: str, posted: SignedInPost) -> Response:
        users.update_user(posted.db, posted.principal, posted.org_id, user, status="suspended")
        return see_other(posted, "/console/users", "User suspended.")

`SignedIn` / `SignedInPost` authenticate the session cookie with the API's own function
(same principal, permissions and quotas as a bearer of the same session); a POST's
CSRF token is checked before the route runs (403 otherwise). Domain errors propagate
to the console's handlers (`bastion.console.errors`): a problem page with the same
status as the API's answer (so the unit of work rolls back), the step-up prompt for
`step_up_required`, the enrolment page for `mfa_enrolment_required`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode

import jinja2
from fastapi import Depends
from markupsafe import Markup
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse

from bastion.console import nav, security
from bastion.console.edge import Edge, Unit
from bastion.core.config import Settings
from bastion.core.errors import (
    BastionError,
    FieldError,
    InvalidInput,
    MfaEnrolmentRequired,
    Unauthenticated,
)
from bastion.core.permissions import Permission
from bastion.core.principal import Principal

MAX_FORM_FIELDS = 200
HOME = "/console/"
SIGN_IN = "/console/sign-in"
ENROL = "/console/security"
SESSION_PREFIX = "bss_"


class SignInNeeded(Exception):
    """No usable session: to the sign-in page (GET) or a 401 page (POST)."""


class CsrfRefused(Exception):
    """A state-changing request without the right CSRF token: 403, nothing ran."""


class FormRefused(InvalidInput):
    """A form's values refused (422), answered with the form's own page, rendered by the
    route with what was typed and each message next to its field. The console's handler
    queues the refusal's trace as for any 422, then sends `page` (the status makes the
    unit of work roll back)."""

    def __init__(self, page: HTMLResponse, errors: Mapping[str, str]) -> None:
        super().__init__(
            "invalid fields: " + ", ".join(sorted(errors)),
            errors=[FieldError(name, message) for name, message in sorted(errors.items())],
        )
        self.page = page


class EnrolmentOwed(Exception):
    """The organisation requires a second factor the person has not used yet."""


def edge_of(request: Request) -> Edge:
    edge: Edge = request.app.state.edge
    return edge


@dataclass
class Viewer:
    """Who is looking at a console page, with what they need to render and act."""

    request: Request = field(repr=False)
    edge: Edge = field(repr=False)
    principal: Principal | None
    browser: str  # the browser binding value (set as a cookie when new)
    browser_new: bool = False
    via_mfa_token: bool = False  # enrolling with an mfa_token (no session yet)

    @property
    def unit(self) -> Unit:
        return self.edge.unit(self.request)

    @property
    def db(self) -> Session:
        return self.unit.db

    @property
    def settings(self) -> Settings:
        return self.edge.app.settings

    @property
    def signed_in(self) -> Principal:
        if self.principal is None:
            raise SignInNeeded
        return self.principal

    @property
    def org_id(self) -> str:
        return self.signed_in.org_id

    def can(self, permission: Permission | str) -> bool:
        return self.principal is not None and permission in self.principal.permissions

    @property
    def csrf(self) -> str:
        bound = security.binding(None if self.via_mfa_token else self.principal, self.browser)
        return security.csrf_token(self.edge.app.hasher, bound or "")


@dataclass
class Posted:
    """A POST whose CSRF token was checked: the viewer and the form's fields."""

    viewer: Viewer
    form: Mapping[str, str]
    lists: Mapping[str, list[str]] = field(default_factory=dict)

    @property
    def db(self) -> Session:
        return self.viewer.db

    @property
    def principal(self) -> Principal:
        return self.viewer.signed_in

    @property
    def org_id(self) -> str:
        return self.viewer.org_id

    def get(self, name: str) -> str | None:
        value = self.form.get(name)
        return value if value not in (None, "") else None

    def require(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise InvalidInput.field(name, "is required")
        return value

    def all(self, name: str) -> list[str]:
        return [v for v in self.lists.get(name, []) if v]

    @property
    def back(self) -> str:
        return safe_path(self.form.get("back"), HOME)


def safe_path(value: str | None, default: str) -> str:
    """A path inside the console to send the browser back to (never another origin)."""
    if (
        not value
        or not value.startswith("/console/")
        or "//" in value
        or "\\" in value
        or any(ord(c) < 0x21 for c in value)
        or len(value) > 500
    ):
        return default
    return value


def _browser(request: Request, settings: Settings) -> tuple[str, bool]:
    value = security.read_cookie(request, settings, "browser")
    return (value, False) if value else (security.new_browser_value(), True)


async def _viewer(request: Request, *, enrolment: bool, required: bool) -> Viewer:
    edge = edge_of(request)
    settings = edge.app.settings
    browser, new = _browser(request, settings)
    token = security.read_cookie(request, settings, "session")
    if token is not None and not token.startswith(SESSION_PREFIX):
        token = None  # the console's cookie holds the session its own sign-in opened
    via_mfa = False
    if token is None and enrolment:
        token = security.read_cookie(request, settings, "mfa")
        via_mfa = token is not None
    if token is None:
        if required:
            await _enrolment_owed(request, edge, settings)
            raise SignInNeeded
        return Viewer(request, edge, None, browser, new)
    try:
        principal = await edge.authenticate(request, token, enrolment)
    except MfaEnrolmentRequired:
        raise EnrolmentOwed from None
    except Unauthenticated:
        if required:
            raise SignInNeeded from None
        return Viewer(request, edge, None, browser, new)
    return Viewer(request, edge, principal, browser, new, via_mfa)


async def _enrolment_owed(request: Request, edge: Edge, settings: Settings) -> None:
    """Signed out, but holding the enrolment `mfa_token` a sign-in gave a person who must
    enrol a second factor first: to the enrolment page, not the sign-in page."""
    pending = security.read_cookie(request, settings, "mfa")
    if pending is None:
        return
    try:
        await edge.authenticate(request, pending, True)
    except BastionError:
        return  # a sign-in mfa_token (or an expired one): nothing to enrol with
    raise EnrolmentOwed


async def signed_in(request: Request) -> Viewer:
    return await _viewer(request, enrolment=False, required=True)


async def enrolling(request: Request) -> Viewer:
    """A person, who may still owe the second factor their organisation requires (with
    a session, or the enrolment `mfa_token` a sign-in gave): the enrolment pages."""
    return await _viewer(request, enrolment=True, required=True)


async def visitor(request: Request) -> Viewer:
    """Anyone: the sign-in pages (a session, if any, is known but not required)."""
    return await _viewer(request, enrolment=False, required=False)


async def parse_form(request: Request) -> tuple[dict[str, str], dict[str, list[str]]]:
    """The posted form (first value of each field, and every value), parsed once per
    request (kept in `request.state` for the error handlers)."""
    cached: tuple[dict[str, str], dict[str, list[str]]] | None = getattr(
        request.state, "console_form", None
    )
    if cached is not None:
        return cached
    content_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise CsrfRefused  # forms only: nothing else carries the token
    raw = await request.body()
    try:
        pairs = parse_qsl(
            raw.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS
        )
    except (UnicodeDecodeError, ValueError):
        raise InvalidInput.field("body", "is not a form") from None
    single: dict[str, str] = {}
    many: dict[str, list[str]] = {}
    for name, value in pairs:
        single.setdefault(name, value)
        many.setdefault(name, []).append(value)
    request.state.console_form = (single, many)
    return single, many


async def _posted(viewer: Viewer) -> Posted:
    request = viewer.request
    single, many = await parse_form(request)
    hasher = viewer.edge.app.hasher
    bound = security.binding(None if viewer.via_mfa_token else viewer.principal, viewer.browser)
    if viewer.browser_new or not security.csrf_valid(
        hasher, bound, single.get(security.CSRF_FIELD)
    ):
        raise CsrfRefused
    return Posted(viewer, single, many)


async def signed_in_post(viewer: Annotated[Viewer, Depends(signed_in)]) -> Posted:
    return await _posted(viewer)


async def enrolling_post(viewer: Annotated[Viewer, Depends(enrolling)]) -> Posted:
    return await _posted(viewer)


async def visitor_post(viewer: Annotated[Viewer, Depends(visitor)]) -> Posted:
    return await _posted(viewer)


SignedIn = Annotated[Viewer, Depends(signed_in)]
SignedInPost = Annotated[Posted, Depends(signed_in_post)]
Enrolling = Annotated[Viewer, Depends(enrolling)]
EnrollingPost = Annotated[Posted, Depends(enrolling_post)]
Visitor = Annotated[Viewer, Depends(visitor)]
VisitorPost = Annotated[Posted, Depends(visitor_post)]


# --- rendering ----------------------------------------------------------------------

_env = jinja2.Environment(
    loader=jinja2.PackageLoader("bastion.console", "templates"),
    autoescape=True,  # every value is escaped unless a template says otherwise
    trim_blocks=True,
    lstrip_blocks=True,
)


@jinja2.pass_context
def _csrf_field(context: jinja2.runtime.Context) -> Markup:
    """The hidden fields every console form carries: its CSRF token and where to come
    back to (the page that shows the form)."""
    return Markup(
        '<input type="hidden" name="csrf" value="{}"><input type="hidden" name="back" value="{}">'
    ).format(context.get("csrf", ""), context.get("path", HOME))


_env.globals["csrf_field"] = _csrf_field


def render(
    viewer: Viewer,
    template: str,
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    request = viewer.request
    notice = request.query_params.get("notice")
    values = {
        "viewer": viewer,
        "principal": viewer.principal,
        "csrf": viewer.csrf,
        "path": request.url.path,
        "nav": nav.ITEMS,
        "notice": NOTICES.get(notice or ""),
        **context,
    }
    html = _env.get_template(template).render(values)
    response = HTMLResponse(html, status_code=status, headers=dict(headers or {}))
    if viewer.browser_new:
        security.set_cookie(response, viewer.settings, "browser", viewer.browser)
    return response


# Short confirmations shown after a redirect (`?notice=<key>`): only these texts are
# shown, so a crafted link cannot put words on a console page.
NOTICES: dict[str, str] = {}


def notice(key: str, text: str) -> str:
    """Register a confirmation text under `key` (module level, at import time)."""
    NOTICES[key] = text
    return key


def see_other(where: str, notice_key: str | None = None, **query: str) -> RedirectResponse:
    """After a successful POST: 303 to a page (Post/Redirect/Get)."""
    params = dict(query)
    if notice_key is not None:
        params["notice"] = notice_key
    target = f"{where}?{urlencode(params)}" if params else where
    return RedirectResponse(target, status_code=303)

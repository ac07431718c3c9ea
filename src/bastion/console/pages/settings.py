"""Settings of the organisation, one form per concern, each saved as the
`PATCH /v1/orgs/{org}` of just its fields (so a form changes only what it shows, and
step-up is asked only where the API asks for it): sessions, sign-in security (MFA
policy and methods, step-up age), the IP allowlist (with `confirm_lockout`), the
password policy — and the Slack app of approvals (set, or removed: the API's
`{"slack": {...}}` and `{"slack": null}`; both ask for a step-up).

Retention is the `PUT /v1/orgs/{org}/retention` of its five periods, through the
privacy service (which asks for a step-up when a period changes); a value the API's
schema refuses shows the page again (422) with the message next to its field."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import ValidationError
from starlette.responses import HTMLResponse, Response

from bastion.approvals.schemas import SlackIn
from bastion.approvals.slack import settings as slack
from bastion.console.pages.common import form_int
from bastion.console.web import (
    FormRefused,
    Posted,
    SignedIn,
    SignedInPost,
    Viewer,
    notice,
    render,
    see_other,
)
from bastion.core.errors import InvalidInput
from bastion.core.permissions import Permission
from bastion.privacy import retention
from bastion.privacy.schemas import RetentionIn
from bastion.tenancy import service as tenancy
from bastion.tenancy.schemas import OrgOut, OrgUpdate

router = APIRouter()
PAGE = "/console/settings"
SAVED = notice("settings-saved", "Settings saved.")
SLACK_SAVED = notice("slack-saved", "Slack app saved: approvers linked to Slack get messages.")
SLACK_REMOVED = notice("slack-removed", "Slack app removed: its secrets are destroyed.")
RETENTION_SAVED = notice("retention-saved", "Retention saved: the hourly purge applies it.")

# The retention form's fields: (name, label, unit), in the API's order.
RETENTION_FIELDS = (
    ("audit_events_days", "Audit events", "days"),
    ("tool_calls_days", "Agents' tool calls", "days"),
    ("webhook_events_days", "Received webhook events", "days"),
    ("deleted_objects_days", "Deleted objects", "days"),
    ("run_artifacts_hours", "Run artifacts", "hours"),
)


def _bounds() -> dict[str, tuple[int, int]]:
    """Each period's (minimum, maximum), read from the API's own schema."""
    properties = RetentionIn.model_json_schema()["properties"]
    bounds = {}
    for name, _label, _unit in RETENTION_FIELDS:
        number = next(s for s in properties[name]["anyOf"] if s.get("type") == "integer")
        bounds[name] = (int(number["minimum"]), int(number["maximum"]))
    return bounds


RETENTION_BOUNDS = _bounds()


def _page(
    viewer: Viewer,
    *,
    status: int = 200,
    typed: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
) -> HTMLResponse:
    """The page; after a refused retention form, with what was typed and the errors by
    field (shown next to each)."""
    org = OrgOut.model_validate(tenancy.get_org(viewer.db, viewer.signed_in, viewer.org_id))
    periods: dict[str, int | str] | None = None
    if viewer.can(Permission.PRIVACY_READ):
        periods = {**retention.get_retention(viewer.db, viewer.signed_in, viewer.org_id)}
        periods.update(typed or {})
    return render(
        # `path`: where the forms come back to (step-up included), also when this is the
        # answer to a refused POST of /console/settings/retention.
        viewer, "settings.html", status=status, title="Settings", org=org, ip=viewer.unit.ip,
        path=PAGE,
        slack=slack.view(viewer.db, viewer.org_id), retention=periods,
        retention_fields=RETENTION_FIELDS, retention_bounds=RETENTION_BOUNDS,
        retention_errors=errors or {}, may_set_retention=viewer.can(Permission.PRIVACY_MANAGE),
    )  # fmt: skip


@router.get("/settings")
def settings_page(viewer: SignedIn) -> Response:
    return _page(viewer)


@router.post("/settings/retention")
def save_retention(posted: SignedInPost) -> Response:
    """`PUT …/retention` of the five periods; refused values come back next to their
    fields (422), with a message that never repeats what was typed."""
    typed = {name: posted.form.get(name, "") for name, _l, _u in RETENTION_FIELDS}
    try:
        body = RetentionIn.model_validate({k: form_int(v) for k, v in typed.items()})
    except ValidationError as exc:
        errors: dict[str, str] = {}
        for err in exc.errors():
            name = str(err["loc"][0]) if err.get("loc") else "form"
            bounds = RETENTION_BOUNDS.get(name)
            message = f"must be a whole number from {bounds[0]} to {bounds[1]}" if bounds else ""
            errors.setdefault(name, message or "is invalid")
        page = _page(posted.viewer, status=422, typed=typed, errors=errors)
        raise FormRefused(page, errors) from None
    retention.update_retention(
        posted.db, posted.principal, posted.org_id, body.model_dump(exclude_none=True)
    )
    return see_other(PAGE, RETENTION_SAVED)


@router.post("/settings/slack")
def save_slack(posted: SignedInPost) -> Response:
    body = SlackIn.model_validate(
        {
            "team_id": posted.form.get("team_id", "").strip(),
            "signing_secret": posted.form.get("signing_secret", ""),
            "bot_token": posted.get("bot_token"),
        }
    )
    change = slack.SlackChange(
        team_id=body.team_id,
        signing_secret=body.signing_secret.get_secret_value(),
        bot_token=body.bot_token.get_secret_value() if body.bot_token else None,
    )
    slack.configure(
        posted.db, posted.viewer.edge.app.vault, posted.principal, posted.org_id, change
    )
    return see_other(PAGE, SLACK_SAVED)


@router.post("/settings/slack/remove")
def remove_slack(posted: SignedInPost) -> Response:
    slack.remove(posted.db, posted.principal, posted.org_id)
    return see_other(PAGE, SLACK_REMOVED)


def _values(posted: Posted, section: str) -> dict[str, Any]:
    """The section's fields, typed as the API's JSON would carry them."""
    get = posted.get
    if section == "sessions":
        return {
            "session_idle_timeout": form_int(get("session_idle_timeout")),
            "session_absolute_timeout": form_int(get("session_absolute_timeout")),
            "max_sessions_per_user": form_int(get("max_sessions_per_user")),
        }
    if section == "mfa":
        return {
            "mfa_policy": get("mfa_policy"),
            "mfa_methods": posted.all("mfa_methods"),
            "step_up_max_age": form_int(get("step_up_max_age")),
        }
    if section == "ip-allowlist":
        text = posted.form.get("ip_allowlist", "")
        return {
            "ip_allowlist": [line.strip() for line in text.splitlines() if line.strip()],
            "confirm_lockout": get("confirm_lockout") == "yes",
        }
    if section == "passwords":
        return {
            "password_policy": {
                "min_length": form_int(get("min_length")),
                "breached_check": get("breached_check") == "yes",
            }
        }
    raise InvalidInput.field("section", "is not a settings section")


@router.post("/settings/{section}")
def save(section: str, posted: SignedInPost) -> Response:
    body = OrgUpdate.model_validate(_values(posted, section))
    policy = body.password_policy
    tenancy.update_org(
        posted.db,
        posted.principal,
        posted.org_id,
        name=None,
        session_idle_timeout=body.session_idle_timeout,
        session_absolute_timeout=body.session_absolute_timeout,
        fields_set=body.model_fields_set,
        audit_retention_days=body.audit_retention_days,
        mfa_policy=body.mfa_policy,
        mfa_methods=list(body.mfa_methods) if body.mfa_methods is not None else None,
        step_up_max_age=body.step_up_max_age,
        password_min_length=policy.min_length if policy else None,
        password_breached_check=policy.breached_check if policy else None,
        max_sessions_per_user=body.max_sessions_per_user,
        ip_allowlist=body.ip_allowlist,
        confirm_lockout=body.confirm_lockout,
    )
    return see_other(PAGE, SAVED)

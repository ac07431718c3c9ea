"""Settings of the organisation, one form per concern, each saved as the
`PATCH /v1/orgs/{org}` of just its fields (so a form changes only what it shows, and
step-up is asked only where the API asks for it): sessions, sign-in security (MFA
policy and methods, step-up age), the IP allowlist (with `confirm_lockout`), the
password policy, audit retention — and the Slack app of approvals (set, or removed: the
API's `{"slack": {...}}` and `{"slack": null}`; both ask for a step-up)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.responses import Response

from bastion.approvals.schemas import SlackIn
from bastion.approvals.slack import settings as slack
from bastion.console.pages.common import form_int
from bastion.console.web import Posted, SignedIn, SignedInPost, notice, render, see_other
from bastion.core.errors import InvalidInput
from bastion.tenancy import service as tenancy
from bastion.tenancy.schemas import OrgOut, OrgUpdate

router = APIRouter()
PAGE = "/console/settings"
SAVED = notice("settings-saved", "Settings saved.")
SLACK_SAVED = notice("slack-saved", "Slack app saved: approvers linked to Slack get messages.")
SLACK_REMOVED = notice("slack-removed", "Slack app removed: its secrets are destroyed.")


@router.get("/settings")
def settings_page(viewer: SignedIn) -> Response:
    org = OrgOut.model_validate(tenancy.get_org(viewer.db, viewer.signed_in, viewer.org_id))
    return render(
        viewer, "settings.html", title="Settings", org=org, ip=viewer.unit.ip,
        slack=slack.view(viewer.db, viewer.org_id),
    )  # fmt: skip


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
    if section == "retention":
        return {"audit_retention_days": form_int(get("audit_retention_days"))}
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

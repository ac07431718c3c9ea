"""What an approver is told: the agent, the tool and its risk, a safe summary of the
arguments, who the action is for, the deadline and the approval's console page.

The summary of the arguments is redacted (keys that name secrets, credential-shaped
strings: `bastion.core.redact`), each string clipped, depth and length bounded; in email
it is HTML-escaped, in Slack it is plain text (no mrkdwn, no links). Email carries a
link to the console, never a one-click decision: a GET never decides."""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bastion.core.clock import as_utc, rfc3339
from bastion.core.redact import redact_value

MAX_SUMMARY = 500
MAX_STRING = 80
MAX_ITEMS = 10
MAX_DEPTH = 3
APPROVE, DENY = "approval.approve", "approval.deny"


def _clip(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return value if len(value) <= MAX_STRING else value[: MAX_STRING - 1] + "…"
    if isinstance(value, dict):
        if depth >= MAX_DEPTH:
            return "{…}"
        items = list(value.items())
        clipped = {str(k)[:MAX_STRING]: _clip(v, depth + 1) for k, v in items[:MAX_ITEMS]}
        if len(items) > MAX_ITEMS:
            clipped["…"] = f"{len(items) - MAX_ITEMS} more"
        return clipped
    if isinstance(value, list):
        if depth >= MAX_DEPTH:
            return ["…"]
        clipped_list = [_clip(v, depth + 1) for v in value[:MAX_ITEMS]]
        if len(value) > MAX_ITEMS:
            clipped_list.append(f"… {len(value) - MAX_ITEMS} more")
        return clipped_list
    return value


def arguments_summary(arguments: Any) -> str:
    """The arguments as approvers may see them outside Bastion: secrets redacted,
    strings clipped, at most `MAX_SUMMARY` characters of JSON."""
    text = json.dumps(
        _clip(redact_value(arguments)), ensure_ascii=False, sort_keys=True, default=str
    )
    return text if len(text) <= MAX_SUMMARY else text[: MAX_SUMMARY - 1] + "…"


def _one_line(value: str, limit: int = 200) -> str:
    flat = " ".join(value.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


@dataclass(frozen=True)
class Notice:
    """One approval, as every channel describes it."""

    approval_id: str
    agent: str
    tool: str
    risk: str
    arguments: str  # the safe summary
    requested_for: str  # a person's name and email, or "nobody in particular"
    expires_at: datetime
    link: str  # the approval's console page

    @property
    def deadline(self) -> str:
        return rfc3339(as_utc(self.expires_at)) or ""


def console_link(public_url: str, approval_id: str) -> str:
    return f"{public_url.rstrip('/')}/console/approvals/{approval_id}"


def email(notice: Notice) -> tuple[str, str, str]:
    """Subject, plain text and HTML of the approver's email."""
    agent, tool = _one_line(notice.agent, 80), _one_line(notice.tool, 80)
    subject = f"[Bastion] Approval needed: {agent} wants to run {tool} ({notice.risk})"
    lines = [
        f"The agent {agent} asks to run the tool {tool} (risk: {notice.risk}).",
        f"For: {_one_line(notice.requested_for)}",
        f"Arguments: {notice.arguments}",
        f"Decide before: {notice.deadline}",
        "",
        f"Review it and approve or deny in the Bastion console: {notice.link}",
        "This email decides nothing by itself: open the link and sign in to decide.",
    ]
    e = html.escape
    rows = [
        ("Agent", agent),
        ("Tool", tool),
        ("Risk", notice.risk),
        ("For", _one_line(notice.requested_for)),
        ("Arguments", notice.arguments),
        ("Decide before", notice.deadline),
    ]
    table = "".join(
        f"<tr><th align='left'>{e(k)}</th><td><code>{e(v)}</code></td></tr>"
        if k == "Arguments"
        else f"<tr><th align='left'>{e(k)}</th><td>{e(v)}</td></tr>"
        for k, v in rows
    )
    body = (
        "<!doctype html><html><body>"
        f"<p>The agent <strong>{e(agent)}</strong> asks to run <strong>{e(tool)}</strong>."
        f"</p><table>{table}</table>"
        f'<p><a href="{e(notice.link, quote=True)}">Review it in the Bastion console</a>'
        " to approve or deny. This email decides nothing by itself.</p>"
        "</body></html>"
    )
    return subject[:200], "\n".join(lines), body


def _mrkdwn(value: str) -> str:
    """Slack's escaping for text it formats: &, < and > (links, mentions)."""
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_message(notice: Notice, channel: str) -> dict[str, Any]:
    """A `chat.postMessage` body: Block Kit with Approve / Deny buttons (their value is
    the approval's id) and a button opening the console page."""
    agent, tool = _one_line(notice.agent, 80), _one_line(notice.tool, 80)
    fallback = f"Approval needed: {agent} wants to run {tool} ({notice.risk})"

    def field(label: str, value: str) -> dict[str, str]:
        return {"type": "mrkdwn", "text": f"*{label}*\n{_mrkdwn(value)}"}

    def button(text: str, action_id: str, style: str) -> dict[str, Any]:
        return {
            "type": "button",
            "action_id": action_id,
            "text": {"type": "plain_text", "text": text},
            "style": style,
            "value": notice.approval_id,
        }

    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": fallback[:150]}},
        {
            "type": "section",
            "fields": [
                field("Agent", agent),
                field("Tool", tool),
                field("Risk", notice.risk),
                field("For", _one_line(notice.requested_for)),
                field("Decide before", notice.deadline),
            ],
        },
        {
            "type": "section",
            "text": {"type": "plain_text", "text": f"Arguments: {notice.arguments}"},
        },
        {
            "type": "actions",
            "block_id": f"approval:{notice.approval_id}",
            "elements": [
                button("Approve", APPROVE, "primary"),
                button("Deny", DENY, "danger"),
                {
                    "type": "button",
                    "action_id": "approval.open",
                    "text": {"type": "plain_text", "text": "Open in Bastion"},
                    "url": notice.link,
                },
            ],
        },
    ]
    return {"channel": channel, "text": fallback, "blocks": blocks, "unfurl_links": False}

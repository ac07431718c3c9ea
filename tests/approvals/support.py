"""Approvals where people are, with real parts: an SMTP server (aiosmtpd), a local HTTP
server answering like Slack's Web API (`chat.postMessage`), and Slack-shaped signed
interaction requests."""

from __future__ import annotations

import email
import email.policy
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from aiosmtpd.controller import Controller
from fastapi.testclient import TestClient

from bastion.api.app import approval_channels, create_app
from bastion.api.state import AppState
from bastion.approvals.notify import deliver
from bastion.core.crypto import hmac_sha256_hex
from tests.agents.test_gate import World
from tests.conftest import make_settings
from tests.factories import Factory, Member, bearer
from tests.receivers import HttpReceiver, _LocalHttpServer, free_port

PUBLIC_URL = "https://bastion.example.test"
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
BOT_TOKEN = "xoxb-17653672481-19874698323-pdFZKVeTuE8sk7oOcBrzbqgy"


class Mailbox:
    """What the SMTP server received: (recipients, message) pairs."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], EmailMessage]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's hook name
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append((list(envelope.rcpt_tos), parsed))
        return "250 OK"


@dataclass
class SlackCall:
    path: str
    authorization: str
    body: dict[str, Any]


class SlackApi(_LocalHttpServer):
    """Slack's Web API as a bot sees it: `POST /api/chat.postMessage` with a bearer bot
    token and a JSON body; 200 `{"ok": true, "channel", "ts"}`, or `{"ok": false,
    "error": "invalid_auth"}` for another token (Slack answers 200 either way)."""

    def __init__(self, token: str = BOT_TOKEN) -> None:
        self.calls: list[SlackCall] = []
        self.error: str | None = None  # answer every call with this error (`ok` false)
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                auth = self.headers.get("Authorization", "")
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {}
                api.calls.append(SlackCall(self.path, auth, body))
                if self.path != "/api/chat.postMessage":
                    answer: dict[str, Any] = {"ok": False, "error": "unknown_method"}
                elif auth != f"Bearer {token}":
                    answer = {"ok": False, "error": "invalid_auth"}
                elif api.error is not None:
                    answer = {"ok": False, "error": api.error}
                else:
                    answer = {"ok": True, "channel": body.get("channel"), "ts": "1.000200"}
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._serve(Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"


@dataclass
class Env:
    client: TestClient
    state: AppState
    mailbox: Mailbox
    slack: SlackApi
    hooks: HttpReceiver  # where Slack's `response_url`s point
    factory: Factory = field(init=False)

    def __post_init__(self) -> None:
        self.factory = Factory(self.state, self.client)

    def deliver(self) -> int:
        """One notifier round, as the background worker runs it."""
        return deliver.deliver_due(self.state.write_sessions, approval_channels(self.state))


@pytest.fixture(scope="module")
def mailbox_port() -> Iterator[tuple[Mailbox, int]]:
    box, port = Mailbox(), free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    yield box, port
    controller.stop()


@pytest.fixture
def env(
    data_dir: Path, module_database_url: str, mailbox_port: tuple[Mailbox, int]
) -> Iterator[Env]:
    box, port = mailbox_port
    box.messages.clear()
    slack, hooks = SlackApi(), HttpReceiver()
    settings = make_settings(
        data_dir,
        # A notifier round serves every organisation's due notices: other modules'
        # backlogs in the shared database must not decide what a round reaches.
        module_database_url,
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_starttls=False,  # plain SMTP: 127.0.0.0/8 is in the plaintext allowance
        public_url=PUBLIC_URL,
        slack_api_url=slack.url,
        slack_response_url_prefix=hooks.url("/actions/"),
        # The test runs each notifier round itself.
        approval_notify_interval=60,
        approval_sweep_interval=60,
    )
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Env(client, app.state.bastion, box, slack, hooks)
    slack.stop()
    hooks.stop()


def new_team() -> str:
    """A Slack workspace id of this test's own (one organisation per workspace)."""
    return "T" + uuid.uuid4().hex[:10].upper()


def patch_slack(w: World, headers: dict[str, str] | None = None, **fields: Any) -> Any:
    body = {"signing_secret": SIGNING_SECRET, "bot_token": BOT_TOKEN, **fields}
    return w.client.patch(
        f"/v1/orgs/{w.org.id}", json={"slack": body}, headers=headers or w.org.admin.headers
    )


def configure_slack(w: World) -> str:
    """Connect a new Slack workspace to the organisation; its team id."""
    team = new_team()
    response = patch_slack(w, team_id=team)
    assert response.status_code == 200, response.text
    return team


def link(w: World, who: Member, slack_user: str) -> None:
    response = w.client.patch("/v1/me", json={"slack_user_id": slack_user}, headers=who.headers)
    assert response.status_code == 200, response.text


def payload(
    approval_id: str,
    slack_user: str,
    team: str,
    action: str = "approve",
    response_url: str = "https://hooks.slack.com/actions/T0/1/abcdef",
) -> dict[str, Any]:
    """A `block_actions` payload as Slack sends it when a button is clicked."""
    return {
        "type": "block_actions",
        "team": {"id": team, "domain": "acme"},
        "user": {"id": slack_user, "username": "approver", "team_id": team},
        "api_app_id": "A0BASTION",
        "token": "verification-token-deprecated",
        "trigger_id": "12466734323.1395872398",
        "container": {"type": "message", "message_ts": "1.000200", "channel_id": "D0APPROVER"},
        "channel": {"id": "D0APPROVER", "name": "directmessage"},
        "response_url": response_url,
        "actions": [
            {
                "type": "button",
                "block_id": f"approval:{approval_id}",
                "action_id": f"approval.{action}",
                "value": approval_id,
                "text": {"type": "plain_text", "text": action.title()},
                "action_ts": "1.000300",
            }
        ],
    }


def signed(
    body: dict[str, Any], secret: str = SIGNING_SECRET, timestamp: int | None = None
) -> tuple[bytes, dict[str, str]]:
    """The form Slack posts and its headers, signed as Slack signs."""
    raw = urlencode({"payload": json.dumps(body)}).encode()
    ts = str(int(time.time()) if timestamp is None else timestamp)
    signature = "v0=" + hmac_sha256_hex(secret.encode(), f"v0:{ts}:".encode() + raw)
    return raw, {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": signature,
    }


def click(client: TestClient, body: dict[str, Any], **sign: Any) -> Any:
    raw, headers = signed(body, **sign)
    return client.post("/v1/integrations/slack/interactions", content=raw, headers=headers)


def in_background(fn: Any) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    thread.start()
    return thread, out


__all__ = ["bearer"]

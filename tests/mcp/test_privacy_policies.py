"""Data policies through the MCP gateway, against a real `bastion serve` and a real
upstream MCP server: arguments that a policy denies never reach the upstream; results
are redacted (or withheld) before the agent sees them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.server import Server
from tests.factories import Factory
from tests.mcp.conftest import UPSTREAM_TOKEN, World
from tests.mcp.upstream import Upstream

pytestmark = pytest.mark.e2e

EMAIL = "sentinel.upstream@example.com"
SSN = "536-22-8726"


class _PersonalUpstream(Upstream):
    """The test upstream with a tool whose result names a person."""

    def _install(self) -> None:
        super()._install()
        calls = self.calls

        def whois(who: str) -> str:
            calls.append(("whois", {"who": who}))
            return f"{who}: mail {EMAIL}, ssn {SSN}" if who == "ssn" else f"{who}: mail {EMAIL}"

        self.server.add_tool(whois, name="whois", description="Look a person up.")


@pytest.fixture(scope="module")
def personal() -> Iterator[Upstream]:
    with _PersonalUpstream(token=UPSTREAM_TOKEN) as up:
        yield up


def _text(result: Any) -> str:
    return " ".join(getattr(c, "text", "") for c in result.content)


def test_results_are_redacted_or_withheld_and_arguments_denied(
    server: Server, personal: Upstream, factory: Factory
) -> None:
    world = World(server.url, factory, personal.url)
    assert _text(world.call("calc.whois", {"who": "anna"})) == f"anna: mail {EMAIL}"
    world.post(
        "privacy/policies",
        {"name": "mails", "applies_to": "tool_results", "types": ["EMAIL"], "action": "redact"},
    )
    ssn = world.post(
        "privacy/policies",
        {"name": "ssn", "applies_to": "tool_results", "types": ["US_SSN"], "action": "deny"},
    )
    result = world.call("calc.whois", {"who": "anna"})
    assert not result.is_error
    assert _text(result) == "anna: mail <EMAIL>"
    withheld = world.call("calc.whois", {"who": "ssn"})
    assert withheld.is_error
    assert f"privacy_policy:{ssn['id']}" in _text(withheld)
    assert SSN not in _text(withheld)
    assert EMAIL not in _text(withheld)
    denied = world.post(
        "privacy/policies",
        {"name": "no mail out", "applies_to": "tool_arguments", "types": ["EMAIL"],
         "action": "deny"},
    )  # fmt: skip
    before = len(personal.calls)
    refused = world.call("calc.whois", {"who": f"someone {EMAIL}"})
    assert refused.is_error
    assert f"privacy_policy:{denied['id']}" in _text(refused)
    assert personal.calls[before:] == []  # never reached the upstream
    decided = world.events("tool_call.decided")
    assert EMAIL not in str(decided)

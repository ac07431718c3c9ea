"""examples/mcp_integration_agent.py end to end: a real `bastion serve` (the suite's
database), an OAuth integration connected through the real `oidc-provider`, an admin
API key; the example starts its upstream MCP server, registers it with the integration
as its credential, and its agent uses the integration's token and the gateway's tools.
Run twice: the second run finds the MCP server the first one registered."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.e2e.server import Server
from tests.factories import Factory
from tests.integrations.conftest import connect
from tests.integrations.peers import OAuthServer

pytestmark = pytest.mark.e2e

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "mcp_integration_agent.py"


@pytest.fixture(scope="module")
def oauth() -> Iterator[OAuthServer]:
    server = OAuthServer()
    yield server
    server.stop()


def test_the_example_agent_uses_the_integration_and_the_gateway(
    server: Server, factory: Factory, client: TestClient, oauth: OAuthServer
) -> None:
    org = factory.org()
    integration = connect(client, org, oauth)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("BASTION_")},
        "BASTION_URL": server.url,
        "BASTION_API_KEY": org.admin_key,
    }
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, str(EXAMPLE), "--integration", integration["name"]],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=180,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "notes.whoami -> " in done.stdout
        assert done.stdout.rstrip().endswith("OK")

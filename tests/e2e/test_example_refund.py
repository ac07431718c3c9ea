"""The examples end to end: a real `bastion serve` (sharing the suite's database, SQLite
or PostgreSQL), an organisation and admin key made with the CLI as the README says, then
`examples/refund_agent.py` run twice (its setup is idempotent) and
`examples/rag_prefilter.py` (its pre-filtered answers must agree with the engine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.server import BIN, Server, server_env

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXAMPLE = EXAMPLES / "refund_agent.py"


@pytest.fixture(scope="module")
def env(data_dir: Path, database_url: str) -> dict[str, str]:
    # Cheap password hashing (as in the rest of the suite): the example signs people in.
    extra = {"BASTION_ARGON2_TIME_COST": "1", "BASTION_ARGON2_MEMORY_KIB": "8"}
    extra["BASTION_ARGON2_PARALLELISM"] = "1"
    if os.environ.get("BASTION_TEST_REDIS_URL"):
        extra["BASTION_REDIS_URL"] = os.environ["BASTION_TEST_REDIS_URL"]
    return server_env(data_dir, database_url, **extra)


@pytest.fixture(scope="module")
def server(env: dict[str, str]) -> Iterator[Server]:
    with Server(env, workers=2) as running:
        yield running


def _cli(env: dict[str, str], *args: str, stdin: str = "") -> dict[str, str]:
    done = subprocess.run(
        [str(BIN / "bastion"), *args, "--json"],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def test_the_refund_example_tells_the_expected_story(env: dict[str, str], server: Server) -> None:
    org = _cli(
        env,
        "org",
        "create",
        "Example Shop",
        "--admin-email",
        f"admin-{uuid.uuid4().hex[:10]}@example.com",
        "--admin-password-stdin",
        stdin="a-long-admin-password\n",
    )["org_id"]
    key = _cli(env, "apikey", "create", "--org", org, "--name", "examples", "--role", "admin")
    run_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("BASTION_")},
        "BASTION_URL": server.url,
        "BASTION_API_KEY": key["key"],
    }
    agents = set()
    for _ in range(2):  # the second run reuses what the first one set up
        done = subprocess.run(
            [sys.executable, str(EXAMPLE)],
            env=run_env,
            capture_output=True,
            text=True,
            check=False,
            timeout=180,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        out = done.stdout
        assert "story as expected" in out
        assert "refunded 40 on A-1001" in out
        assert "manager 2 │ approves 250 on A-1002 → approved" in out
        assert "refunded 250 on A-1002" in out
        assert "manager 1 │ denies 500 on A-1003 → denied" in out
        assert "ActionDenied: deny (approval_denied)" in out
        assert "refunded 500" not in out
        assert key["key"] not in out + done.stderr
        agents.add(out.split("support-bot (", 1)[1].split(")", 1)[0])
    assert len(agents) == 1


def test_the_rag_example_agrees_with_the_engine(env: dict[str, str], server: Server) -> None:
    org = _cli(
        env,
        "org",
        "create",
        "Example Docs",
        "--admin-email",
        f"admin-{uuid.uuid4().hex[:10]}@example.com",
        "--admin-password-stdin",
        stdin="a-long-admin-password\n",
    )["org_id"]
    key = _cli(env, "apikey", "create", "--org", org, "--name", "rag", "--role", "admin")
    run_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("BASTION_")},
        "BASTION_URL": server.url,
        "BASTION_API_KEY": key["key"],
    }
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "rag_prefilter.py")],
        env=run_env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "all answers agree" in out
    lines = {line.split("│")[0].strip(): line for line in out.splitlines() if "│" in line}
    # Bob reads the finance drive (not the restricted forecast) and the wiki, including
    # the payroll run book whose own ACL names finance; Ann only the wiki's open pages;
    # the wiki bot acting for Bob only what both may read: the wiki's, not the drive's.
    assert "Expense policy" in lines["bob"]
    assert "Q3 forecast" not in lines["bob"]
    assert "Payroll run book" in lines["bob"]
    assert "Payroll run book" not in lines["ann"]
    assert "Onboarding guide" in lines["ann"]
    assert "Expense policy" not in lines["wiki-bot for bob"]
    assert "Payroll run book" in lines["wiki-bot for bob"]

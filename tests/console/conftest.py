"""Fixtures of the console's tests: a real server on http://localhost:PORT, a browser
(skipped outside CI when Chromium or Playwright is missing; see `browser.py`), and a
watched page per test."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bastion.api.app import create_app
from bastion.core.keyring import AUDIT_SIGNING_KEY_FILE, PEPPER_FILE, ROOT_KEY_FILE, create_keyring
from bastion.migrations.runner import upgrade
from tests.conftest import _postgres_database, make_settings
from tests.console.browser import ConsoleServer, Watched, axe_source, launch
from tests.factories import Factory
from tests.receivers import free_port
from tests.sso.peers import DnsServer


@pytest.fixture(scope="session")
def console_dns() -> Iterator[DnsServer]:
    """The DNS server the console's Bastion asks (domain verification for SSO)."""
    server = DnsServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def console_server(console_dns: DnsServer) -> Iterator[ConsoleServer]:
    """A Bastion of the console tests' own (its public URL names its port)."""
    data = Path(tempfile.mkdtemp(prefix="bastion-console-"))
    for name in (PEPPER_FILE, ROOT_KEY_FILE, AUDIT_SIGNING_KEY_FILE):
        create_keyring(data / name)
    base = os.environ.get("BASTION_TEST_DATABASE_URL")
    url = _postgres_database(base)[0] if base else f"sqlite:///{data / 'bastion.db'}"
    upgrade(url)
    port = free_port()
    settings = make_settings(
        data, url, public_url=f"http://localhost:{port}", dns_resolver=console_dns.address
    )
    server = ConsoleServer(create_app(settings), port).start()
    yield server
    server.stop()


@pytest.fixture
def console_factory(console_server: ConsoleServer) -> Factory:
    client = TestClient(console_server.app, raise_server_exceptions=False)
    return Factory(console_server.app.state.bastion, client)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Per module: Playwright's sync API keeps an event loop running in this thread while
    it lives, which `asyncio.run` in the next test files of this worker must not meet."""
    from tests.console.browser import chromium

    chromium()  # skips (or installs under CI) before Playwright is imported
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch(playwright)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def axe() -> str:
    return axe_source()


@pytest.fixture
def watched(browser: Any, console_server: ConsoleServer) -> Iterator[Watched]:
    context = browser.new_context(base_url=console_server.url)
    page = context.new_page()
    yield Watched(page, console_server.url).attach()
    context.close()

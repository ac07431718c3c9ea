"""The real OAuth server of the integration tests: the npm package `oidc-provider`
(installed into ~/.cache/bastion-tests/oidc-provider by `tests.sso.peers`, outside the
repository) run by Node with tests/integrations/oauth_server.mjs."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from tests.receivers import free_port
from tests.sso.peers import install_provider

SCRIPT = Path(__file__).with_name("oauth_server.mjs")
PUBLIC_URL = "http://localhost:8400"  # the test app's BASTION_PUBLIC_URL (the default)
REDIRECT_URI = PUBLIC_URL + "/v1/integrations/oauth/callback"
CLIENT = {"client_id": "bastion-int", "client_secret": "int-secret-0123456789abcdef0123456789"}
ACCESS_TTL = 600  # > the refresh-ahead window (300 s): a fresh token is not due


def _install() -> Path:
    cache = install_provider()
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        script = cache / SCRIPT.name
        if not script.exists() or script.read_text() != SCRIPT.read_text():
            script.write_text(SCRIPT.read_text())
    return cache


class OAuthServer:
    def __init__(self) -> None:
        cache = _install()
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        clients = [
            {
                **CLIENT,
                "redirect_uris": [REDIRECT_URI],
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
                "token_endpoint_auth_method": "client_secret_basic",
            }
        ]
        env = {
            **os.environ,
            "PORT": str(self.port),
            "OAUTH_CLIENTS": json.dumps(clients),
            "ACCESS_TTL": str(ACCESS_TTL),
        }
        self.log = tempfile.NamedTemporaryFile(prefix="oauth-server-", suffix=".log")  # noqa: SIM115
        self.process = subprocess.Popen(
            ["node", str(cache / SCRIPT.name)],
            cwd=cache,
            env=env,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith("ready"):
            self.process.kill()
            self.log.seek(0)
            err = self.log.read().decode(errors="replace")
            raise RuntimeError(f"oidc-provider did not start: {line} {err[-2000:]}")

    @property
    def endpoints(self) -> dict[str, str]:
        return {
            "authorize_url": f"{self.issuer}/auth",
            "token_url": f"{self.issuer}/token",
            "revoke_url": f"{self.issuer}/token/revocation",
        }

    def authorize(self, authorize_url: str, account: str) -> str:
        """Drive the provider headless like a browser: sign in as `account`, consent, and
        return where it finally sends the browser (Bastion's callback URL)."""
        with httpx.Client(follow_redirects=False, timeout=10) as browser:
            url = authorize_url
            for _ in range(10):
                if url.startswith(PUBLIC_URL):
                    return url
                if urlsplit(url).path.startswith("/interaction/"):
                    details = browser.get(url)
                    assert details.status_code == 200, details.text
                    response = browser.post(f"{url}/login", json={"account": account})
                else:
                    response = browser.get(url)
                assert response.status_code in (302, 303), (response.status_code, response.text)
                url = str(httpx.URL(url).join(response.headers["location"]))
        raise AssertionError("the provider never sent the browser back")

    def introspect(self, token: str) -> dict[str, Any]:
        response = httpx.post(
            f"{self.issuer}/token/introspection",
            data={"token": token},
            auth=(CLIENT["client_id"], CLIENT["client_secret"]),
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    def revoke(self, token: str) -> None:
        response = httpx.post(
            f"{self.issuer}/token/revocation",
            data={"token": token},
            auth=(CLIENT["client_id"], CLIENT["client_secret"]),
        )
        assert response.status_code == 200, response.text

    def stats(self) -> dict[str, int]:
        return dict(httpx.get(f"{self.issuer}/__stats").json())

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()

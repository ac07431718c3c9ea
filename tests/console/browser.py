"""The console in a real browser: Debian's Chromium driven by Playwright (Python).

- `chromium()`: /usr/bin/chromium, installed with apt-get under CI=true when missing
  (as root); outside CI the browser tests skip, saying how to enable them.
- `ConsoleServer`: a real Bastion (uvicorn in a thread, the app's lifespan running) at
  http://localhost:PORT, which is also its BASTION_PUBLIC_URL: WebAuthn needs a secure
  context and a domain for its RP ID, and http://localhost is both.
- `Watched`: a page whose console errors, uncaught errors, CSP violations and requests
  to any other origin are recorded (requests elsewhere are aborted); `clean()` asserts
  there were none.
- `axe()`: axe-core (npm, installed into ~/.cache/bastion-tests/axe-core) run on a page;
  its serious and critical violations.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from tests.factories import PASSWORD

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # The server listens on 127.0.0.1; "localhost" must not try ::1 first.
    "--host-resolver-rules=MAP localhost 127.0.0.1",
]
AXE_VERSION = "4.10.3"
AXE_CACHE = Path.home() / ".cache" / "bastion-tests" / "axe-core"
HOW_TO_ENABLE = (
    "the console's browser tests need Debian's Chromium (`apt-get install -y chromium`, as"
    " root), Python's playwright (`pip install -e '.[test]'`) and npm (for axe-core); or run"
    " them with CI=true, which installs Chromium"
)


def _unavailable(what: str) -> None:
    message = f"{what}: {HOW_TO_ENABLE}"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def chromium() -> Path:
    """Debian's Chromium; under CI=true (as root) installed when missing (scripts/services.sh
    does it first; a lock keeps parallel test workers from running apt at once)."""
    if not CHROMIUM.exists() and os.environ.get("CI") == "true" and os.geteuid() == 0:
        AXE_CACHE.parent.mkdir(parents=True, exist_ok=True)
        with open(AXE_CACHE.parent / ".chromium.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not CHROMIUM.exists():
                env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
                subprocess.run(["apt-get", "update", "-qq"], check=False, env=env, timeout=600)
                subprocess.run(
                    ["apt-get", "install", "-y", "-qq", "chromium"],
                    check=False, env=env, timeout=1200,
                )  # fmt: skip
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} not found")
    try:
        import playwright  # noqa: F401
    except ImportError:
        _unavailable("playwright is not installed")
    return CHROMIUM


def axe_source() -> str:
    """axe-core's browser bundle (installed once; a lock keeps parallel workers apart)."""
    if shutil.which("npm") is None:
        _unavailable("npm not found")
    AXE_CACHE.mkdir(parents=True, exist_ok=True)
    with open(AXE_CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        bundle = AXE_CACHE / "node_modules" / "axe-core" / "axe.min.js"
        marker = bundle.with_name("package.json")
        if not marker.exists() or f'"version": "{AXE_VERSION}"' not in marker.read_text():
            (AXE_CACHE / "package.json").write_text(
                '{"name": "bastion-test-axe", "private": true}\n'
            )
            subprocess.run(
                ["npm", "install", "--no-audit", "--no-fund", f"axe-core@{AXE_VERSION}"],
                cwd=AXE_CACHE,
                check=True,
                capture_output=True,
                timeout=600,
            )
        return bundle.read_text()


class ConsoleServer:
    """Bastion served by uvicorn in a thread of the test process, so a test can also
    prepare data through the app's own state."""

    def __init__(self, app: Any, port: int) -> None:
        self.app = app
        self.port = port
        self.url = f"http://localhost:{port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="console-server", daemon=True)

    def start(self) -> ConsoleServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the console server did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


@dataclass
class Watched:
    """A page and what it did that a clean console never does."""

    page: Any
    origin: str
    errors: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)
    # Console messages a test expects (the browser logs a page's 4xx status, e.g.).
    allowed: list[str] = field(default_factory=list)

    def attach(self) -> Watched:
        page = self.page
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        page.on("dialog", lambda dialog: dialog.accept())
        # CDP-injected (not subject to the page's CSP): report violations as errors.
        page.add_init_script(
            "document.addEventListener('securitypolicyviolation', e => console.error("
            "'CSP violation: ' + e.violatedDirective + ' ' + e.blockedURI));"
        )
        # Every request is seen (redirect hops too, which routes never see); the first
        # hop of one to another origin is also aborted.
        page.context.on("request", self._request)
        page.context.route("**/*", self._route)
        return self

    def _console(self, message: Any) -> None:
        if message.type in ("error", "warning") or "Content Security Policy" in message.text:
            text = f"console {message.type}: {message.text}"
            if not any(a in message.text for a in self.allowed):
                self.errors.append(text)

    def _inside(self, url: str) -> bool:
        return url.startswith((self.origin + "/", "data:", "blob:")) or url == self.origin

    def _request(self, request: Any) -> None:
        if not self._inside(request.url):
            self.outside.append(request.url)

    def _route(self, route: Any) -> None:
        if self._inside(route.request.url):
            route.continue_()
        else:
            route.abort()

    def clean(self) -> None:
        assert self.errors == [], self.errors
        assert self.outside == [], self.outside

    def axe(self, source: str) -> list[dict[str, Any]]:
        """Serious and critical axe-core violations of the page as it is now."""
        self.page.evaluate(source)  # by CDP: the page's CSP does not apply
        result = self.page.evaluate(
            "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
            ".map(v => ({id: v.id, impact: v.impact, help: v.help,"
            " nodes: v.nodes.map(n => n.target.join(' '))}))"
        )
        return [v for v in result if v["impact"] in ("serious", "critical")]


def launch(playwright: Any) -> Any:
    return playwright.chromium.launch(
        executable_path=str(chromium()), args=CHROMIUM_ARGS, headless=True
    )


def virtual_authenticator(page: Any) -> tuple[Any, str]:
    """Chromium's virtual authenticator (CDP WebAuthn domain) on this page: CTAP2,
    internal (platform), resident keys, user verification. (session, authenticator id)"""
    cdp = page.context.new_cdp_session(page)
    cdp.send("WebAuthn.enable", {"enableUI": False})
    added = cdp.send(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": True,
                "hasUserVerification": True,
                "isUserVerified": True,
                "automaticPresenceSimulation": True,
            }
        },
    )
    return cdp, str(added["authenticatorId"])


def wait_for_path(page: Any, path: str, timeout: float = 15_000) -> None:
    page.wait_for_url(lambda url: url.split("?")[0].endswith(path), timeout=timeout)


def sign_in(
    watched: Watched, email: str, password: str = PASSWORD, start: str = "/console/"
) -> None:
    """Sign in through the sign-in form (the password step only), starting at `start`."""
    page = watched.page
    page.goto(start)
    wait_for_path(page, "/console/sign-in")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in", exact=True).click()


# Screenshots for docs/console.md: written there only when asked, so that a test run
# leaves the working tree as it found it (the pages show random test data).
DOCS_SHOTS = Path(__file__).resolve().parents[2] / "docs" / "console"


def screenshot(page: Any, name: str, tmp: Path) -> Path:
    """Take a full-page screenshot: into docs/console/ with
    `BASTION_CONSOLE_SCREENSHOTS=1` (`make screenshots`), else under `tmp`."""
    folder = DOCS_SHOTS if os.environ.get("BASTION_CONSOLE_SCREENSHOTS") == "1" else tmp
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path

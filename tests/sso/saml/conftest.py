"""A real SAML identity provider for the SAML tests: samlify (npm), an implementation
independent of ours, driven through `idp.js` beside this file.

The npm packages are installed once into `~/.cache/bastion-tests/saml-idp/` (outside the
repository). Without Node.js and npm the tests that need the IdP are skipped with a
message, except under `CI=true`, where that is a failure.
"""

from __future__ import annotations

import fcntl
import json
import os
import queue
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bastion.sso.saml import IdpInfo, SamlSettings, SpCredentials, new_sp_credentials, sp_metadata

PACKAGES = ("samlify@2.13.1", "@authenio/samlify-node-xmllint@2.0.0")
CACHE = Path(os.environ.get("BASTION_TEST_CACHE", Path.home() / ".cache" / "bastion-tests"))
SCRIPT = Path(__file__).with_name("idp.js")
IDP_ENTITY_ID = "https://idp.example.test/saml/metadata"
IDP_SSO_URL = "https://idp.example.test/saml/sso"
SP_BASE = "https://bastion.example.test/v1/auth/sso/ssoc_test/saml"
TIMEOUT = 60.0
MARK = "@@idp "  # what idp.js prefixes its answers with


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"SAML IdP peer unavailable under CI=true: {reason}")
    pytest.skip(f"SAML IdP peer (samlify) unavailable: {reason}; install Node.js 20 and npm")


def _install() -> Path:
    """The node_modules folder holding samlify, installed on first use."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        _unavailable("node or npm is not on PATH")
        raise AssertionError("unreachable")  # _unavailable skips or fails
    home = CACHE / "saml-idp"
    stamp = home / f".installed-{'-'.join(p.replace('/', '_') for p in PACKAGES)}"
    home.mkdir(parents=True, exist_ok=True)
    # xdist workers (and parallel runs) install once: the others wait on the lock.
    with (home / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not stamp.exists():
            _npm_install(npm, home)
            stamp.touch()
    return home / "node_modules"


def _npm_install(npm: str, home: Path) -> None:
    if not (home / "package.json").exists():
        (home / "package.json").write_text('{"name": "bastion-saml-idp", "private": true}\n')
    done = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--no-save", *PACKAGES],
        cwd=home,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        _unavailable(f"npm install failed: {done.stderr.strip()[-500:]}")


class SamlIdpProcess:
    """The running idp.js: one JSON request per line in, one answer per line out."""

    def __init__(self, node_modules: Path) -> None:
        env = {**os.environ, "NODE_PATH": str(node_modules)}
        self._proc = subprocess.Popen(
            [shutil.which("node") or "node", str(SCRIPT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self._answers: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self._lock = threading.Lock()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            if line.startswith(MARK):  # anything else is a library printing
                self._answers.put(line[len(MARK) :])

    def call(self, **request: Any) -> dict[str, Any]:
        assert self._proc.stdin is not None
        with self._lock:
            self._proc.stdin.write(json.dumps(request) + "\n")
            self._proc.stdin.flush()
            try:
                line = self._answers.get(timeout=TIMEOUT)
            except queue.Empty:
                raise AssertionError("the SAML IdP did not answer") from None
        answer: dict[str, Any] = json.loads(line)
        return answer

    def stop(self) -> None:
        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()


@pytest.fixture(scope="session")
def idp_process() -> Iterator[SamlIdpProcess]:
    process = SamlIdpProcess(_install())
    yield process
    process.stop()


@dataclass(frozen=True)
class IdpKeys:
    primary: SpCredentials  # the IdP's signing key (reusing our generator: RSA + cert)
    secondary: SpCredentials  # the next key, during a rollover
    rogue: SpCredentials  # a key the connection does not trust


@pytest.fixture(scope="session")
def idp_keys() -> IdpKeys:
    return IdpKeys(
        primary=new_sp_credentials("idp primary"),
        secondary=new_sp_credentials("idp secondary"),
        rogue=new_sp_credentials("rogue idp"),
    )


@pytest.fixture(scope="session")
def sp_credentials() -> SpCredentials:
    return new_sp_credentials("bastion test sp")


def make_settings(
    sp: SpCredentials, certificates: tuple[str, ...], **overrides: Any
) -> SamlSettings:
    values: dict[str, Any] = {
        "sp_entity_id": f"{SP_BASE}/metadata",
        "acs_url": f"{SP_BASE}/acs",
        "sp": sp,
        "idp": IdpInfo(entity_id=IDP_ENTITY_ID, sso_url=IDP_SSO_URL, certificates=certificates),
    }
    values.update(overrides)
    return SamlSettings(**values)


@pytest.fixture
def settings(sp_credentials: SpCredentials, idp_keys: IdpKeys) -> SamlSettings:
    return make_settings(sp_credentials, (idp_keys.primary.cert_pem,))


class Idp:
    """The IdP as the tests use it: signs with `key` (primary by default), publishes
    `certs`, answers OUR AuthnRequest URL or sends unsolicited responses."""

    def __init__(self, process: SamlIdpProcess, keys: IdpKeys) -> None:
        self._process = process
        self.keys = keys

    def description(
        self, key: SpCredentials | None = None, certs: tuple[SpCredentials, ...] | None = None
    ) -> dict[str, Any]:
        key = key or self.keys.primary
        return {
            "entity_id": IDP_ENTITY_ID,
            "sso_url": IDP_SSO_URL,
            "key_pem": key.key_pem,
            "cert_pems": [c.cert_pem for c in (certs or (key,))],
        }

    def metadata(self, certs: tuple[SpCredentials, ...]) -> str:
        answer = self._process.call(op="metadata", idp=self.description(certs[0], certs))
        assert answer["ok"], answer
        return str(answer["metadata"])

    def login(
        self,
        settings: SamlSettings | None,
        request_url: str | None,
        *,
        sp_metadata_xml: str | None = None,
        email: str = "ada@example.com",
        attributes: dict[str, list[str]] | None = None,
        sign: str = "assertion",
        key: SpCredentials | None = None,
        signature_algorithm: str | None = None,
        **overrides: Any,
    ) -> dict[str, Any]:
        description = self.description(key)
        if signature_algorithm:
            description["signature_algorithm"] = signature_algorithm
        if sp_metadata_xml is None:
            assert settings is not None, "give the SP's settings or its metadata"
            sp_metadata_xml = sp_metadata(settings)
        answer = self._process.call(
            op="login",
            idp=description,
            sp_metadata=sp_metadata_xml,
            request_url=request_url,
            user={
                "email": email,
                "attributes": {"groups": ["eng", "admins"]} if attributes is None else attributes,
            },
            sign=sign,
            overrides=overrides,
        )
        assert answer["ok"], answer
        return answer


@pytest.fixture
def idp(idp_process: SamlIdpProcess, idp_keys: IdpKeys) -> Idp:
    return Idp(idp_process, idp_keys)

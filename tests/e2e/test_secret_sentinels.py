"""Secrets never leak: a real server on its own data directory is driven through every
flow that handles a password, API key, session token, setup token, TOTP secret,
recovery code, mfa token or the pepper; then
each secret is searched for in the server's output, every response that is not the one
meant to carry it, the audit trail, and every byte of the database (incl. its WAL)."""

# ruff: noqa: E501 - the scripted flow reads best one call per line
from __future__ import annotations

import base64
import json
import subprocess
import uuid
from pathlib import Path

import httpx
import pyotp
import pytest

from bastion.core.config import Settings
from bastion.core.keyring import PEPPER_FILE, read_keyring
from tests.e2e.server import BIN, Server, server_env

pytestmark = pytest.mark.e2e

SENTINEL = "Sntnl"  # every chosen secret starts with this, so one search finds them all


def _cli(env: dict[str, str], *args: str, stdin: str = "") -> dict[str, str]:
    done = subprocess.run(
        [str(BIN / "bastion"), *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) if "--json" in args else {}


def _forms(secret: str) -> list[bytes]:
    raw = secret.encode()
    return [raw, base64.b64encode(raw), raw.hex().encode()]


def test_no_secret_appears_anywhere(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = server_env(data_dir, None, BASTION_LOG_LEVEL="debug")
    _cli(env, "init")
    admin_password = f"{SENTINEL}-admin-{uuid.uuid4().hex}"
    admin_email = f"admin-{uuid.uuid4().hex[:8]}@example.com"
    org = _cli(
        env,
        "org",
        "create",
        "Leak",
        "--admin-email",
        admin_email,
        "--admin-password-stdin",
        "--json",
        stdin=admin_password + "\n",
    )
    secrets: list[str] = [admin_password]
    carriers: set[int] = set()  # indexes of responses that legitimately carry a secret
    responses: list[httpx.Response] = []
    log = tmp_path / "server.log"

    with log.open("wb") as out:
        server = Server(env, workers=1)
        server.start()
        assert server.process is not None
        try:
            with httpx.Client(base_url=server.url, timeout=10) as c:

                def call(method: str, path: str, carrier: bool = False, **kw) -> httpx.Response:  # type: ignore[no-untyped-def]
                    response = c.request(method, path, **kw)
                    if carrier:
                        carriers.add(len(responses))
                    responses.append(response)
                    return response

                wrong = f"{SENTINEL}-wrong-{uuid.uuid4().hex}"
                assert call("POST", "/v1/auth/login", json={"email": admin_email, "password": wrong}).status_code == 401  # fmt: skip
                login = call("POST", "/v1/auth/login", True, json={"email": admin_email, "password": admin_password})  # fmt: skip
                session = login.json()["token"]
                secrets.append(session)
                admin = {"Authorization": f"Bearer {session}"}
                key = call("POST", f"/v1/orgs/{org['org_id']}/api-keys", True, json={"name": "k", "role": "admin"}, headers=admin).json()  # fmt: skip
                secrets.append(key["key"])
                by_key = {"Authorization": f"Bearer {key['key']}"}
                # A second factor: its secret, recovery codes, mfa tokens, and the session.
                enrol = call("POST", "/v1/me/mfa/totp", True, headers=admin).json()
                secrets.append(enrol["secret"])
                confirmed = call("POST", f"/v1/me/mfa/totp/{enrol['factor_id']}/confirm", True, json={"code": pyotp.TOTP(enrol["secret"]).now()}, headers=admin).json()  # fmt: skip
                secrets.extend(confirmed["recovery_codes"])
                owed = call("POST", "/v1/auth/login", True, json={"email": admin_email, "password": admin_password}).json()  # fmt: skip
                secrets.append(owed["mfa_token"])
                assert call("POST", "/v1/auth/mfa", json={"mfa_token": owed["mfa_token"], "method": "recovery_code", "code": f"{SENTINEL}-no"}).status_code == 401  # fmt: skip
                mfa = call("POST", "/v1/auth/mfa", True, json={"mfa_token": owed["mfa_token"], "method": "recovery_code", "code": confirmed["recovery_codes"][0]}).json()  # fmt: skip
                secrets.append(mfa["token"])
                assert call("POST", "/v1/auth/step-up", json={"method": "recovery_code", "code": confirmed["recovery_codes"][1]}, headers={"Authorization": f"Bearer {mfa['token']}"}).status_code == 200  # fmt: skip
                assert (
                    call("GET", "/v1/me/mfa", headers=admin).json()["recovery_codes_remaining"] == 8
                )
                assert call("GET", "/v1/me", headers=by_key).status_code == 200
                member_password = f"{SENTINEL}-member-{uuid.uuid4().hex}"
                secrets.append(member_password)
                call("POST", f"/v1/orgs/{org['org_id']}/users", json={"email": f"m-{uuid.uuid4().hex[:6]}@example.com", "name": "M", "role": "member", "password": member_password}, headers=by_key)  # fmt: skip
                invited = call("POST", f"/v1/orgs/{org['org_id']}/users", True, json={"email": f"i-{uuid.uuid4().hex[:6]}@example.com", "name": "I", "role": "viewer"}, headers=by_key).json()  # fmt: skip
                secrets.append(invited["setup_token"])
                invited_password = f"{SENTINEL}-invited-{uuid.uuid4().hex}"
                secrets.append(invited_password)
                assert call("POST", "/v1/auth/setup", json={"token": invited["setup_token"], "password": invited_password}).status_code == 200  # fmt: skip
                rotated = call("POST", f"/v1/orgs/{org['org_id']}/api-keys/{key['id']}/rotate", True, json={"overlap_seconds": 60}, headers=admin).json()  # fmt: skip
                secrets.append(rotated["key"])
                # Forged and malformed credentials, and a too-short password, are refused.
                forged = f"bsk_{key['id']}_{SENTINEL}forged{uuid.uuid4().hex}"
                secrets.append(forged)
                assert call("GET", "/v1/me", headers={"Authorization": f"Bearer {forged}"}).status_code == 401  # fmt: skip
                short = f"{SENTINEL}s"
                assert call("POST", "/v1/auth/setup", json={"token": f"{SENTINEL}-bad-token", "password": short}).status_code in (401, 422)  # fmt: skip
                assert call("POST", "/v1/auth/logout", headers=admin).status_code == 204
                export = call("GET", f"/v1/orgs/{org['org_id']}/audit-events/export?format=jsonl", headers=by_key)  # fmt: skip
                assert export.status_code == 200
                assert export.text.count("\n") >= 8
        finally:
            server.stop()
            out.write(server.process.stderr.read() if server.process.stderr else b"")

    pepper = read_keyring(data_dir / PEPPER_FILE).key()
    needles = [form for s in secrets for form in _forms(s)]
    needles += [pepper, base64.b64encode(pepper), pepper.hex().encode()]

    haystacks: dict[str, bytes] = {"server output": log.read_bytes()}
    for i, response in enumerate(responses):
        if i not in carriers:
            haystacks[f"response {i} {response.request.url.path}"] = response.content
    for path in data_dir.iterdir():
        if path.name.startswith("bastion.db"):  # the database, its WAL and shared memory
            haystacks[path.name] = path.read_bytes()
    assert any(name.endswith("-wal") for name in haystacks)
    for name, haystack in haystacks.items():
        for needle in needles:
            assert needle not in haystack, f"a secret leaked into {name}"
        assert SENTINEL.encode() not in haystack, f"a secret's prefix leaked into {name}"


def test_reprs_hide_secrets(tmp_path: Path) -> None:
    url = f"postgresql://u:{SENTINEL}dbpass@localhost/x"
    pepper = f"{SENTINEL}-{uuid.uuid4().hex}{uuid.uuid4().hex}"
    settings = Settings(data_dir=tmp_path, database_url=url, pepper=pepper)  # type: ignore[arg-type]
    assert SENTINEL not in repr(settings)
    assert SENTINEL not in str(settings.pepper)


def test_state_reprs_hide_keys(app, factory) -> None:  # type: ignore[no-untyped-def]
    org = factory.org()
    state = app.state.bastion
    text = repr(state) + repr(state.hasher) + repr(state.auth_cache) + repr(state.limiter)
    pepper = read_keyring(state.settings.data_dir / PEPPER_FILE).key()
    for needle in (org.admin_key, org.admin.token, base64.b64encode(pepper).decode(), pepper.hex()):
        assert needle not in text

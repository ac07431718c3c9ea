"""The operator's CLI (issue 20): one clear line for every failure, help that reads well,
`--json` everywhere, users and keys from the host, counts that are right, a port in use."""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from bastion.cli.main import app
from bastion.identity import passwords

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "a-long-admin-password"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    data = tmp_path / "data"
    monkeypatch.setenv("BASTION_DATA_DIR", str(data))
    for name in ("BASTION_DATABASE_URL", "BASTION_PEPPER", "BASTION_REDIS_URL", "BASTION_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BASTION_ARGON2_MEMORY_KIB", "8")
    monkeypatch.setenv("BASTION_ARGON2_TIME_COST", "1")
    return data


def _run(args: list[str], stdin: str | None = None, code: int = 0) -> str:
    result = runner.invoke(app, args, input=stdin)
    assert result.exit_code == code, result.output
    return result.stdout


def _json(args: list[str], stdin: str | None = None, code: int = 0) -> Any:
    return json.loads(_run([*args, "--json"], stdin, code))


def _bastion(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The installed entry point, as a user runs it (a fresh process)."""
    return subprocess.run(
        [sys.executable, "-c", "from bastion.cli.main import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        check=False,
    )


def _org(name: str = "Acme", email: str = "root@example.com") -> dict[str, Any]:
    created = _json(
        ["org", "create", name, "--admin-email", email, "--admin-password-stdin"],
        stdin=PASSWORD + "\n",
    )
    return dict(created)


def _leaves(command: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if hasattr(command, "commands"):  # a group (typer ships its own click)
        found = []
        for name, sub in command.commands.items():
            found += _leaves(sub, (*path, name))
        return found
    return [path]


# --- failures: one line, what to do ------------------------------------------------------


def test_every_command_without_a_data_dir_says_how_to_fix_it(env: Path) -> None:
    root = typer.main.get_command(app)
    for path in _leaves(root):
        if path in {("init",), ("doctor",), ("compliance", "verify")}:
            continue  # they need no data directory (verify checks a report offline)
        command: Any = root
        for part in path:
            command = command.commands[part]
        args = list(path)
        # Fill required options and arguments with placeholders: the data dir is checked
        # before anything is looked up.
        for param in command.params:
            if param.required:
                value = "2"  # fits every argument, numbers included
                args += [param.opts[0], value] if param.param_type_name == "option" else [value]
        result = runner.invoke(app, args, input="some-password\n")
        assert result.exit_code == 2, (path, result.output)
        assert "Traceback" not in result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, (path, result.stderr)
        assert f"no Bastion data directory at {env}" in lines[0]
        assert "bastion init" in lines[0]
        assert "BASTION_DATA_DIR" in lines[0]


def test_an_unreachable_database_is_one_line_and_debug_shows_the_traceback(
    env: Path,
) -> None:
    env.mkdir()
    bad = {"BASTION_DATA_DIR": str(env), "BASTION_DATABASE_URL": "postgresql://u@127.0.0.1:1/x"}
    result = _bastion("user", "list", "--org", "org_x", env=bad)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "database error" in result.stderr
    assert "BASTION_DATABASE_URL" in result.stderr
    debug = _bastion("--debug", "user", "list", "--org", "org_x", env=bad)
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr


def test_version_and_help(env: Path) -> None:
    assert re.fullmatch(r"bastion \S+\n", _run(["--version"]))
    for args in (["--help"], ["org", "create", "--help"], ["serve", "--help"]):
        shown = _bastion(*args).stdout
        assert "<bool>" not in shown, shown
        assert "…" not in shown, shown
    create = _bastion("org", "create", "--help").stdout
    assert "--admin-password-stdin" in create  # whole, not truncated
    assert "--no-admin-password-stdin" not in create
    assert "[default: member]" in _bastion("user", "create", "--help").stdout
    assert "--install-completion" in _bastion("--help").stdout  # shell completion


def test_every_command_takes_json() -> None:
    root = typer.main.get_command(app)
    for path in _leaves(root):
        command: Any = root
        for part in path:
            command = command.commands[part]
        assert any("--json" in getattr(p, "opts", ()) for p in command.params), path


def test_exit_codes_are_documented() -> None:
    doc = (ROOT / "docs" / "cli.md").read_text()
    for code in ("0", "1", "2", "130"):
        assert re.search(rf"^\| `{code}` \|", doc, re.MULTILINE), code


# --- the operator's job ------------------------------------------------------------------


def test_init_and_migrate_report_in_json(env: Path) -> None:
    first = _json(["init"])
    assert first["migrations_applied"] > 0
    assert len(first["created"]) == 3
    assert _json(["init"])["migrations_applied"] == 0
    assert _json(["migrate"]) == {"migrations_applied": 0}


def test_org_list(env: Path) -> None:
    _run(["init"])
    assert _json(["org", "list"]) == {"data": []}
    a, b = _org("Acme", "a@example.com"), _org("Beta", "b@example.com")
    listed = _json(["org", "list"])["data"]
    assert {o["id"] for o in listed} == {a["org_id"], b["org_id"]}
    assert "Beta" in _run(["org", "list"])


def _audit(env: Path, org: str, type_: str) -> list[dict[str, Any]]:
    engine = create_engine(f"sqlite:///{env / 'bastion.db'}")
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT actor_type, actor_id, resource_id FROM audit_events"
                " WHERE chain = :c AND type = :t"
            ),
            {"c": org, "t": type_},
        ).mappings()
        found = [dict(r) for r in rows]
    engine.dispose()
    return found


def test_users_from_the_host(env: Path) -> None:
    _run(["init"])
    org = _org()
    org_id, admin = org["org_id"], org["user_id"]
    member = _json(
        ["user", "create", "--org", org_id, "--email", "m@example.com", "--role", "member"]
    )
    assert member["status"] == "invited"
    assert member["setup_token"].startswith("bsu_")
    listed = _json(["user", "list", "--org", org_id])["data"]
    assert {u["id"] for u in listed} == {admin, member["id"]}
    assert _json(["user", "show", admin, "--org", org_id])["email"] == "root@example.com"
    # Another organisation's user does not exist here.
    other = _org("Other", "o@example.com")
    _run(["user", "show", other["user_id"], "--org", org_id], code=1)
    # The last active admin cannot be suspended; a second one can be, then restored.
    assert (
        "keep at least one active admin"
        in runner.invoke(app, ["user", "suspend", admin, "--org", org_id]).stderr
    )
    second = _json(
        ["user", "create", "--org", org_id, "--email", "s@example.com", "--role", "admin",
         "--password-stdin"],
        stdin=PASSWORD + "-2\n",
    )  # fmt: skip
    assert _json(["user", "suspend", second["id"], "--org", org_id])["status"] == "suspended"
    assert _json(["user", "activate", second["id"], "--org", org_id])["status"] == "active"


def test_a_locked_out_admin_is_reset_from_the_host_audited(env: Path) -> None:
    _run(["init"])
    org = _org()
    org_id, admin = org["org_id"], org["user_id"]
    new = "a-brand-new-long-passphrase"
    done = _json(
        ["user", "reset-password", admin, "--org", org_id, "--password-stdin"], stdin=new + "\n"
    )
    assert done == {"id": admin, "sessions_ended": 0}
    engine = create_engine(f"sqlite:///{env / 'bastion.db'}")
    with engine.connect() as conn:
        digest = conn.execute(
            text("SELECT password_hash FROM users WHERE id = :u"), {"u": admin}
        ).scalar_one()
    engine.dispose()
    assert passwords.verify_password(digest, new)[0]
    assert not passwords.verify_password(digest, PASSWORD)[0]
    events = _audit(env, org_id, "auth.password_set")
    assert events == [{"actor_type": "system", "actor_id": "cli", "resource_id": admin}]
    # A password the policy refuses is refused, and nothing changes.
    short = runner.invoke(
        app, ["user", "reset-password", admin, "--org", org_id, "--password-stdin"], input="x\n"
    )
    assert short.exit_code == 1
    assert "Traceback" not in short.output
    assert len(_audit(env, org_id, "auth.password_set")) == 1
    assert _json(["user", "reset-mfa", admin, "--org", org_id]) == {
        "id": admin,
        "factors_removed": 0,
    }


def test_api_keys_list_and_revoke(env: Path) -> None:
    _run(["init"])
    org_id = _org()["org_id"]
    key = _json(["apikey", "create", "--org", org_id, "--name", "ci", "--role", "viewer"])
    listed = _json(["apikey", "list", "--org", org_id])["data"]
    assert [(k["id"], k["status"]) for k in listed] == [(key["id"], "active")]
    assert key["key"] not in json.dumps(listed)  # never the secret
    assert _json(["apikey", "revoke", key["id"], "--org", org_id])["status"] == "revoked"
    assert _json(["apikey", "list", "--org", org_id])["data"][0]["status"] == "revoked"
    assert len(_audit(env, org_id, "api_key.revoked")) == 1
    other = _org("Other", "o@example.com")["org_id"]
    _run(["apikey", "revoke", key["id"], "--org", other], code=1)  # not theirs: not found


def test_audit_export_counts_every_event_it_writes(env: Path, tmp_path: Path) -> None:
    _run(["init"])
    org_id = _org()["org_id"]
    out = tmp_path / "audit.jsonl"
    report = _json(["audit", "export", "--org", org_id, "--output", str(out)])
    assert report["events"] == len(out.read_text().splitlines()) == 3
    csv_out = tmp_path / "audit.csv"
    report = _json(["audit", "export", "--org", org_id, "-o", str(csv_out), "--format", "csv"])
    assert report["events"] == len(csv_out.read_text().splitlines()) - 1 == 4
    human = runner.invoke(app, ["audit", "export", "--org", org_id, "-o", str(out)])
    assert f"wrote 5 events to {out}" in human.stdout
    assert len(out.read_text().splitlines()) == 5


def test_serve_on_a_port_in_use_fails_before_saying_listening(env: Path) -> None:
    _run(["init"])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _bastion("serve", "--port", str(port), env={"BASTION_DATA_DIR": str(env)})
    assert result.returncode == 1
    assert "listening" not in result.stderr + result.stdout
    assert result.stderr.strip().splitlines() == [
        f"error: 127.0.0.1:{port} is already in use: stop what listens there or pass --port"
    ]


# --- doctor ------------------------------------------------------------------------------


def test_doctor_passes_a_fresh_instance_and_names_what_to_fix(env: Path) -> None:
    _run(["init"])
    report = _json(["doctor"])
    assert report["ok"] is True
    by_name = {c["name"]: c for c in report["checks"]}
    assert by_name["database"]["status"] == "ok"
    assert by_name["key:root.key"]["status"] == "ok"
    (env / "root.key").chmod(0o644)
    broken = _json(["doctor"], code=1)
    check = {c["name"]: c for c in broken["checks"]}["key:root.key"]
    assert check["status"] == "fail"
    assert check["fix"] == f"chmod 600 {env / 'root.key'}"
    (env / "root.key").chmod(0o600)
    (env / "pepper.key").unlink()
    missing = {c["name"]: c for c in _json(["doctor"], code=1)["checks"]}["key:pepper.key"]
    assert missing["fix"] == "run `bastion init`"
    assert stat.S_IMODE(env.stat().st_mode) == 0o700


def test_doctor_on_an_empty_host_and_in_production(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = _json(["doctor"], code=1)
    names = {c["name"]: c["status"] for c in report["checks"]}
    assert names["data_dir"] == "fail"
    assert names["database"] == "fail"
    _run(["init"])
    monkeypatch.setenv("BASTION_ENV", "production")
    monkeypatch.setenv("BASTION_PUBLIC_URL", "http://localhost:8400")
    checks = {c["name"]: c for c in _json(["doctor"], code=1)["checks"]}
    assert checks["tls"]["status"] == "fail"
    assert "BASTION_TLS_CERTFILE" in checks["tls"]["fix"]
    assert checks["public_url"]["status"] == "fail"
    monkeypatch.setenv("BASTION_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("BASTION_SMTP_PORT", "1")
    checks = {c["name"]: c for c in _json(["doctor"], code=1)["checks"]}
    assert checks["smtp"]["status"] == "fail"


# --- identity provisioning from the host: SSO, SCIM, OAuth ------------------------------


def test_scim_sso_and_oauth_from_the_host(env: Path) -> None:
    _run(["init"])
    org_id = _org()["org_id"]
    token = _json(["scim", "create", "--org", org_id, "--name", "okta"])
    assert token["id"].startswith("sct_")
    assert token["token"]
    listed = _json(["scim", "list", "--org", org_id])["data"]
    assert [t["id"] for t in listed] == [token["id"]]
    assert token["token"] not in json.dumps(listed)
    assert _json(["scim", "revoke", token["id"], "--org", org_id])["status"] == "revoked"
    assert _json(["sso", "list", "--org", org_id]) == {"data": []}
    assert _json(["sso", "domains", "--org", org_id]) == {"data": []}
    missing = runner.invoke(
        app, ["sso", "show", "ssoc_01ZZZZZZZZZZZZZZZZZZZZZZZZ", "--org", org_id]
    )
    assert missing.exit_code != 0
    assert "Traceback" not in missing.output
    gone = runner.invoke(app, ["oauth", "list", "--org", org_id, "--account", "sa_x", "--json"])
    assert gone.exit_code != 0
    assert "Traceback" not in gone.output
    assert "not found" in gone.stderr


MD = "urn:oasis:names:tc:SAML:2.0:metadata"
DS = "http://www.w3.org/2000/09/xmldsig#"


def _idp_metadata() -> str:
    from bastion.sso.saml import new_sp_credentials

    cert = "".join(new_sp_credentials("cli idp").cert_pem.strip().splitlines()[1:-1])
    return (
        f'<md:EntityDescriptor xmlns:md="{MD}" xmlns:ds="{DS}" entityID="https://idp.test/md">'
        '<md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">'
        '<md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>'
        f"{cert}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>"
        '<md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" '
        'Location="https://idp.test/sso"/></md:IDPSSODescriptor></md:EntityDescriptor>'
    )


def test_sso_create_from_the_host(env: Path, tmp_path: Path) -> None:
    from bastion.cli.common import host_principal, settings, unit_of_work, vault
    from bastion.sso import connections

    _run(["init"])
    org_id = _org()["org_id"]
    secret = "oidc-client-secret-0123456789"
    oidc_args = ["sso", "create", "--org", org_id, "--type", "oidc", "--name", "Okta"]
    oidc_args += ["--issuer", "https://idp.example.com", "--client-id", "cid"]
    oidc_args += ["--role-mapping", "admins=admin", "--scope", "openid", "--scope", "email"]
    raw = _run([*oidc_args, "--client-secret-stdin", "--json"], stdin=secret + "\n")
    assert secret not in raw
    oidc = json.loads(raw)
    assert oidc["id"].startswith("ssoc_")
    assert oidc["client_secret_set"] is True
    assert oidc["scopes"] == ["openid", "email"]
    assert oidc["redirect_uri"].endswith("/v1/auth/sso/oidc/callback")
    cfg = settings()
    with unit_of_work(cfg) as db:  # sealed in the vault, readable by the sign-in flow
        conn = connections.get(db, host_principal(org_id), org_id, oidc["id"])
        assert connections.client_secret(db, vault(cfg), conn) == secret
        assert conn.role_mapping[0]["group"] == "admins"

    secret_file = tmp_path / "secret"
    secret_file.write_text("from-a-file-0123\n")
    from_file = _json([*oidc_args[:-6], "--name", "Two", "--client-secret-file", str(secret_file)])
    assert from_file["client_secret_set"] is True

    metadata = tmp_path / "idp.xml"
    metadata.write_text(_idp_metadata())
    saml = _json(
        [
            "sso",
            "create",
            "--org",
            org_id,
            "--type",
            "saml",
            "--name",
            "Entra SAML",
            "--idp-metadata-file",
            str(metadata),
            "--no-jit",
            "--allow-idp-initiated",
        ]
    )
    assert saml["type"] == "saml"
    assert saml["client_secret_set"] is False
    assert saml["jit"] is False
    assert saml["acs_url"].endswith(f"/v1/auth/sso/{saml['id']}/saml/acs")
    listed = {c["id"] for c in _json(["sso", "list", "--org", org_id])["data"]}
    assert listed == {oidc["id"], from_file["id"], saml["id"]}
    human = _run(
        [
            "sso",
            "create",
            "--org",
            org_id,
            "--type",
            "saml",
            "--name",
            "Human",
            "--idp-metadata-file",
            str(metadata),
        ]
    )
    assert "/saml/acs" in human

    # the secret never on the command line; bad input names the field, no traceback
    for args, code, words in [
        ([*oidc_args, "--client-secret", secret], 2, "No such option"),
        (
            [*oidc_args, "--client-secret-stdin", "--client-secret-file", str(secret_file)],
            2,
            "not both",
        ),
        ([*oidc_args[:4], "--type", "ldap", "--name", "x"], 2, "type"),
        (["sso", "create", "--org", org_id, "--type", "oidc", "--name", "x"], 1, "issuer"),
        ([*oidc_args, "--role-mapping", "admins"], 2, "--role-mapping"),
        (
            [*oidc_args, "--client-secret-file", str(tmp_path / "missing")],
            2,
            "--client-secret-file",
        ),
        (
            ["sso", "create", "--org", org_id, "--type", "saml", "--name", "x"],
            1,
            "idp_metadata_xml",
        ),
    ]:
        result = runner.invoke(app, [*args, "--json"], input="")
        assert result.exit_code == code, (args, result.output)
        assert words in result.output, result.output
        assert "Traceback" not in result.output
        assert secret not in result.output
    assert len(_json(["sso", "list", "--org", org_id])["data"]) == 4

"""The sandbox API end to end on the session's app: workspaces and their bases, the
organisation's maxima, execs through the gate in a run's own fork, diffs, secrets as
files, and forks destroyed when their runs end."""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bastion.core.context import Actor
from bastion.core.permissions import CredentialKind
from bastion.core.principal import Principal
from bastion.sandboxes import execs
from bastion.sandboxes.bwrap import BwrapProvider
from bastion.sandboxes.provider import ExecResult, Limits, Usage
from tests.factories import Factory, Member, Org, bearer
from tests.sandboxes.conftest import need_bwrap


def tar_gz(files: dict[str, bytes], extra: list[tarfile.TarInfo] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
        for info in extra or []:
            tar.addfile(info)
    return buf.getvalue()


BASE = tar_gz({"README": b"base\n", "src/app.py": b"print('app')\n"})
EXEC_TOOL = {"name": "sandbox.exec", "risk": "low"}


class World:
    def __init__(self, client: TestClient, factory: Factory, **workspace: Any) -> None:
        self.client = client
        self.factory = factory
        self.org: Org = factory.org()
        self.user: Member = factory.member(self.org, "member")
        self.workspace = self.post("workspaces", {"name": "repo", **workspace})["id"]
        self.put_files(BASE)
        self.agent = self.post(
            "agents",
            {
                "name": "coder",
                "visibility": "org",
                "tools": [{**EXEC_TOOL, "connection": self.workspace}],
                "connections": [self.workspace],
            },
        )["id"]

    def url(self, path: str) -> str:
        return f"/v1/orgs/{self.org.id}/{path}"

    def post(self, path: str, body: dict[str, Any]) -> Any:
        response = self.client.post(self.url(path), json=body, headers=self.org.headers)
        assert response.status_code in (200, 201), response.text
        return response.json()

    def put_files(self, body: bytes, workspace: str | None = None) -> Any:
        return self.client.put(
            self.url(f"workspaces/{workspace or self.workspace}/files"),
            content=body,
            headers={**self.org.headers, "Content-Type": "application/gzip"},
        )

    def run(self, agent: str | None = None, by: Member | None = None) -> tuple[str, dict[str, str]]:
        response = self.client.post(
            self.url(f"agents/{agent or self.agent}/runs"),
            json={},
            headers=(by or self.user).headers,
        )
        assert response.status_code == 201, response.text
        return response.json()["run_id"], bearer(response.json()["token"])

    def exec(self, run: tuple[str, dict[str, str]], *argv: str, **body: Any) -> Any:
        return self.client.post(
            f"/v1/runs/{run[0]}/sandbox/exec",
            json={"workspace": self.workspace, "argv": list(argv), **body},
            headers=run[1],
        )

    def audit(self, type_: str) -> list[dict[str, Any]]:
        response = self.client.get(self.url(f"audit-events?type={type_}"), headers=self.org.headers)
        assert response.status_code == 200, response.text
        return list(response.json()["data"])


@pytest.fixture
def bwrap(client: TestClient) -> Iterator[BwrapProvider]:
    provider = client.app.state.bastion.sandboxes  # type: ignore[attr-defined]
    assert isinstance(provider, BwrapProvider)
    need_bwrap(provider)
    yield provider
    for fork_id in provider.store.fork_ids():  # no mount outlives the test
        provider.destroy(fork_id)


def test_workspace_crud_defaults_and_tenant_scoping(client: TestClient, factory: Factory) -> None:
    w = World(client, factory)
    got = client.get(w.url(f"workspaces/{w.workspace}"), headers=w.org.headers).json()
    assert got["id"].startswith("wks_")
    assert got["network"] == {"mode": "none", "domains": []}
    org = client.get(f"/v1/orgs/{w.org.id}", headers=w.org.headers).json()
    assert got["limits"] == org["sandbox_limits"]  # defaults: the org's maxima
    assert got["base_digest"] == hashlib.sha256(BASE).hexdigest()
    assert got["base_files"] == 2
    listed = client.get(w.url("workspaces"), headers=w.org.headers).json()["data"]
    assert [x["id"] for x in listed] == [w.workspace]
    other = factory.org()
    for method in ("get", "delete"):
        response = getattr(client, method)(
            f"/v1/orgs/{other.id}/workspaces/{w.workspace}", headers=other.headers
        )
        assert response.status_code == 404
    # A member may see, not change.
    assert client.get(w.url("workspaces"), headers=w.user.headers).status_code == 200
    denied = client.post(w.url("workspaces"), json={"name": "x"}, headers=w.user.headers)
    assert denied.status_code == 403
    patched = client.patch(
        w.url(f"workspaces/{w.workspace}"),
        json={"limits": {"memory_mb": 128}, "network": {"mode": "allowlist", "domains": ["a.io"]}},
        headers=w.org.headers,
    ).json()
    assert patched["limits"]["memory_mb"] == 128
    assert patched["network"] == {"mode": "allowlist", "domains": ["a.io"]}
    assert (
        client.delete(w.url(f"workspaces/{w.workspace}"), headers=w.org.headers).status_code == 204
    )
    assert client.get(w.url(f"workspaces/{w.workspace}"), headers=w.org.headers).status_code == 404


def test_limits_above_the_org_maxima_are_422(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    lowered = client.patch(
        f"/v1/orgs/{org.id}", json={"sandbox_limits": {"memory_mb": 256}}, headers=org.headers
    )
    assert lowered.status_code == 200, lowered.text
    assert lowered.json()["sandbox_limits"]["memory_mb"] == 256
    response = client.post(
        f"/v1/orgs/{org.id}/workspaces",
        json={"name": "big", "limits": {"memory_mb": 512}},
        headers=org.headers,
    )
    assert response.status_code == 422
    assert "limits.memory_mb" in response.text
    ok = client.post(
        f"/v1/orgs/{org.id}/workspaces",
        json={"name": "small", "limits": {"memory_mb": 64}},
        headers=org.headers,
    )
    assert ok.status_code == 201
    assert ok.json()["limits"]["memory_mb"] == 64
    member = factory.member(org, "manager")
    refused = client.patch(
        f"/v1/orgs/{org.id}", json={"sandbox_limits": {"pids": 64}}, headers=member.headers
    )
    assert refused.status_code == 403


def _member(name: str, kind: bytes, **attrs: Any) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    for key, value in attrs.items():
        setattr(info, key, value)
    return info


@pytest.mark.parametrize(
    "bad",
    [
        tar_gz({"../escape": b"x"}),
        tar_gz({"/etc/evil": b"x"}),
        tar_gz({}, [_member("link", tarfile.SYMTYPE, linkname="../../etc/passwd")]),
        tar_gz({}, [_member("abs", tarfile.SYMTYPE, linkname="/etc/passwd")]),
        tar_gz({}, [_member("hard", tarfile.LNKTYPE, linkname="../outside")]),
        tar_gz({}, [_member("dev", tarfile.CHRTYPE, devmajor=1, devminor=3)]),
        b"not a tar at all",
    ],
    ids=["dotdot", "absolute", "symlink-up", "symlink-absolute", "hardlink-up", "device", "junk"],
)
def test_a_base_that_escapes_is_refused_and_the_old_one_kept(
    client: TestClient, factory: Factory, bad: bytes
) -> None:
    w = World(client, factory)
    response = w.put_files(bad)
    assert response.status_code == 422, response.text
    assert '"body"' in response.text
    got = client.get(w.url(f"workspaces/{w.workspace}"), headers=w.org.headers).json()
    assert got["base_digest"] == hashlib.sha256(BASE).hexdigest()


def test_the_base_must_be_gzip(client: TestClient, factory: Factory) -> None:
    w = World(client, factory)
    response = client.put(
        w.url(f"workspaces/{w.workspace}/files"),
        content=BASE,
        headers={**w.org.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 415


def test_execs_share_the_runs_fork_never_another_runs(
    client: TestClient, factory: Factory, bwrap: BwrapProvider
) -> None:
    w = World(client, factory)
    run = w.run()
    first = w.exec(run, "/bin/sh", "-c", "cat README; echo mine > note.txt")
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["exit_code"] == 0
    assert body["stdout"] == "base\n"
    assert body["killed_by"] is None
    assert body["truncated"] == {"stdout": False, "stderr": False}
    assert body["call_id"].startswith("call_")
    # Where the server's time went: the route's steps and the exec's parts.
    timing = dict(item.strip().split(";dur=") for item in first.headers["server-timing"].split(","))
    steps = ("gate", "prepare", "exec", "record", "exec.fork", "exec.cgroup", "exec.spawn")
    assert {*steps, "exec.run", "exec.teardown", "total"} <= set(timing)
    assert float(timing["total"]) >= sum(float(timing[s]) for s in steps[:4])
    again = w.exec(run, "/bin/cat", "note.txt").json()
    assert again["stdout"] == "mine\n"
    other = w.run()
    theirs = w.exec(other, "/bin/cat", "note.txt").json()
    assert theirs["exit_code"] != 0
    assert "mine" not in theirs["stdout"]
    diff = client.get(f"/v1/runs/{run[0]}/sandbox/{w.workspace}/diff", headers=run[1]).json()
    assert diff["status"] == "live"
    assert diff["changes"] == [{"path": "note.txt", "kind": "added", "size": 5}]
    # The other run's token does not read this run's diff.
    assert (
        client.get(f"/v1/runs/{run[0]}/sandbox/{w.workspace}/diff", headers=other[1]).status_code
        == 404
    )
    events = w.audit("sandbox.exec")
    assert len(events) == 3
    meta = events[0]["metadata"]
    assert meta["workspace"] == w.workspace
    assert set(meta["usage"]) == {"cpu_ms", "memory_peak_bytes", "pids_peak", "disk_bytes"}
    assert meta["limits"]["memory_mb"] > 0
    assert "killed_by" in meta


def test_a_memory_hog_is_reported_killed_by_memory(
    client: TestClient, factory: Factory, bwrap: BwrapProvider
) -> None:
    w = World(client, factory, limits={"memory_mb": 32, "wall_seconds": 30})
    run = w.run()
    body = w.exec(run, "/usr/bin/python3", "-c", "b = bytearray(128 << 20)").json()
    assert body["killed_by"] == "memory"
    assert body["limits"]["memory_mb"] == 32
    (event,) = w.audit("sandbox.exec")
    assert event["metadata"]["killed_by"] == "memory"


def test_the_gate_decides_every_exec(
    client: TestClient, factory: Factory, bwrap: BwrapProvider
) -> None:
    w = World(client, factory)
    # A policy on argv: `rm` is denied.
    w.post(
        "approval-policies",
        {
            "name": "no rm",
            "match": {"tools": ["sandbox.exec"], "condition": "arguments.argv[0] == 'rm'"},
            "decision": "deny",
        },
    )
    run = w.run()
    denied = w.exec(run, "rm", "-rf", "src")
    assert denied.status_code == 403
    assert "deny" in denied.text
    assert w.exec(run, "/bin/true").status_code == 200
    # An agent not given the workspace: the gate refuses the connection.
    unconnected = w.post("agents", {"name": "other", "visibility": "org", "tools": [EXEC_TOOL]})[
        "id"
    ]
    stranger = w.run(unconnected)
    refused = w.exec(stranger, "/bin/true")
    assert refused.status_code == 403
    assert "connection_not_granted" in refused.text
    # Only the run's own token executes.
    assert (
        client.post(
            f"/v1/runs/{run[0]}/sandbox/exec",
            json={"workspace": w.workspace, "argv": ["/bin/true"]},
            headers=w.org.headers,
        ).status_code
        == 404
    )


def test_file_secrets_for_one_exec_only(
    client: TestClient, factory: Factory, bwrap: BwrapProvider
) -> None:
    w = World(client, factory)
    value = "file-secret-value-7f3a"
    put = client.put(w.url("secrets/DEPLOY_KEY"), json={"value": value}, headers=w.org.headers)
    assert put.status_code in (200, 201), put.text
    agent = w.post(
        "agents",
        {
            "name": "deployer",
            "visibility": "org",
            "tools": [{**EXEC_TOOL, "connection": w.workspace}],
            "connections": [w.workspace],
            "secrets": ["DEPLOY_KEY"],
        },
    )["id"]
    run = w.run(agent, by=w.org.admin)  # who may reveal secrets
    used = w.exec(
        run, "/bin/cat", "/run/secrets/DEPLOY_KEY", secrets=[{"name": "DEPLOY_KEY", "as": "file"}]
    )
    assert used.status_code == 200, used.text
    assert used.json()["stdout"] == value
    after = w.exec(run, "/bin/sh", "-c", "cat /run/secrets/DEPLOY_KEY; grep -r file-secret . /tmp")
    assert value not in after.json()["stdout"]
    # A secret the agent was not given is refused.
    stranger = w.run()
    refused = w.exec(stranger, "/bin/true", secrets=[{"name": "DEPLOY_KEY", "as": "file"}])
    assert refused.status_code == 403
    (event,) = [e for e in w.audit("sandbox.exec") if e["metadata"]["given"]["file"]]
    assert event["metadata"]["given"] == {"file": ["DEPLOY_KEY"], "proxy": []}
    assert value not in str(w.audit("sandbox.exec"))


def test_the_fork_is_destroyed_when_the_run_ends_and_its_diff_kept(
    client: TestClient, factory: Factory, bwrap: BwrapProvider
) -> None:
    w = World(client, factory)
    run = w.run()
    assert w.exec(run, "/bin/sh", "-c", "echo x > made.txt; rm README").status_code == 200
    revoked = client.post(w.url(f"runs/{run[0]}/revoke"), json={}, headers=w.user.headers)
    assert revoked.status_code == 200, revoked.text
    state = client.app.state.bastion  # type: ignore[attr-defined]
    with state.write_sessions() as db:
        execs.sweep(db, bwrap)
        db.commit()
    forks = [f for f in bwrap.store.fork_ids() if bwrap.store.meta(f)]
    diff = client.get(
        f"/v1/runs/{run[0]}/sandbox/{w.workspace}/diff", headers=w.user.headers
    ).json()
    assert diff["status"] == "destroyed"
    assert {(c["path"], c["kind"]) for c in diff["changes"]} == {
        ("made.txt", "added"),
        ("README", "deleted"),
    }
    (event,) = w.audit("sandbox.fork_destroyed")
    assert event["metadata"]["changes"] == 2
    assert all(bwrap.store.meta(f)["workspace"] != w.workspace for f in forks)  # type: ignore[index]
    # The ended run executes nothing more.
    assert w.exec(run, "/bin/true").status_code in (401, 404)


def test_every_egress_attempt_and_injection_is_audited(
    client: TestClient, factory: Factory
) -> None:
    w = World(client, factory)
    run_id = w.run()[0]
    prepared = execs.Prepared(
        run_id=run_id, org_id=w.org.id, agent_id=w.agent, workspace_id=w.workspace,
        fork_id="sbf_none", digest="d", limits=Limits(), domains=("api.example.com",),
        files={}, injections=(),
    )  # fmt: skip
    events = [
        {"kind": "egress", "host": "api.example.com", "port": 80, "method": "http",
         "decision": "allowed", "reason": None},
        {"kind": "secret_injected", "name": "API_TOKEN", "host": "api.example.com"},
        {"kind": "egress", "host": "evil.example", "port": 443, "method": "connect",
         "decision": "denied", "reason": "not_allowlisted"},
    ]  # fmt: skip
    result = ExecResult(0, b"", b"", False, False, 5, None, Usage())
    principal = Principal(
        principal_type="agent_run", id=run_id, org_id=w.org.id, role="",
        credential=CredentialKind.AGENT_RUN, role_permissions=frozenset(),
        actor=Actor(type="agent_run", id=run_id),
    )  # fmt: skip
    state = client.app.state.bastion  # type: ignore[attr-defined]
    with state.write_sessions() as db:
        execs.record(db, principal, prepared, "call_x", execs.ExecOutcome(result, events), {})
        db.commit()
    egress = w.audit("sandbox.egress")
    assert sorted((e["metadata"]["host"], e["outcome"]) for e in egress) == [
        ("api.example.com", "success"),
        ("evil.example", "denied"),
    ]
    (injected,) = w.audit("sandbox.secret_injected")
    assert injected["metadata"]["name"] == "API_TOKEN"
    assert injected["metadata"]["host"] == "api.example.com"

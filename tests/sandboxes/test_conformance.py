"""What every backend promises for the same run spec. Backends that execute here run
the spec; the Kubernetes backend (no cluster here) is held to the same promises on
the manifests it renders. A backend that cannot run here skips with its reason (under
CI=true the bwrap backend must run: `need_bwrap`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bastion.sandboxes.bwrap import BwrapProvider
from bastion.sandboxes.gvisor import GvisorProvider
from bastion.sandboxes.kubernetes import KubernetesProvider
from bastion.sandboxes.provider import Fork, Limits, RunSpec, SandboxProvider
from tests.sandboxes.conftest import need_bwrap

LIMITS = Limits(cpu=1, memory_mb=128, disk_mb=16, pids=32, wall_seconds=20, cpu_seconds=20)


@pytest.fixture(params=["bwrap", "gvisor"])
def executing(
    request: pytest.FixtureRequest, provider: BwrapProvider, workspace: str
) -> SandboxProvider:
    if request.param == "bwrap":
        return provider
    gvisor = GvisorProvider(provider.root, run_dir=provider.run_dir)
    reason = gvisor.unavailable()
    if reason is not None:
        pytest.skip(f"gvisor backend: {reason}")
    return gvisor


def _fork(p: SandboxProvider, name: str) -> Fork:
    return p.fork(name, "wks_test", "base1", LIMITS)


def test_base_is_visible_writes_persist_per_fork_only(executing: SandboxProvider) -> None:
    a, b = _fork(executing, "conf_a"), _fork(executing, "conf_b")
    first = executing.run(a, RunSpec(("/bin/sh", "-c", "cat README && echo 1 > new"), LIMITS))
    assert first.stdout == b"base\n"
    assert first.exit_code == 0
    assert executing.run(a, RunSpec(("/bin/cat", "new"), LIMITS)).stdout == b"1\n"
    assert executing.run(b, RunSpec(("/bin/cat", "new"), LIMITS)).exit_code != 0
    assert [c.path for c in executing.diff(a)] == ["new"]
    executing.destroy("conf_a")
    assert executing.diff(a) == []


def test_limits_are_reported(executing: SandboxProvider) -> None:
    fork = _fork(executing, "conf_c")
    result = executing.run(fork, RunSpec(("/bin/sleep", "30"), LIMITS, timeout_seconds=1))
    assert result.killed_by == "wall"
    result = executing.run(fork, RunSpec(("/bin/sh", "-c", "echo $HOME; id -u"), LIMITS))
    assert result.stdout.split() == [b"/workspace", b"65534"]


def test_no_network(executing: SandboxProvider) -> None:
    fork = _fork(executing, "conf_d")
    code = (
        "import socket\ntry:\n socket.create_connection(('1.1.1.1', 53), 2)\n print('UP')\n"
        "except OSError:\n print('none')"
    )
    result = executing.run(fork, RunSpec(("/usr/bin/python3", "-c", code), LIMITS))
    assert result.stdout == b"none\n"


def test_kubernetes_holds_to_the_same_promises(tmp_path: Path) -> None:
    k8s = KubernetesProvider(tmp_path, namespace="ns", runtime_class="kata")
    assert k8s.unavailable()  # it never pretends to execute here
    fork = k8s.fork("sbf_1", "wks_1", "d" * 64, LIMITS)
    spec = RunSpec(("/bin/true",), LIMITS, files={"K": b"v"}, timeout_seconds=5)
    kinds = {m["kind"]: m for m in k8s.render(fork, "d" * 64, spec)}
    pod = kinds["SandboxTemplate"]["spec"]["podTemplate"]["spec"]
    (container,) = pod["containers"]
    # read-only base, writable fork bounded by the disk limit, no network, limits, secrets
    assert {m["mountPath"]: m.get("readOnly", False) for m in container["volumeMounts"]} == {
        "/base": True,
        "/workspace": False,
        "/tmp": False,  # noqa: S108 (the pod's own)
        "/run/secrets": True,
    }
    assert kinds["NetworkPolicy"]["spec"]["egress"] == []
    assert container["resources"]["limits"]["memory"] == "128Mi"
    assert pod["activeDeadlineSeconds"] == 5
    assert container["securityContext"]["runAsUser"] == 65534
    assert '"v"' not in json.dumps(kinds)


def test_bwrap_is_available_where_ci_runs(provider: BwrapProvider) -> None:
    need_bwrap(provider)
    assert provider.unavailable() is None

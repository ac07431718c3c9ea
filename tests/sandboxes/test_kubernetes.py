"""The Kubernetes backend's rendered manifests: a SandboxClaim on the configured
runtime class, every limit mapped, a default-deny NetworkPolicy, no secret value in
any manifest."""

from __future__ import annotations

import json
from pathlib import Path

from bastion.sandboxes.kubernetes import EXTENSIONS_API, KubernetesProvider
from bastion.sandboxes.provider import Fork, Limits, RunSpec

LIMITS = Limits(cpu=0.5, memory_mb=256, disk_mb=100, pids=64, wall_seconds=30, cpu_seconds=20)


def render(tmp_path: Path, **spec: object) -> dict[str, dict[str, object]]:
    provider = KubernetesProvider(tmp_path, namespace="sbx", runtime_class="gvisor")
    fork = Fork("sbf_0ABC", "wks_0XYZ", LIMITS)
    manifests = provider.render(fork, "ab" * 32, RunSpec(("python3", "-V"), LIMITS, **spec))  # type: ignore[arg-type]
    return {m["kind"]: m for m in manifests}


def test_claim_references_a_template_on_the_runtime_class(tmp_path: Path) -> None:
    kinds = render(tmp_path)
    assert set(kinds) == {"NetworkPolicy", "SandboxTemplate", "SandboxClaim"}
    claim, template = kinds["SandboxClaim"], kinds["SandboxTemplate"]
    assert claim["apiVersion"] == EXTENSIONS_API
    assert claim["spec"] == {"sandboxTemplateRef": {"name": template["metadata"]["name"]}}  # type: ignore[index]
    pod = template["spec"]["podTemplate"]["spec"]  # type: ignore[index]
    assert pod["runtimeClassName"] == "gvisor"
    assert pod["automountServiceAccountToken"] is False
    assert pod["hostNetwork"] is False
    assert pod["hostPID"] is False
    assert pod["activeDeadlineSeconds"] == 30
    (container,) = pod["containers"]
    assert container["resources"]["limits"] == {
        "cpu": "500m",
        "memory": "256Mi",
        "ephemeral-storage": "100Mi",
    }
    security = container["securityContext"]
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["runAsNonRoot"] is True
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/base"]["readOnly"] is True
    fork_volume = next(v for v in pod["volumes"] if v["name"] == "fork")
    assert fork_volume["emptyDir"]["sizeLimit"] == "100Mi"
    annotations = template["metadata"]["annotations"]  # type: ignore[index]
    assert annotations["bastion.dev/pids-limit"] == "64"
    for manifest in kinds.values():
        name = manifest["metadata"]["name"]  # type: ignore[index]
        assert len(name) <= 63
        assert name == name.lower()
        assert "_" not in name


def test_network_policy_denies_everything_by_default(tmp_path: Path) -> None:
    policy = render(tmp_path)["NetworkPolicy"]
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]  # type: ignore[index]
    assert spec["ingress"] == []
    assert spec["egress"] == []
    selector = spec["podSelector"]["matchLabels"]  # type: ignore[index]
    pod_labels = render(tmp_path)["SandboxTemplate"]["spec"]["podTemplate"]["metadata"]["labels"]  # type: ignore[index]
    assert selector.items() <= pod_labels.items()


def test_allowlist_opens_only_the_egress_proxy(tmp_path: Path) -> None:
    policy = render(tmp_path, proxy_socket=tmp_path / "proxy.sock")["NetworkPolicy"]
    (rule,) = policy["spec"]["egress"]  # type: ignore[index]
    assert rule["ports"] == [{"protocol": "TCP", "port": 3128}]
    assert rule["to"] == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "bastion-egress-proxy"}}}
    ]


def test_file_secrets_are_references_never_values(tmp_path: Path) -> None:
    kinds = render(tmp_path, files={"TOKEN": b"value-never-rendered"})
    text = json.dumps(list(kinds.values()))
    assert "value-never-rendered" not in text
    pod = kinds["SandboxTemplate"]["spec"]["podTemplate"]["spec"]  # type: ignore[index]
    volume = next(v for v in pod["volumes"] if v["name"] == "secrets")
    assert volume["secret"]["items"] == [{"key": "TOKEN", "path": "TOKEN"}]
    assert volume["secret"]["defaultMode"] == 0o400

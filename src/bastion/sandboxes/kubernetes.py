"""The Kubernetes backend: the run spec rendered for the agent-sandbox controller
(`kubernetes-sigs/agent-sandbox`) — a `SandboxTemplate` per workspace base and limits,
a `SandboxClaim` per run's fork, and a default-deny `NetworkPolicy` — on a gVisor or
Kata runtime class. This instance renders the manifests (`render`); applying them and
attaching to the pod is the cluster operator's side (docs/sandboxes.md), so `start`
here refuses (503) rather than run anything less isolated.

What maps to what: memory and CPU quota → the container's requests and limits; disk →
the fork volume's `sizeLimit`; pids → the runtime class's pod-pids limit (the kubelet's
`podPidsLimit`; noted as an annotation); wall/CPU time → `activeDeadlineSeconds` and
the exec's own timeout; network none → a NetworkPolicy denying all ingress and egress;
allowlist → egress only to Bastion's egress proxy; `file` secrets → a projected secret
volume mounted read-only at /run/secrets for that exec's pod; `proxy` secrets never
appear in any manifest.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

from bastion.sandboxes.provider import (
    Change,
    Execution,
    Fork,
    Limits,
    RunSpec,
    SandboxProvider,
    Unavailable,
)

SANDBOX_API = "agents.x-k8s.io/v1alpha1"
EXTENSIONS_API = "extensions.agents.x-k8s.io/v1alpha1"
SANDBOX_UID = 65534
PROXY_LABELS = {"app.kubernetes.io/name": "bastion-egress-proxy"}
PROXY_PORT = 3128


def _name(*parts: str) -> str:
    """A DNS-1123 name: lowercase, ≤ 63 characters, stable for the same parts."""
    raw = "-".join(p.lower().replace("_", "-") for p in parts)
    if len(raw) <= 63:
        return raw
    digest = hashlib.sha256(raw.encode()).hexdigest()[:10]
    return f"{raw[:52]}-{digest}"


def _resources(limits: Limits) -> dict[str, Any]:
    cpu = f"{math.ceil(limits.cpu * 1000)}m"
    memory = f"{limits.memory_mb}Mi"
    return {
        "requests": {"cpu": cpu, "memory": memory, "ephemeral-storage": f"{limits.disk_mb}Mi"},
        "limits": {"cpu": cpu, "memory": memory, "ephemeral-storage": f"{limits.disk_mb}Mi"},
    }


class KubernetesProvider(SandboxProvider):
    name = "kubernetes"

    def __init__(self, root: Path, *, namespace: str, runtime_class: str) -> None:
        self.root = root
        self.namespace = namespace
        self.runtime_class = runtime_class

    def unavailable(self) -> str | None:
        return (
            "the kubernetes backend renders SandboxClaims for the cluster's agent-sandbox "
            "controller; this instance does not submit them (see docs/sandboxes.md)"
        )

    # --- rendering --------------------------------------------------------------------

    def labels(self, fork: Fork) -> dict[str, str]:
        return {
            "app.kubernetes.io/managed-by": "bastion",
            "bastion.dev/workspace": fork.workspace_id.lower().replace("_", "-"),
            "bastion.dev/fork": fork.id.lower().replace("_", "-"),
        }

    def template(self, fork: Fork, digest: str, spec: RunSpec) -> dict[str, Any]:
        limits = spec.limits
        container: dict[str, Any] = {
            "name": "sandbox",
            "image": "bastion-sandbox-base",
            "command": list(spec.argv),
            "workingDir": "/workspace",
            "env": [{"name": k, "value": v} for k, v in sorted(spec.env.items())],
            "resources": _resources(limits),
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": SANDBOX_UID,
                "runAsGroup": SANDBOX_UID,
                "allowPrivilegeEscalation": False,
                "privileged": False,
                "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"]},
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "volumeMounts": [
                {"name": "base", "mountPath": "/base", "readOnly": True},
                {"name": "fork", "mountPath": "/workspace"},
                {"name": "tmp", "mountPath": "/tmp"},
            ],
        }
        volumes: list[dict[str, Any]] = [
            {
                "name": "base",
                "persistentVolumeClaim": {
                    "claimName": _name("bastion-base", fork.workspace_id, digest[:12]),
                    "readOnly": True,
                },
            },
            {"name": "fork", "emptyDir": {"sizeLimit": f"{limits.disk_mb}Mi"}},
            {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
        ]
        if spec.files:
            container["volumeMounts"].append(
                {"name": "secrets", "mountPath": "/run/secrets", "readOnly": True}
            )
            volumes.append(
                {
                    "name": "secrets",
                    "secret": {
                        "secretName": _name("bastion-exec", fork.id),
                        "defaultMode": 0o400,
                        "items": [{"key": n, "path": n} for n in sorted(spec.files)],
                    },
                }
            )
        return {
            "apiVersion": EXTENSIONS_API,
            "kind": "SandboxTemplate",
            "metadata": {
                "name": _name("bastion", fork.workspace_id, digest[:12]),
                "namespace": self.namespace,
                "labels": self.labels(fork),
                "annotations": {
                    "bastion.dev/pids-limit": str(limits.pids),
                    "bastion.dev/cpu-seconds": str(limits.cpu_seconds),
                    "bastion.dev/base-digest": digest,
                },
            },
            "spec": {
                "podTemplate": {
                    "metadata": {"labels": self.labels(fork)},
                    "spec": {
                        "runtimeClassName": self.runtime_class,
                        "automountServiceAccountToken": False,
                        "enableServiceLinks": False,
                        "hostNetwork": False,
                        "hostPID": False,
                        "hostIPC": False,
                        "dnsPolicy": "None" if spec.proxy_socket is None else "ClusterFirst",
                        "dnsConfig": {"nameservers": ["127.0.0.1"]}
                        if spec.proxy_socket is None
                        else {},
                        "restartPolicy": "Never",
                        "activeDeadlineSeconds": int(spec.deadline_seconds),
                        "securityContext": {
                            "runAsNonRoot": True,
                            "seccompProfile": {"type": "RuntimeDefault"},
                        },
                        "containers": [container],
                        "volumes": volumes,
                    },
                }
            },
        }

    def claim(self, fork: Fork, template_name: str) -> dict[str, Any]:
        return {
            "apiVersion": EXTENSIONS_API,
            "kind": "SandboxClaim",
            "metadata": {
                "name": _name("bastion", fork.id),
                "namespace": self.namespace,
                "labels": self.labels(fork),
            },
            "spec": {"sandboxTemplateRef": {"name": template_name}},
        }

    def network_policy(self, fork: Fork, allowlist: bool) -> dict[str, Any]:
        """Default deny: no ingress, no egress; with an allowlist, egress only to the
        egress proxy (which enforces the domains and audits each connection)."""
        egress: list[dict[str, Any]] = []
        if allowlist:
            egress.append(
                {
                    "to": [{"podSelector": {"matchLabels": dict(PROXY_LABELS)}}],
                    "ports": [{"protocol": "TCP", "port": PROXY_PORT}],
                }
            )
        return {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {
                "name": _name("bastion-deny", fork.id),
                "namespace": self.namespace,
                "labels": self.labels(fork),
            },
            "spec": {
                "podSelector": {
                    "matchLabels": {"bastion.dev/fork": self.labels(fork)["bastion.dev/fork"]}
                },
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [],
                "egress": egress,
            },
        }

    def render(self, fork: Fork, digest: str, spec: RunSpec) -> list[dict[str, Any]]:
        template = self.template(fork, digest, spec)
        return [
            self.network_policy(fork, spec.proxy_socket is not None),
            template,
            self.claim(fork, template["metadata"]["name"]),
        ]

    # --- what this instance does not do ---------------------------------------------------

    def staging(self) -> Path:
        raise Unavailable(self.unavailable() or "")

    def prepare_workspace(self, workspace_id: str, digest: str, tree: Path) -> None:
        raise Unavailable(self.unavailable() or "")

    def remove_workspace(self, workspace_id: str) -> None:
        return None

    def fork(self, fork_id: str, workspace_id: str, digest: str, limits: Limits) -> Fork:
        return Fork(fork_id, workspace_id, limits)

    def start(self, fork: Fork, spec: RunSpec) -> Execution:
        raise Unavailable(self.unavailable() or "")

    def diff(self, fork: Fork) -> list[Change]:
        return []

    def proxy_dir(self) -> Path:
        return self.root / "proxies"

    def workspace_ids(self) -> list[str]:
        return []

    def destroy(self, fork_id: str) -> None:
        return None

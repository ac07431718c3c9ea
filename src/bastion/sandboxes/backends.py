"""The backend `BASTION_SANDBOX_BACKEND` names: `bwrap` (default), `gvisor` (bubblewrap's
run spec under gVisor's `runsc`, when installed) or `kubernetes` (SandboxClaims)."""

from __future__ import annotations

from pathlib import Path

from bastion.core.config import Settings
from bastion.sandboxes.bwrap import BwrapProvider
from bastion.sandboxes.provider import SandboxProvider


def sandbox_root(settings: Settings) -> Path:
    return settings.sandbox_dir or settings.data_dir / "sandboxes"


def make(settings: Settings) -> SandboxProvider:
    root = sandbox_root(settings)
    if settings.sandbox_backend == "kubernetes":
        from bastion.sandboxes.kubernetes import KubernetesProvider

        return KubernetesProvider(
            root,
            namespace=settings.sandbox_k8s_namespace,
            runtime_class=settings.sandbox_k8s_runtime_class,
        )
    if settings.sandbox_backend == "gvisor":
        from bastion.sandboxes.gvisor import GvisorProvider

        return GvisorProvider(root)
    return BwrapProvider(root)

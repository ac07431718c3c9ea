"""Request and response bodies of workspaces, the organisation's sandbox maxima, execs
and diffs (`docs/sandboxes.md`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, StringConstraints, model_validator

from bastion.core.schemas import In, Name, Out, SecretName

Cpu = Annotated[float, Field(ge=0.05, le=64)]
MemoryMb = Annotated[int, Field(ge=16, le=262_144)]
DiskMb = Annotated[int, Field(ge=1, le=1_048_576)]
Pids = Annotated[int, Field(ge=8, le=65_536)]
Seconds = Annotated[int, Field(ge=1, le=86_400)]
LIMIT_FIELDS = ("cpu", "memory_mb", "disk_mb", "pids", "wall_seconds", "cpu_seconds")
# A domain of the allowlist: a host name, or `*.` and a domain (its subdomains).
Domain = Annotated[
    str,
    StringConstraints(
        to_lower=True,
        min_length=1,
        max_length=253,
        pattern=r"^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$",
    ),
]
Host = Annotated[
    str,
    StringConstraints(
        to_lower=True,
        min_length=1,
        max_length=253,
        pattern=r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$",
    ),
]
WorkspaceId = Annotated[str, StringConstraints(min_length=3, max_length=40)]
Arg = Annotated[str, StringConstraints(max_length=8192)]
EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]
EnvValue = Annotated[str, StringConstraints(max_length=8192)]


class LimitsIn(In):
    """Only the fields given are set; each at most the organisation's maximum."""

    cpu: Cpu | None = Field(default=None, description="CPUs of quota (0.5: half a CPU).")
    memory_mb: MemoryMb | None = Field(default=None, description="Memory, MiB.")
    disk_mb: DiskMb | None = Field(
        default=None, description="What a run's fork may write, MiB (ENOSPC past it)."
    )
    pids: Pids | None = Field(default=None, description="Processes and threads at once.")
    wall_seconds: Seconds | None = Field(default=None, description="Real time per exec.")
    cpu_seconds: Seconds | None = Field(default=None, description="CPU time per exec.")


class LimitsOut(Out):
    cpu: float
    memory_mb: int
    disk_mb: int
    pids: int
    wall_seconds: int
    cpu_seconds: int


class NetworkIn(In):
    mode: Literal["none", "allowlist"] = Field(
        default="none",
        description="`none`: no network at all. `allowlist`: only `domains`, through "
        "Bastion's egress proxy (every connection audited).",
    )
    domains: Annotated[list[Domain], Field(max_length=100)] = Field(default_factory=list)

    @model_validator(mode="after")
    def _domains(self) -> NetworkIn:
        if self.mode == "allowlist" and not self.domains:
            raise ValueError("domains: an allowlist needs at least one domain")
        if self.mode == "none" and self.domains:
            raise ValueError("domains: only with mode allowlist")
        return self


class NetworkOut(Out):
    mode: Literal["none", "allowlist"]
    domains: list[str]


class WorkspaceIn(In):
    name: Name
    limits: LimitsIn | None = None
    network: NetworkIn | None = None


class WorkspacePatch(In):
    name: Name | None = None
    limits: LimitsIn | None = None
    network: NetworkIn | None = None


class WorkspaceOut(Out):
    id: str
    org_id: str
    name: str
    limits: LimitsOut
    network: NetworkOut
    base_digest: str | None = Field(
        description="SHA-256 of the base's gzip tar as uploaded; null before any."
    )
    base_bytes: int = Field(description="Bytes of the base's files, unpacked.")
    base_files: int
    created_at: datetime
    updated_at: datetime


class SecretUse(In):
    name: SecretName
    as_: Literal["file", "proxy"] = Field(alias="as")
    host: Host | None = Field(
        default=None, description="`proxy` only: requests to this host carry the secret."
    )
    header: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9-]{1,64}$")] | None = Field(
        default=None,
        description="`proxy` only: the header set to the secret's value (default "
        "`Authorization`; store e.g. `Bearer …` as the value).",
    )

    @model_validator(mode="after")
    def _host(self) -> SecretUse:
        if self.as_ == "proxy" and self.host is None:
            raise ValueError("host: a proxy secret needs the host it is sent to")
        if self.as_ == "file" and (self.host is not None or self.header is not None):
            raise ValueError("host: only a proxy secret has a host and a header")
        return self


class ExecIn(In):
    workspace: WorkspaceId
    argv: Annotated[list[Arg], Field(min_length=1, max_length=256)]
    stdin: Annotated[str, StringConstraints(max_length=1_048_576)] = ""
    env: Annotated[dict[EnvName, EnvValue], Field(max_length=64)] = Field(default_factory=dict)
    secrets: Annotated[list[SecretUse], Field(max_length=16)] = Field(default_factory=list)
    timeout_seconds: Seconds | None = None

    @model_validator(mode="after")
    def _checks(self) -> ExecIn:
        if not self.argv[0]:
            raise ValueError("argv: the command must not be empty")
        names = [s.name for s in self.secrets]
        if len(set(names)) != len(names):
            raise ValueError("secrets: each secret at most once")
        reserved = [n for n in self.env if n.upper().startswith("BASTION_")]
        if reserved:
            raise ValueError("env: BASTION_ names are Bastion's")
        return self


class UsageOut(Out):
    cpu_ms: int
    memory_peak_bytes: int
    pids_peak: int
    disk_bytes: int = Field(description="What the run's fork holds after this exec.")


class TruncatedOut(Out):
    stdout: bool
    stderr: bool


class ExecOut(Out):
    call_id: str = Field(description="The gate's record of this exec (tool `sandbox.exec`).")
    exit_code: int = Field(description="The command's status; 128 + N when killed by signal N.")
    stdout: str
    stderr: str
    truncated: TruncatedOut = Field(description="Whether stdout or stderr passed the cap.")
    duration_ms: int
    killed_by: Literal["memory", "pids", "cpu", "wall", "disk"] | None
    usage: UsageOut
    limits: LimitsOut


class ChangeOut(Out):
    path: str
    kind: Literal["added", "modified", "deleted"]
    size: int


class DiffOut(Out):
    run_id: str
    workspace: str
    status: Literal["none", "live", "destroyed"] = Field(
        description="`none`: the run has not executed in this workspace (yet); `live`: "
        "its fork exists; `destroyed`: the run ended, its diff is kept."
    )
    changes: list[ChangeOut]


class SandboxLimitsIn(LimitsIn):
    """The organisation's maxima; fields not given keep their value."""

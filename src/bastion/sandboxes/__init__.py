"""Isolated execution: workspaces with a read-only base, one copy-on-write fork per run,
and executions under limits with no network by default (`docs/sandboxes.md`).

`provider` is the interface every backend implements; `bwrap` is the default backend
(bubblewrap, overlayfs, cgroups, seccomp), `kubernetes` renders the same run spec as
SandboxClaims. `service` is what the rest of Bastion uses.
"""

"""`BASTION_SANDBOX_BACKEND=gvisor`: reserved for running the bwrap backend's run spec
under gVisor's `runsc` (Debian package `runsc`). Not available in this version: it
refuses every exec (503) and says so, rather than run with less isolation than asked."""

from __future__ import annotations

import shutil

from bastion.sandboxes.bwrap import BwrapProvider


class GvisorProvider(BwrapProvider):
    name = "gvisor"

    def unavailable(self) -> str | None:
        if shutil.which("runsc") is None:
            return "runsc is not installed (apt-get install runsc)"
        return "the gvisor backend is not available in this version: use bwrap or kubernetes"

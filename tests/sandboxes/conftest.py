"""The bwrap backend on this host. It needs root, bubblewrap, overlayfs, user namespaces
and writable cgroups: where one is missing the tests skip and say which (install
bubblewrap with `apt-get install bubblewrap` and run the suite as root); under CI=true,
where scripts/services.sh installs bubblewrap and the suite runs as root, they fail
instead.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.sandboxes.bwrap import BwrapProvider
from bastion.sandboxes.provider import Fork, Limits


def need_bwrap(provider: BwrapProvider) -> None:
    reason = provider.unavailable()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"the bwrap sandbox backend cannot run here: {reason}")
    pytest.skip(f"bwrap sandbox backend unavailable: {reason}")


@pytest.fixture
def provider(tmp_path: Path) -> Iterator[BwrapProvider]:
    p = BwrapProvider(tmp_path / "sandboxes", run_dir=Path("/run/bastion-test") / uuid.uuid4().hex)
    need_bwrap(p)
    yield p
    for fork_id in p.store.fork_ids():
        p.destroy(fork_id)
    shutil.rmtree(p.run_dir, ignore_errors=True)


def tree_digest(root: Path) -> str:
    """Every path, mode, owner and content under `root`, hashed."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in sorted(os.walk(root)):
        dirnames.sort()
        for name in sorted([*dirnames, *filenames]):
            full = Path(dirpath) / name
            st = full.lstat()
            h.update(f"{full.relative_to(root)}|{st.st_mode}|{st.st_uid}|{st.st_size}".encode())
            if full.is_file() and not full.is_symlink():
                h.update(full.read_bytes())
    return h.hexdigest()


@pytest.fixture
def workspace(provider: BwrapProvider, tmp_path: Path) -> str:
    tree = tmp_path / "tree"
    (tree / "src").mkdir(parents=True)
    (tree / "README").write_text("base\n")
    (tree / "src" / "main.py").write_text("print('hello from the base')\n")
    provider.prepare_workspace("wks_test", "base1", tree)
    return "wks_test"


def fork_of(provider: BwrapProvider, workspace: str, limits: Limits, name: str = "f1") -> Fork:
    return provider.fork(name, workspace, "base1", limits)

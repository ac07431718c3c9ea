"""Bases and forks on this host: a base is a directory tree owned by the sandbox user
that nothing writes to after `install`; a fork is a size-limited tmpfs holding an
overlayfs upper layer (and the run's /tmp) with the base as its lower layer, mounted
for as long as the run lasts. Creating one does not depend on the base's size.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from dataclasses import asdict
from pathlib import Path

from bastion.sandboxes.provider import Change, Limits

SAFE_ID = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")


def _checked(name: str) -> str:
    if not name or not SAFE_ID.issuperset(name.lower()):
        raise ValueError("not a usable id")
    return name


def _mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if done.returncode:
        raise OSError(f"mount failed: {done.stderr.strip()[:200]}")


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def is_mount(path: Path) -> bool:
    return os.path.ismount(path)


class Store:
    def __init__(self, root: Path, run_dir: Path, uid: int) -> None:
        """`root`: where bases are kept (any directory); `run_dir`: where forks are
        mounted — every directory above it must be searchable by the sandbox user,
        who binds its fork from there (`/run/…` by default)."""
        self.root = root
        self.uid = uid
        self.bases = root / "bases"
        self.forks = run_dir / "forks"
        self.bases.mkdir(parents=True, exist_ok=True)
        os.chmod(self.bases, 0o700)
        self.forks.mkdir(parents=True, exist_ok=True)
        for d in (run_dir, self.forks):  # searchable, not listable, by the sandbox user
            os.chmod(d, 0o711)  # noqa: S103

    # --- bases ---------------------------------------------------------------------

    def base(self, workspace_id: str, digest: str) -> Path:
        return self.bases / _checked(workspace_id) / _checked(digest)

    def install(self, workspace_id: str, digest: str, tree: Path) -> None:
        target = self.base(workspace_id, digest)
        if target.exists():
            shutil.rmtree(tree, ignore_errors=True)
            return
        for dirpath, dirnames, filenames in os.walk(tree):
            for name in (dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)):
                os.lchown(name, self.uid, self.uid)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(tree, target)

    def remove_workspace(self, workspace_id: str) -> None:
        shutil.rmtree(self.bases / _checked(workspace_id), ignore_errors=True)

    # --- forks ---------------------------------------------------------------------

    def fork_dir(self, fork_id: str) -> Path:
        return self.forks / _checked(fork_id)

    def meta(self, fork_id: str) -> dict[str, object] | None:
        d = self.fork_dir(fork_id)
        if not is_mount(d / "merged"):
            return None
        try:
            found = json.loads((d / "meta.json").read_text())
        except (OSError, ValueError):
            return None
        return found if isinstance(found, dict) else None

    def create(self, fork_id: str, workspace_id: str, digest: str, limits: Limits) -> Path:
        """Mount the fork (or find it mounted) and return its directory."""
        d = self.fork_dir(fork_id)
        if self.meta(fork_id) is not None:
            return d
        base = self.base(workspace_id, digest)
        if not base.is_dir():
            raise FileNotFoundError("the workspace has no base")
        self.destroy(fork_id)
        d.mkdir()
        try:
            _mount(
                "-t",
                "tmpfs",
                "-o",
                f"size={limits.disk_mb}m,mode=0711,nosuid,nodev",
                "tmpfs",
                str(d),
            )
            for sub in ("upper", "work", "merged", "tmp"):
                (d / sub).mkdir()
            for sub in ("upper", "tmp"):
                os.chown(d / sub, self.uid, self.uid)
            os.chmod(d / "tmp", 0o1777)  # noqa: S103 (the sandbox's /tmp)
            _mount(
                "-t",
                "overlay",
                "overlay",
                "-o",
                f"lowerdir={base},upperdir={d / 'upper'},workdir={d / 'work'},nosuid,nodev",
                str(d / "merged"),
            )
            meta = {"workspace": workspace_id, "digest": digest, "limits": asdict(limits)}
            (d / "meta.json").write_text(json.dumps(meta))
        except BaseException:
            self.destroy(fork_id)
            raise
        return d

    def destroy(self, fork_id: str) -> None:
        d = self.fork_dir(fork_id)
        if not d.exists():
            return
        if is_mount(d / "merged"):
            _umount(d / "merged")
        if is_mount(d):
            _umount(d)
        with contextlib.suppress(OSError):
            shutil.rmtree(d)

    def fork_ids(self) -> list[str]:
        return sorted(p.name for p in self.forks.iterdir())

    def disk_bytes(self, fork_id: str) -> int:
        try:
            st = os.statvfs(self.fork_dir(fork_id))
        except OSError:
            return 0
        return (st.f_blocks - st.f_bfree) * st.f_frsize

    def diff(self, fork_id: str) -> list[Change]:
        """What the upper layer holds: files added or modified, and whiteouts (deleted)."""
        meta = self.meta(fork_id)
        if meta is None:
            return []
        base = self.base(str(meta["workspace"]), str(meta["digest"]))
        upper = self.fork_dir(fork_id) / "upper"
        changes: list[Change] = []
        for dirpath, _dirnames, filenames in os.walk(upper):
            rel_dir = os.path.relpath(dirpath, upper)
            for name in filenames:
                full = os.path.join(dirpath, name)
                rel = os.path.normpath(os.path.join(rel_dir, name))
                st = os.lstat(full)
                if st.st_mode & 0o170000 == 0o020000 and st.st_rdev == 0:  # whiteout
                    changes.append(Change(rel, "deleted", 0))
                    continue
                existed = os.path.lexists(base / rel)
                changes.append(Change(rel, "modified" if existed else "added", st.st_size))
        return sorted(changes, key=lambda c: c.path)

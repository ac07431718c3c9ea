"""Unpacking a workspace's base from a gzip tar, refusing rather than adjusting: every
path stays inside the workspace, no link points outside it, no device, FIFO or other
special file, and the unpacked size and file count stay within the instance's limits
(counted from the headers before anything is written, so a small archive cannot unpack
to a large tree)."""

from __future__ import annotations

import io
import posixpath
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

from bastion.core.errors import InvalidInput

FIELD = "body"


@dataclass(frozen=True)
class Unpacked:
    files: int
    bytes: int


def _refuse(message: str) -> InvalidInput:
    return InvalidInput.field(FIELD, message)


def _inside(path: str) -> bool:
    norm = posixpath.normpath(path)
    return not (path.startswith("/") or norm == ".." or norm.startswith("../"))


def _check(member: tarfile.TarInfo) -> None:
    name = member.name
    shown = name[:200]
    if not name or "\x00" in name or not _inside(name):
        raise _refuse(f"{shown!r}: a path outside the workspace")
    if member.issym():
        target = member.linkname
        joined = posixpath.join(posixpath.dirname(name), target)
        if target.startswith("/") or not _inside(joined):
            raise _refuse(f"{shown!r}: a link that points outside the workspace")
    elif member.islnk():
        if member.linkname.startswith("/") or not _inside(member.linkname):
            raise _refuse(f"{shown!r}: a link that points outside the workspace")
    elif not (member.isfile() or member.isdir()):
        raise _refuse(f"{shown!r}: only files, directories and links are allowed")


def unpack(body: bytes, into: Path, *, max_bytes: int, max_files: int) -> Unpacked:
    """Unpack `body` into the empty directory `into`; InvalidInput (field `body`) names
    what is refused, and nothing is left behind then."""
    try:
        archive = tarfile.open(fileobj=io.BytesIO(body), mode="r:gz")  # noqa: SIM115
    except (tarfile.TarError, OSError, EOFError):
        raise _refuse("not a gzip-compressed tar archive") from None
    try:
        with archive:
            try:
                members = archive.getmembers()
            except (tarfile.TarError, OSError, EOFError):
                raise _refuse("a damaged or truncated tar archive") from None
            if len(members) > max_files:
                raise _refuse(f"more than {max_files} entries")
            total = 0
            for member in members:
                _check(member)
                total += max(member.size, 0) if member.isfile() else 0
                if total > max_bytes:
                    raise _refuse(f"unpacks to more than {max_bytes} bytes")
            try:
                # The "data" filter checks every member again as it is written (links
                # through links, permissions: no set-id bits, owner not kept).
                archive.extractall(into, filter="data")
            except (tarfile.TarError, OSError, EOFError) as exc:
                raise _refuse(f"cannot be unpacked ({type(exc).__name__})") from None
    except BaseException:
        shutil.rmtree(into, ignore_errors=True)
        raise
    files = sum(1 for m in members if m.isfile())
    return Unpacked(files=files, bytes=total)

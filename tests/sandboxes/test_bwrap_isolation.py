"""What a sandboxed process cannot reach: the network, the host's files, the kernel's
escape hatches, another run's fork, a secret after its exec."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.sandboxes.bwrap import BwrapProvider
from bastion.sandboxes.provider import Limits, RunSpec
from tests.sandboxes.conftest import fork_of

PY = "/usr/bin/python3"
LIMITS = Limits(wall_seconds=20)

CONNECT = """
import socket, sys
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
try:
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(2)
    s.connect((sys.argv[1], int(sys.argv[2])))
except OSError as exc:
    print("refused", exc.errno)
else:
    print("CONNECTED")
"""


@pytest.fixture
def host_server() -> Iterator[int]:
    """A TCP server on the host's loopback that answers anyone who connects."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.sendall(b"hello\n")
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    yield port
    server.close()


def run(provider: BwrapProvider, workspace: str, *argv: str, name: str = "f1") -> str:
    fork = fork_of(provider, workspace, LIMITS, name)
    result = provider.run(fork, RunSpec(tuple(argv), LIMITS))
    return (result.stdout + result.stderr).decode()


def test_host_loopback_is_unreachable(
    provider: BwrapProvider, workspace: str, host_server: int
) -> None:
    # The host really does answer on that port.
    with socket.create_connection(("127.0.0.1", host_server), timeout=5) as s:
        assert s.recv(6) == b"hello\n"
    out = run(provider, workspace, PY, "-c", CONNECT, "127.0.0.1", str(host_server))
    assert out.startswith("refused")


@pytest.mark.parametrize(
    ("address", "port"),
    [("169.254.169.254", "80"), ("8.8.8.8", "53"), ("::1", "22"), ("10.0.0.1", "443")],
)
def test_no_address_is_reachable(
    provider: BwrapProvider, workspace: str, address: str, port: str
) -> None:
    out = run(provider, workspace, PY, "-c", CONNECT, address, port)
    assert out.startswith("refused")


def test_own_port_cannot_be_served_or_reached(provider: BwrapProvider, workspace: str) -> None:
    code = """
import socket
try:
    s = socket.socket(); s.bind(("127.0.0.1", 8080)); s.listen()
    c = socket.create_connection(("127.0.0.1", 8080), timeout=2)
    print("CONNECTED")
except OSError as exc:
    print("refused", exc.errno)
"""
    assert run(provider, workspace, PY, "-c", code).startswith("refused")


def test_dns_is_refused(provider: BwrapProvider, workspace: str) -> None:
    code = """
import socket
try:
    print(socket.getaddrinfo("example.com", 443))
except OSError as exc:
    print("refused", exc)
"""
    assert run(provider, workspace, PY, "-c", code).startswith("refused")


def test_no_interface_is_up(provider: BwrapProvider, workspace: str) -> None:
    # Only the new namespace's loopback exists, and it is down.
    out = run(provider, workspace, "/bin/cat", "/proc/net/dev")
    interfaces = [line.split(":")[0].strip() for line in out.splitlines()[2:]]
    assert interfaces == ["lo"]
    flags = run(provider, workspace, "/bin/cat", "/sys/class/net/lo/flags", name="f2")
    assert "0x8" in flags or "No such file" in flags  # IFF_UP (0x1) not set


SYSCALL = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
nr = int(sys.argv[1])
args = [int(a) for a in sys.argv[2:]]
r = libc.syscall(nr, *args)
print(r, ctypes.get_errno())
"""


@pytest.mark.parametrize(
    ("name", "nr", "args", "errno"),
    [
        ("unshare(CLONE_NEWUSER)", 272, ["268435456"], 1),
        ("unshare(CLONE_NEWNS)", 272, ["131072"], 1),
        ("mount", 165, ["0", "0", "0", "0", "0"], 1),
        ("ptrace(PTRACE_TRACEME)", 101, ["0", "0", "0", "0"], 1),
        ("bpf", 321, ["0", "0", "0"], 1),
        ("keyctl", 250, ["0", "0", "0"], 1),
        ("clone3", 435, ["0", "0"], 38),  # ENOSYS: threads fall back to clone
        ("setns", 308, ["0", "0"], 1),
        ("perf_event_open", 298, ["0", "0", "0", "0", "0"], 1),
    ],
)
def test_escape_system_calls_are_refused(
    provider: BwrapProvider, workspace: str, name: str, nr: int, args: list[str], errno: int
) -> None:
    out = run(provider, workspace, PY, "-c", SYSCALL, str(nr), *args)
    assert out.split() == ["-1", str(errno)], name


def test_escape_commands_fail(provider: BwrapProvider, workspace: str) -> None:
    script = (
        "unshare -r true && echo UNSHARED; "
        "mount -t tmpfs none /tmp && echo MOUNTED; "
        "echo x > /usr/evil && echo WROTE_USR; "
        "echo x > /etc/passwd && echo WROTE_ETC; "
        "echo done"
    )
    out = run(provider, workspace, "/bin/sh", "-c", script)
    for marker in ("UNSHARED", "MOUNTED", "WROTE_USR", "WROTE_ETC"):
        assert marker not in out
    assert "done" in out


def test_threads_work_under_the_filter(provider: BwrapProvider, workspace: str) -> None:
    code = "import threading; t = threading.Thread(target=print, args=('thread',)); t.start()"
    assert run(provider, workspace, PY, "-c", code).strip() == "thread"


def test_no_host_path_outside_the_workspace_is_visible(
    provider: BwrapProvider, workspace: str, tmp_path: Path
) -> None:
    marker = tmp_path / "host-secret.txt"
    marker.write_text("host")
    paths = [
        str(marker),
        str(provider.root),
        str(provider.run_dir),
        "/root",
        "/home",
        "/work",
        "/var",
        "/srv",
        "/opt",
        "/etc/shadow",
        "/etc/ssh",
        "/sys/fs/cgroup/memory",
    ]
    script = 'for p in "$@"; do [ -e "$p" ] && echo "VISIBLE $p"; done; ls /; echo end'
    out = run(provider, workspace, "/bin/sh", "-c", script, "sh", *paths)
    assert "VISIBLE" not in out
    top = set(out.split()) - {"end"}
    assert top <= {
        "bin",
        "dev",
        "etc",
        "lib",
        "lib32",
        "lib64",
        "libx32",
        "proc",
        "sbin",
        "sys",
        "tmp",
        "usr",
        "workspace",
        "run",
    }
    # Its processes are its own: PID 1 is the sandbox's.
    ps = run(provider, workspace, "/bin/sh", "-c", "ls /proc | grep -c '^[0-9]'", name="f2")
    assert int(ps.strip()) <= 4


def test_the_environment_is_cleared(provider: BwrapProvider, workspace: str) -> None:
    fork = fork_of(provider, workspace, LIMITS)
    spec = RunSpec(("/usr/bin/env",), LIMITS, env={"GREETING": "hi"})
    names = {line.split("=")[0] for line in provider.run(fork, spec).stdout.decode().split()}
    assert names == {"PATH", "HOME", "LANG", "TMPDIR", "PWD", "GREETING"}  # PWD: bwrap's


def test_a_runs_files_persist_in_its_fork_and_never_reach_another(
    provider: BwrapProvider, workspace: str
) -> None:
    mine = fork_of(provider, workspace, LIMITS, "run_a")
    other = fork_of(provider, workspace, LIMITS, "run_b")
    provider.run(mine, RunSpec(("/bin/sh", "-c", "echo mine > note; echo t > /tmp/t"), LIMITS))
    again = provider.run(mine, RunSpec(("/bin/sh", "-c", "cat note /tmp/t"), LIMITS))
    assert again.stdout == b"mine\nt\n"
    theirs = provider.run(other, RunSpec(("/bin/sh", "-c", "cat note /tmp/t"), LIMITS))
    assert b"mine" not in theirs.stdout
    assert theirs.exit_code != 0
    assert [c.path for c in provider.diff(mine)] == ["note"]
    assert provider.diff(other) == []
    provider.destroy("run_a")
    assert provider.store.meta("run_a") is None
    assert not provider.store.fork_dir("run_a").exists()


def test_file_secrets_exist_for_one_exec_only(provider: BwrapProvider, workspace: str) -> None:
    fork = fork_of(provider, workspace, LIMITS)
    spec = RunSpec(
        ("/bin/sh", "-c", "cat /run/secrets/API_KEY; ls -l /run/secrets"),
        LIMITS,
        files={"API_KEY": b"s3cr3t-value"},
    )
    first = provider.run(fork, spec)
    assert first.stdout.startswith(b"s3cr3t-value")
    assert b"-r--------" in first.stdout
    second = provider.run(fork, RunSpec(("/bin/sh", "-c", "cat /run/secrets/API_KEY"), LIMITS))
    assert b"s3cr3t" not in second.stdout
    assert second.exit_code != 0
    upper = provider.store.fork_dir("f1")
    grep = [p for p in upper.rglob("*") if p.is_file() and b"s3cr3t" in p.read_bytes()]
    assert grep == []

"""Hostile tools for tests/test_sandbox_hostile.py (importable by "module:qualname").

Each one tries one escape and reports what happened; none of them ever writes to /proc/sys.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from typing import Any


def read_file(path: str) -> str:
    with open(path, "rb") as f:
        return f.read(200).decode(errors="replace")


def open_for_writing(path: str) -> str:
    """Opens `path` for writing and closes it again: never writes a byte (it may be /proc/sys)."""
    fd = os.open(path, os.O_WRONLY)
    os.close(fd)
    return "opened"


def overwrite_memory(pid: int) -> str:
    with open(f"/proc/{pid}/mem", "r+b") as f:
        f.seek(0x400000)
        return "opened"


def parent_pid() -> int:
    with open("/proc/self/stat", "rb") as f:
        return int(f.read().rsplit(b")", 1)[1].split()[1])


def kill(pid: int) -> str:
    """pid 0 means: the fork server (our parent, as /proc names it); -1: every process we may."""
    os.kill(parent_pid() if pid == 0 else pid, signal.SIGKILL)
    return "sent"


def daemon() -> int:
    """Double fork + setsid: the grandchild outlives its parent and leaves the process group.
    Returns the grandchild's pid as the host sees it (/proc is the host's in "process" mode)."""
    r, w = os.pipe()
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.write(w, os.readlink("/proc/self").encode().rjust(16))
            while True:
                time.sleep(3600)
        os._exit(0)
    os.wait()
    return int(os.read(r, 16))


def fork_bomb(n: int) -> int:
    """Forks up to `n` blocking children; returns how many forks succeeded."""
    forked = 0
    for _ in range(n):
        try:
            pid = os.fork()
        except OSError:
            break
        if pid == 0:
            while True:
                time.sleep(3600)
        forked += 1
    return forked


def fill_dir(path: str, mb: int) -> int:
    """Writes up to `mb` MB into `path`; returns the MB written before an error stopped it."""
    chunk = b"z" * (1 << 20)
    written = 0
    try:
        with open(path, "wb") as f:
            for _ in range(mb):
                f.write(chunk)
                f.flush()
                written += 1
    except OSError:
        pass
    return written


def fill_memfds(count: int, mb: int) -> int:
    """Writes up to `mb` MB into each of `count` memfds (kept open); returns the MB written."""
    chunk = b"m" * (1 << 20)
    total = 0
    fds = []
    for _ in range(count):
        try:
            fd = os.memfd_create("fill")
        except OSError:
            break
        fds.append(fd)
        for _ in range(mb):
            try:
                os.write(fd, chunk)
            except OSError:
                break
            total += 1
    return total


def write_and_wait(name: str, token: str) -> str:
    """Writes a secret in its scratch dir, then stays alive until the sibling says it has looked
    (it connects to an abstract unix socket: siblings share the network namespace)."""
    with open(name, "w") as f:
        f.write("sibling-secret")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind("\0agentloop-sibling-" + token)
        s.listen()
        s.settimeout(20)
        conn, _ = s.accept()
        conn.close()
    return "seen"


def peek_siblings(name: str, token: str) -> dict[str, Any]:
    """Waits until the sibling has written its secret (its socket listens), looks for its scratch
    dir (call<N> next to ours; in /scratch anything but our own files), tries to list it and
    read `name` in it, then tells the sibling it may end."""
    with socket.socket(socket.AF_UNIX) as s:
        deadline = time.monotonic() + 20
        while True:
            try:
                s.connect("\0agentloop-sibling-" + token)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        here = os.getcwd()
        parent = os.path.dirname(here)
        found = [os.path.join(parent, f"call{i}") for i in range(1, 256)]
        found = [d for d in found if d != here and os.path.exists(d)] if here != "/scratch" else []
        found += [os.path.join(here, e) for e in os.listdir(here)]
        seen: dict[str, Any] = {"cwd": here, "found": found, "read": [], "errors": []}
        for d in found:
            for path in (d, os.path.join(d, name)):
                try:
                    seen["read"].append(read_file(path) if os.path.isfile(path) else os.listdir(path))
                except OSError as exc:
                    seen["errors"].append(type(exc).__name__)
    return seen


def connect_tcp(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        return "connected"


def connect_unix(path: str) -> str:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(path)
    return "connected"


def resolve(name: str) -> str:
    return str(socket.getaddrinfo(name, 80)[0][4])


def whoami() -> dict[str, Any]:
    return {
        "uid": os.getuid(),
        "cwd": os.getcwd(),
        "no_new_privs": _status("NoNewPrivs"),
        "cap_eff": _status("CapEff"),
        "cap_bnd": _status("CapBnd"),
        "seccomp": _status("Seccomp"),
    }


def _status(field: str) -> str:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return line.split()[1]
    return ""


def trivial() -> int:
    return 1


def number(i: int) -> int:
    return i


def escape_syscalls() -> dict[str, int]:
    """unshare(CLONE_NEWUSER) and ptrace(PTRACE_ATTACH, parent): the errno each one got (0: worked)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    out = {}
    for name, fn in (
        ("unshare", lambda: libc.unshare(0x10000000)),
        ("ptrace", lambda: libc.ptrace(16, os.getppid() or 1, None, None)),
    ):
        ctypes.set_errno(0)
        out[name] = 0 if fn() == 0 else ctypes.get_errno()
    return out


def import_module(name: str) -> str:
    """Imports `name` (stdlib, or a module the host can import from a directory of its sys.path)."""
    import importlib

    return str(getattr(importlib.import_module(name), "__name__", name))


def write_and_read_scratch() -> str:
    """Its own scratch stays writable under Landlock: write, read back, list."""
    with open("note.txt", "w") as f:
        f.write("mine")
    with open("note.txt") as f:
        return f.read() + ":" + ",".join(sorted(os.listdir(".")))


def read_through_symlink(target: str) -> str:
    """A symlink in its own (writable) scratch that points at `target`, then read through it."""
    os.symlink(target, "link")
    with open("link", "rb") as f:
        return f.read(200).decode(errors="replace")


def exec_cat(path: str) -> str:
    """Reads `path` with another program (a child process inherits the confinement, or not)."""
    import subprocess

    proc = subprocess.run(["cat", path], capture_output=True, timeout=20)
    return f"{proc.returncode}:{proc.stdout[:200].decode(errors='replace')}"


def mp_lock() -> str:
    """A multiprocessing lock: a POSIX semaphore, created in /dev/shm."""
    import multiprocessing

    multiprocessing.Lock()
    return "locked"


def _own_sockets() -> list[int]:
    """The sockets among our fds: the fork server's "done" channel is one of them."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                found.append(int(name))
        except OSError:
            pass
    return found


def forge_done() -> str:
    """Tells the fork server "done" before any result is written, then keeps running."""
    for fd in _own_sockets():
        try:
            os.write(fd, b"D")
        except OSError:
            pass
    while True:
        time.sleep(3600)


def close_done_and_return() -> str:
    """Closes the "done" channel (every socket it has), then returns normally."""
    for fd in _own_sockets():
        os.close(fd)
    return "closed"


def stalk_fork_server(stalkers: int, nth: int = 0) -> int:
    """(`nth`: which call of a series this is, so that no two calls look alike.) Leaves `stalkers` processes behind that SIGKILL the fork server (our parent) over and over:
    the permission check fails while the fork server is root, and would pass in any moment it
    took the call's uid as its real uid (as it did to kill the call's processes by uid)."""
    target = parent_pid()
    for _ in range(stalkers):
        if os.fork() == 0:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                try:
                    os.kill(target, signal.SIGKILL)
                except OSError:
                    pass
            os._exit(0)
    return target


def _fd_targets(pid: str) -> dict[int, str]:
    """What the fds of process `pid` (as /proc names it) point at, those we may read."""
    found = {}
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return found
    for name in names:
        try:
            found[int(name)] = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            pass
    return found


def forge_outcome() -> dict[str, object]:
    """Writes forged outcomes (the fork server's status frame: b"S" + JSON) to every socket it
    holds, and tries to see the fds of every other process (another call's memfds, the host's or
    the fork server's sockets) through /proc; then returns what it holds and what it reached."""
    forged = 0
    for fd in _own_sockets():
        try:
            os.write(fd, b'S{"exit": 0, "forged": true}')
            forged += 1
        except OSError:
            pass
    me = os.readlink("/proc/self")  # our pid as this /proc names it (we may be PID 1 of our own)
    foreign = [
        f"{pid}:{fd}:{target}"
        for pid in os.listdir("/proc")
        if pid.isdigit() and pid != me
        for fd, target in _fd_targets(pid).items()
    ]
    return {"own": sorted(_fd_targets("self").values()), "forged": forged, "foreign": foreign}


def other_calls(first_uid: int, count: int) -> list[str]:
    """Processes of the sandbox's call uids (`first_uid` and the `count` after it) other than
    this one that are not zombies: another call still running beside this one."""
    me = os.readlink("/proc/self")
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or pid == me:
            continue
        try:
            with open(f"/proc/{pid}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        uid = int(fields["Uid"].split()[0])
        if first_uid <= uid < first_uid + count and not fields["State"].strip().startswith("Z"):
            found.append(f"{pid} uid {uid} {fields['State'].strip()}")
    return found

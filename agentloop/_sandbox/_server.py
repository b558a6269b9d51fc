"""The fork server ("zygote") as the host sees it: what it is started with, how, and `Server`,
one running instance."""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from .. import _json
from .._exceptions import SandboxUnavailableError
from ._bwrap import _python_roots, bwrap_argv
from ._privs import others_can_read, set_dumpable
from ._protocol import BOOT, SCRATCH_IN_SANDBOX

__all__ = ["ServerSpec", "Server", "start_server", "discard", "default_uids", "check_seccomp", "host_path"]

NPROC_BUDGET = 512  # processes a sandboxed uid may add (where RLIMIT_NPROC is enforced)
_PRELOAD = ("asyncio", "agentloop._json", "agentloop._sandbox._child")
_UID_BLOCK = 64  # per-call uids of one sandbox: calls beyond this many at once queue
_sandbox_counter = itertools.count()
_INIT_PIDNS = 0xEFFFFFFC  # the inode number of the machine's initial PID namespace (PROC_PID_INIT_INO)


def default_uids() -> range:
    """64 uids no other live sandbox on this machine uses: derived from our pid and which of this
    process's sandboxes it is (4 may run at once without sharing). A pid is unique among live
    processes only within its PID namespace: in any other (a container: its first process is
    pid 1 in every one) the namespace's identity is hashed in, or the hosts of two containers
    would share their calls' uids, and with them RLIMIT_NPROC (their fork bombs' budget)."""
    block = ((os.getpid() & 0x3FFFFF) << 2) | (next(_sandbox_counter) & 3)
    try:
        pidns = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        pidns = _INIT_PIDNS
    if pidns != _INIT_PIDNS:
        key = f"{pidns}:{block}".encode()
        block = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") % (1 << 24)
    start = (1 << 30) + block * _UID_BLOCK
    return range(start, start + _UID_BLOCK)


def host_path() -> list[str]:
    """The host's sys.path, absolute: the fork server imports tools exactly as the host does."""
    return [os.path.abspath(p) if p else os.getcwd() for p in sys.path]


def check_seccomp() -> None:
    """Fail closed without libseccomp: the threat table's "prevented" cells for the host's memory
    and namespaces rest on the seccomp filter, so a sandbox without it is not the one documented.
    (The fork server compiles the filter itself; this checks, once, that it can.)"""
    from ._privs import SeccompUnavailable, compile_seccomp

    try:
        compile_seccomp()
    except SeccompUnavailable as exc:
        raise SandboxUnavailableError(
            f"the 'process' and 'isolated' sandboxes need the seccomp filter, and it cannot be built "
            f"here: {exc}. Install the libseccomp2 system library, or run the tool with "
            "sandbox='thread' (not sandboxed); `agentloop doctor` shows what this machine lacks"
        ) from None
    except OSError as exc:  # e.g. no memfd_create in a locked-down container
        raise SandboxUnavailableError(f"cannot build the seccomp filter here: {exc}") from None


@dataclass(frozen=True, slots=True)
class ServerSpec:
    """What every fork server of one `ProcessSandbox` starts with (fixed at its construction)."""

    isolated: bool
    max_processes: int
    env: dict[str, str]
    bwrap: str
    scratch_root: str | None
    uids: range
    ro_paths: tuple[str, ...]


@dataclass(slots=True, eq=False)
class Server:
    """One running zygote, as seen from the host."""

    popen: subprocess.Popen[bytes]
    ctl: socket.socket
    scratch: str | None  # "process": the host-side dir of the calls' scratch dirs (removed at the end)
    err_fd: int  # the zygote's stderr (a memfd): why it died, when it does
    binds: frozenset[str] = frozenset()  # what bubblewrap binds for the tools ("isolated")
    max_processes: int = 1
    # Spares the fork server offered (`_handover.Offer`), the sids of those handed a call since the
    # last control message (it carries them: the fork server counts those calls as running
    # before it starts any call sent after them), and the lock over both and over the socket.
    offers: deque[Any] = field(default_factory=deque)
    took: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    rx: socket.socket | None = None  # the control socket again, non-blocking: offers are read here
    handed: int = 0  # calls handed to an offered spare (for tests and benchmarks)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    broken: bool = False
    inflight: int = 0  # calls using this server (guarded by the sandbox's lock)
    retired: bool = False  # replaced or closed: discarded once its last call ends
    discarded: bool = False
    stopped: bool = False  # the sandbox was closed (`stop()`): a call it ends was cancelled

    def alive(self) -> bool:
        return not self.broken and self.popen.poll() is None

    def send(self, msg: dict[str, Any], fds: list[int] | None = None) -> None:
        with self.lock:
            if self.took:
                msg["took"], self.took = self.took, []
            socket.send_fds(self.ctl, [_json.dumps(msg)], fds or [])

    def why_dead(self) -> str:
        """The tail of the zygote's stderr: the reason it failed to start, usually. Only while a
        call holds the server (`inflight`): `discard` closes `err_fd` after the last one."""
        if self.discarded:  # never read a closed fd (its number may be another file's by now)
            return "the sandbox was closed while the call ran"
        size = os.fstat(self.err_fd).st_size
        tail = os.pread(self.err_fd, 2000, max(0, size - 2000)).decode(errors="replace").strip()
        code = self.popen.poll()
        return f"the fork server exited ({code})" + (f": {tail}" if tail else "")

    def stop(self) -> None:
        self.broken = self.stopped = True
        self.drop_offers()
        if self.rx is not None:
            self.rx.close()
        self.ctl.close()  # the zygote sees EOF, kills its children and exits

    def offer_fds(self) -> frozenset[int]:
        with self.lock:
            return frozenset(fd for offer in self.offers for fd in offer.fileno())

    def drop_offers(self) -> None:
        with self.lock:
            while self.offers:
                self.offers.popleft().close()

    def kill(self) -> None:
        self.broken = True
        if self.popen.poll() is None:
            self.popen.kill()  # children die through PR_SET_PDEATHSIG / --die-with-parent


def discard(server: Server) -> None:
    if server.discarded:
        return
    server.discarded = True
    server.drop_offers()
    if server.rx is not None:
        server.rx.close()
    server.kill()
    server.popen.wait()  # already dead or SIGKILLed: reaping is immediate
    os.close(server.err_fd)
    if server.scratch:
        shutil.rmtree(server.scratch, ignore_errors=True)


def _nproc() -> int:
    """RLIMIT_NPROC for a non-root host's children: it counts every process of our uid."""
    uid = os.getuid()
    count = 0
    for entry in os.scandir("/proc"):
        try:
            if entry.name.isdigit() and entry.stat().st_uid == uid:
                count += 1
        except OSError:
            pass
    return count + NPROC_BUDGET


def interpreter_dirs() -> list[str]:
    import site

    return [sys.prefix, sys.base_prefix, os.path.dirname(os.__file__), *site.getsitepackages()]


def _scratch(spec: ServerSpec, root: bool) -> str:
    """Where the calls' scratch dirs go: a tmpfs inside bubblewrap, else a fresh host dir (on
    /dev/shm when writable: a mkdir + rmdir on a journaled disk costs ~3 ms a call)."""
    if spec.isolated:
        return SCRATCH_IN_SANDBOX
    parent = spec.scratch_root
    if parent is None and os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK | os.X_OK):
        parent = "/dev/shm"
    scratch = tempfile.mkdtemp(prefix="agentloop-sandbox-", dir=parent)
    if root:
        os.chmod(scratch, 0o711)  # children (other uids) may enter their own dir, not list
    return scratch


def _zygote_config(spec: ServerSpec, binds: frozenset[str], scratch: str, ctl_fd: int) -> dict[str, Any]:
    """The zygote's configuration (JSON on its command line; see `_zygote.main`)."""
    root = os.geteuid() == 0
    path = host_path()
    return {
        "path": path,
        "ctl_fd": ctl_fd,
        "scratch": scratch,
        "isolated": spec.isolated,
        "uids": [spec.uids.start, len(spec.uids)] if root else None,
        "nproc": NPROC_BUDGET if root else _nproc(),
        # Only where the interpreter cannot be read by another uid (e.g. pyenv under /root).
        "keep_read": root and not spec.isolated and not others_can_read(interpreter_dirs()),
        "max_processes": spec.max_processes,
        "parent_pid": None if spec.isolated else os.getpid(),
        "preload": _PRELOAD,
        # What Landlock lets a child read besides system dirs (its tool's package is added per call).
        "landlock_ro": _python_roots(path, sorted(binds | frozenset(spec.ro_paths))),
    }


def _reader(ctl: socket.socket) -> socket.socket | None:
    """The control socket again, never blocking (a socket with a timeout polls before it reads):
    offers are read here. None: no offers are read, every call goes through the fork server."""
    try:
        rx = socket.socket(fileno=os.dup(ctl.fileno()))
    except OSError:
        return None
    rx.setblocking(False)
    return rx


def start_server(spec: ServerSpec, binds: frozenset[str]) -> Server:
    """Start a zygote (inside bubblewrap, binding `binds` too, for "isolated")."""
    try:
        host, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    except OSError as exc:
        raise SandboxUnavailableError(f"cannot start the fork server: {exc}") from None
    try:
        err_fd = os.memfd_create("agentloop-zygote-stderr", os.MFD_CLOEXEC)
    except OSError as exc:
        host.close()
        child.close()
        raise SandboxUnavailableError(f"cannot start the fork server: {exc}") from None
    # No process of our uid (a tool, when we are not root) may ptrace us or read our memory.
    set_dumpable(False)
    scratch = _scratch(spec, os.geteuid() == 0)
    cfg = _zygote_config(spec, binds, scratch, child.fileno())
    argv = [os.path.abspath(sys.executable), "-I", "-c", BOOT, _json.dumps_str(cfg)]
    if spec.isolated:
        argv = bwrap_argv(spec.bwrap, cfg["path"], sorted(binds)) + argv
    try:
        popen = subprocess.Popen(
            argv,
            env={**spec.env, "HOME": scratch},
            cwd="/" if spec.isolated else scratch,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err_fd,
            pass_fds=[child.fileno()],
            close_fds=True,
            start_new_session=True,
        )
    except OSError as exc:
        host.close()
        os.close(err_fd)
        raise SandboxUnavailableError(f"cannot start the fork server: {exc}") from None
    finally:
        child.close()
    host.settimeout(2.0)  # sends only block if the zygote is stuck; it is then declared broken
    return Server(
        popen,
        host,
        None if spec.isolated else scratch,
        err_fd,
        binds=binds,
        max_processes=spec.max_processes,
        rx=_reader(host),
    )

"""The fork server ("zygote"): a fresh interpreter that imports the tool modules once and forks one
confined child per call. Single-threaded: one epoll loop over the control socket and a SIGCHLD
wake-up pipe. Started by the host as `python -I -c BOOT CONFIG` (see _protocol.BOOT).
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import gc
import importlib
import inspect
import os
import resource
import selectors
import shutil
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import _json
from ._child import prctl, run_child, spare_main
from ._landlock import abi as landlock_abi
from ._landlock import tool_paths
from ._privs import (
    SeccompUnavailable,
    compile_seccomp,
    kill_uid,
    set_dumpable,
    set_subreaper,
    uid_has_processes,
)
from ._protocol import FRAME_STARTED, FRAME_STATUS, PID

__all__ = ["main", "resolve"]

_CLONE_NEWPID = 0x20000000
_PR_SET_PDEATHSIG = 1
_CAP_SYS_ADMIN = 21
# How long the fork server keeps killing a finished call's uid before it sets the uid aside as
# dirty (retried later): a 500-process fork bomb takes a while to die, more on a busy machine, and
# the outcome waits for it, so that nothing of a call runs once its outcome is in.
_SWEEP_SECONDS = 5.0
_libc = ctypes.CDLL(None, use_errno=True)


def resolve(ref: str) -> Callable[..., Any]:
    """`module:qualname` -> the callable. An object that wraps the function (e.g. a registry's
    tool object that is not itself a function) is unwrapped through `__wrapped__`."""
    module_name, _, qualname = ref.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    while not callable(obj) or (not inspect_function(obj) and hasattr(obj, "__wrapped__")):
        obj = obj.__wrapped__
    return obj  # type: ignore[no-any-return]


def inspect_function(obj: Any) -> bool:
    return inspect.isfunction(obj) or inspect.isbuiltin(obj) or inspect.ismethod(obj)


def _binder(fn: Callable[..., Any]) -> Callable[[dict[str, Any]], dict[str, Any]] | None:
    """The same argument binder the host registered (Enum members, dataclasses, ...)."""
    from .._schema import function_schema

    return function_schema(fn).bind


@dataclass(slots=True)
class _Call:
    id: int
    msg: dict[str, Any]
    status: socket.socket
    fds: tuple[int, int, int]  # result, stdout, stderr memfds
    pid: int = 0
    scratch: str = ""
    killed: str | None = None
    uid: int = 0


@dataclass(slots=True)
class _Spare:
    pid: int
    sock: socket.socket
    known: frozenset[str]  # the tools it inherited, resolved


class _Zygote:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        if not cfg["isolated"]:
            cfg["zygote_pid"] = os.getpid()
        self.max = int(cfg["max_processes"])
        self.ctl = socket.socket(fileno=int(cfg["ctl_fd"]))
        self.ctl.setblocking(False)
        self.tools: dict[str, tuple[Callable[..., Any], Any]] = {}
        self.tool_dirs: dict[str, list[str]] = {}
        self.running: dict[int, _Call] = {}  # by pid
        self.by_id: dict[int, _Call] = {}
        self.queue: collections.deque[_Call] = collections.deque()
        os.makedirs(cfg["scratch"], exist_ok=True)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.ctl, selectors.EVENT_READ, "ctl")
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.wake_r = wake_r
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # the C handler writes to wake_w
        self.sel.register(wake_r, selectors.EVENT_READ, "wake")
        self.own_pidns = self._probe_pidns()
        # One unprivileged uid per running call (when we are root): the call cannot touch the
        # host, the fork server or a sibling, RLIMIT_NPROC applies to it, and every process it
        # leaves behind is found by its uid. A uid goes back to the pool once nothing runs as it.
        start, count = cfg.get("uids") or (0, 0)
        self.free_uids: collections.deque[int] = collections.deque(range(start, start + count))
        self.dirty_uids: set[int] = set()
        self.deferred: list[tuple[int, int, Any]] = []  # call children reaped during a sweep
        # A tmpfs per call, in a mount namespace of its own (~0.2 ms): sized by scratch_mb and
        # invisible to siblings (even to one that kept CAP_DAC_READ_SEARCH).
        self.own_scratch = bool(count) and _has_cap(_CAP_SYS_ADMIN)
        try:
            cfg["seccomp_bpf"] = compile_seccomp(allow_scratch_mount=self.own_scratch)
        except SeccompUnavailable as exc:
            cfg["seccomp_bpf"], cfg["seccomp_error"] = b"", str(exc)
        # Landlock (ABI > 0): each child builds and enters a domain reading only what it needs.
        cfg["landlock"] = landlock_abi() if cfg.get("landlock", True) else 0
        self.spare: _Spare | None = None
        self.closing = False

    @staticmethod
    def _probe_pidns() -> int | None:
        """A PID namespace per call (needs CAP_SYS_ADMIN): when the child exits, the kernel kills
        everything left in it, even processes that escaped the process group with setsid."""
        try:
            fd = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        if _libc.unshare(_CLONE_NEWPID) != 0:
            os.close(fd)
            return None
        if _libc.setns(fd, _CLONE_NEWPID) != 0:  # back to our own namespace for children
            raise OSError(ctypes.get_errno(), "setns failed after the PID-namespace probe")
        return fd

    # --- the loop -----------------------------------------------------------------------------------

    def serve(self) -> None:
        while True:
            for key, _ in self.sel.select():
                if key.data == "ctl":
                    if not self._read_ctl():
                        return self._shutdown()
                else:
                    try:
                        while os.read(self.wake_r, 512):
                            pass
                    except BlockingIOError:
                        pass
                    self._reap()
            if self.deferred:  # children a sweep reaped on the way
                self._reap()

    def _read_ctl(self) -> bool:
        while True:
            try:
                data, fds, _flags, _addr = socket.recv_fds(self.ctl, 1 << 16, 8)
            except BlockingIOError:
                return True
            if not data and not fds:
                return False  # the host closed the control socket (or died)
            try:
                msg = _json.loads(data)
                if msg["op"] == "call" and len(fds) == 4:
                    status = socket.socket(fileno=fds[0])
                    status.setblocking(False)
                    call = _Call(int(msg["id"]), msg, status, (fds[1], fds[2], fds[3]))
                    fds = []
                    self.by_id[call.id] = call
                    self.queue.append(call)
                elif msg["op"] == "kill":
                    self._kill(int(msg["id"]), str(msg.get("reason", "cancelled")))
            except (ValueError, KeyError, TypeError):
                pass  # malformed message from the host: drop it
            finally:
                for fd in fds:
                    os.close(fd)
            self._start_queued()

    def _send(self, call: _Call, frame: bytes) -> None:
        with contextlib.suppress(OSError):  # the host gave up on this call (cancelled): nothing to tell
            call.status.send(frame)

    def _start_queued(self) -> None:
        while self.queue and len(self.running) < self.max:
            if self.dirty_uids:
                self._sweep_dirty()
            if not self.free_uids and self.cfg.get("uids"):
                return  # every uid still has processes alive: wait for them to be swept
            self._start(self.queue.popleft())

    def _start(self, call: _Call) -> None:
        ref = call.msg["ref"]
        try:
            if ref not in self.tools:
                fn = resolve(ref)
                self.tools[ref] = (fn, _binder(fn))
                # What Landlock lets the child read of the tool's own package (once per tool).
                self.tool_dirs[ref] = tool_paths(ref.partition(":")[0])
            if self.cfg["landlock"]:
                call.msg["tool_dirs"] = self.tool_dirs[ref]
            fn, binder = self.tools[ref]
            if self.own_scratch and self.cfg["isolated"]:  # the child mounts its own /scratch
                scratch = self.cfg["scratch"]
            else:
                call.scratch = scratch = os.path.join(self.cfg["scratch"], f"call{call.id}")
                os.mkdir(call.scratch, 0o700)
            if self.own_scratch:
                call.msg["own_scratch"] = True
            if self.free_uids:
                call.uid = call.msg["uid"] = self.free_uids.popleft()
            gc.freeze()  # children then never touch (copy) the zygote's objects in their GC runs
        except Exception as exc:
            return self._finish(call, {"error": f"cannot load tool {ref!r}: {type(exc).__name__}: {exc}"})
        pid = self._from_spare(call)
        if pid is None:
            pid = self._fork()
            if pid == 0:
                run_child(call.msg, call.fds, scratch, fn, binder, self.cfg)
        if pid < 0:
            self._release_uid(call)
            return self._finish(call, {"error": "fork failed (the host is out of processes or memory)"})
        for fd in call.fds:
            os.close(fd)
        call.pid = pid
        self.running[pid] = call
        self._send(call, FRAME_STARTED + PID.pack(pid))
        self._fork_spare()

    def _fork(self) -> int:
        """os.fork(), in a fresh PID namespace when we can; -1 if the fork failed."""
        if self.own_pidns is not None:
            _libc.unshare(_CLONE_NEWPID)  # the next fork() is PID 1 of a fresh namespace
        try:
            pid = os.fork()
        except OSError:
            pid = -1
        if pid != 0 and self.own_pidns is not None:
            _libc.setns(self.own_pidns, _CLONE_NEWPID)
        return pid

    def _fork_spare(self) -> None:
        if self.spare is not None or self.closing or len(self.running) >= self.max:
            return
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = self._fork()
        if pid == 0:
            mine.close()
            spare_main(theirs, self.tools, self.cfg)
        theirs.close()
        if pid < 0:
            mine.close()
            return
        self.spare = _Spare(pid, mine, frozenset(self.tools))

    def _from_spare(self, call: _Call) -> int | None:
        """Hand the call to the pre-forked child; None if there is none that knows the tool."""
        spare, self.spare = self.spare, None
        if spare is None:
            return None
        try:
            if call.msg["ref"] in spare.known:
                frame = _json.dumps({"call": call.msg, "scratch": call.scratch or self.cfg["scratch"]})
                socket.send_fds(spare.sock, [frame], list(call.fds))
                return spare.pid
        except OSError:
            pass
        finally:
            spare.sock.close()  # a spare that got no call sees EOF and exits
        return None

    def _kill(self, call_id: int, reason: str) -> None:
        call = self.by_id.get(call_id)
        if call is None:
            return
        if call.pid == 0:  # still queued
            self.queue.remove(call)
            return self._finish(call, {"killed": reason, "queued": True})
        call.killed = call.killed or reason
        for kill in (os.killpg, os.kill):
            with contextlib.suppress(OSError):
                kill(call.pid, signal.SIGKILL)

    def _reap(self) -> None:
        while True:
            if self.deferred:
                self._reaped(*self.deferred.pop())
                continue
            try:
                pid, wstatus, rusage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self._reaped(pid, wstatus, rusage)

    def _reaped(self, pid: int, wstatus: int, rusage: Any) -> None:
        call = self.running.pop(pid, None)
        if call is None:
            if self.spare is not None and self.spare.pid == pid:
                self.spare.sock.close()
                self.spare = None
            return  # a discarded spare, or an orphan re-parented to us (we are a subreaper)
        with contextlib.suppress(OSError):  # the group may be gone already
            os.killpg(pid, signal.SIGKILL)  # whatever the tool left behind in its group
        self._release_uid(call)  # after this, nothing of the call runs (or its uid is set aside)
        status: dict[str, Any] = {"cpu": rusage.ru_utime + rusage.ru_stime, "rss_kb": rusage.ru_maxrss}
        if os.WIFSIGNALED(wstatus):
            status["signal"] = os.WTERMSIG(wstatus)
        else:
            status["exit"] = os.WEXITSTATUS(wstatus)
        if call.killed:
            status["killed"] = call.killed
        self._finish(call, status)

    # --- leftovers: every process a call started dies with the call -----------------------------------

    def _release_uid(self, call: _Call) -> None:
        if call.uid:
            uid, call.uid = call.uid, 0
            if self._sweep(uid):
                self.free_uids.append(uid)
            else:
                self.dirty_uids.add(uid)

    def _sweep(self, uid: int) -> bool:
        """Kill every process still running as `uid` (a setsid daemon, a double fork) and reap the
        ones re-parented to us; True when none is left. With a PID namespace per call the kernel
        already did all of it when the call's PID 1 died. Synchronous, so the call's outcome is
        sent only once nothing of it runs."""
        if self.own_pidns is not None:
            return True
        deadline = time.monotonic() + _SWEEP_SECONDS
        rounds = 0
        while True:
            kill_uid(uid)
            while True:  # orphans come to us (PR_SET_CHILD_SUBREAPER); reap them so they vanish
                try:
                    pid, wstatus, rusage = os.wait4(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == 0:
                    break
                if pid in self.running or (self.spare is not None and self.spare.pid == pid):
                    self.deferred.append((pid, wstatus, rusage))
            if not uid_has_processes(uid):
                return True
            rounds += 1
            if time.monotonic() >= deadline:
                return False
            # the first rounds only yield; then let the kernel finish the exits it has begun
            if rounds < 50:
                os.sched_yield()
            else:
                time.sleep(0.001)

    def _sweep_dirty(self) -> None:
        for uid in list(self.dirty_uids):
            if self._sweep(uid):
                self.dirty_uids.discard(uid)
                self.free_uids.append(uid)

    def _finish(self, call: _Call, status: dict[str, Any]) -> None:
        if call.scratch:
            try:
                os.rmdir(call.scratch)  # the common case: the tool left nothing behind
            except OSError:
                shutil.rmtree(call.scratch, ignore_errors=True)
        if call.pid == 0:
            for fd in call.fds:
                os.close(fd)
        self._send(call, FRAME_STATUS + _json.dumps(status))
        call.status.close()
        self.by_id.pop(call.id, None)
        self._start_queued()

    def _shutdown(self) -> None:
        self.closing = True
        if self.spare is not None:
            self.spare.sock.close()
            self.spare = None
        for call in list(self.queue):
            self._finish(call, {"killed": "closed", "queued": True})
        self.queue.clear()
        for call in list(self.running.values()):
            self._kill(call.id, "closed")
        while self.running:
            if self.deferred:
                pid = self.deferred.pop()[0]
            else:
                try:
                    pid = os.wait4(-1, 0)[0]
                except ChildProcessError:
                    break
            ended = self.running.pop(pid) if pid in self.running else None
            if ended is not None:
                self._release_uid(ended)
                self._finish(ended, {"killed": "closed"})
        shutil.rmtree(self.cfg["scratch"], ignore_errors=True)


def _has_cap(cap: int) -> bool:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> cap & 1)
    return False


def main(cfg: dict[str, Any]) -> None:
    prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # the zygote dies with the host
    set_dumpable(False)  # no same-uid process may ptrace us or read our /proc/<pid>/mem
    set_subreaper()  # a daemonised grandchild comes back to us, not to init: we can reap it
    # Queued calls hold 4 fds each here: use the whole hard limit before refusing any.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if cfg.get("parent_pid") and os.getppid() != cfg["parent_pid"]:
        sys.exit(1)  # the host died before PDEATHSIG was armed
    for name in cfg.get("preload", ()):
        importlib.import_module(name)
    _Zygote(cfg).serve()

"""The fork server ("zygote"): a fresh interpreter that imports the tool modules once and forks one
confined child per call. Single-threaded: one epoll loop over the control socket, a SIGCHLD
wake-up pipe and each running call's done socket. Started by the host as
`python -I -c BOOT CONFIG` (see _protocol.BOOT).

A call's outcome is sent as soon as the child reports its result written (b"D") and every
process of the call has been sent SIGKILL (by its uid, which reaches a setsid daemon too, or its
process group): none of them runs another instruction. Reaping them, tearing down their
namespaces and freeing the call's uid and scratch is bookkeeping that follows, off the call's
critical path (measured: ~3 ms of a ~5 ms call under load, mostly the exit of the child).
"""

from __future__ import annotations

import collections
import contextlib
import gc
import importlib
import os
import resource
import selectors
import shutil
import signal
import socket
import sys
import time
from typing import Any

from .. import _json
from ._child import prctl
from ._forking import Call, Forker, Spares, Tool, close_quietly, load_tool, make_dir, probe_pidns, remove_dir
from ._landlock import abi as landlock_abi
from ._landlock import tool_paths
from ._offers import Offers
from ._privs import CAP_SYS_ADMIN, SeccompUnavailable, compile_seccomp, has_cap, set_dumpable, set_subreaper
from ._protocol import DONE, FRAME_QUEUED, FRAME_STARTED, FRAME_STATUS, PID
from ._uids import UidPool

__all__ = ["main"]

_PR_SET_PDEATHSIG = 1
# Spare children are forked when the zygote is otherwise idle: once a call's outcome is sent, or
# this long after a call took a spare (a long call), so that the fork (~0.5-1.5 ms of the
# zygote's time) does not delay the outcome of a short call.
_SPARE_DELAY = 0.005
# Two: back-to-back calls then find one that has finished confining itself (seccomp, Landlock,
# mount namespace: ~1 ms), not the one forked after the previous outcome.
_SPARES = 2
_SWEEP_EVERY = 0.002  # seconds between sweeps of uids whose processes are still dying
# A call started at once is reported started ("P": its pid) only if it still runs this much later;
# a shorter one's pid comes with its outcome. One wake-up of the host less per short call.
_REPORT_AFTER = 0.002


class _Zygote:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        if not cfg["isolated"]:
            cfg["zygote_pid"] = os.getpid()
        self.max = int(cfg["max_processes"])
        self.ctl = socket.socket(fileno=int(cfg["ctl_fd"]))
        self.ctl.setblocking(False)
        self.tools: dict[str, Tool] = {}
        self.tool_dirs: dict[str, list[str]] = {}
        self.running: dict[int, Call] = {}  # by pid, until reaped
        self.by_id: dict[int, Call] = {}  # until finished
        self.queue: collections.deque[Call] = collections.deque()
        self.unreported: collections.deque[Call] = collections.deque()  # started, no "P" sent yet
        os.makedirs(cfg["scratch"], exist_ok=True)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.ctl, selectors.EVENT_READ, "ctl")
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.wake_r = wake_r
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # the C handler writes to wake_w
        self.sel.register(wake_r, selectors.EVENT_READ, "wake")
        pidns = probe_pidns()
        start, count = cfg.get("uids") or (0, 0)
        self.uids = UidPool(start, count, namespaced=pidns is not None)
        # A tmpfs per call, in a mount namespace of its own (~0.2 ms): sized by scratch_mb and
        # invisible to siblings (even to one that kept CAP_DAC_READ_SEARCH).
        cfg["own_scratch"] = bool(count) and has_cap(CAP_SYS_ADMIN)
        try:
            cfg["seccomp_bpf"] = compile_seccomp(allow_scratch_mount=cfg["own_scratch"])
        except SeccompUnavailable as exc:
            cfg["seccomp_bpf"], cfg["seccomp_error"] = b"", str(exc)
        # Landlock (ABI > 0): each child builds and enters a domain reading only what it needs.
        cfg["landlock"] = landlock_abi() if cfg.get("landlock", True) else 0
        self.spares = Spares(Forker(cfg, pidns))
        self.offers = Offers(self.spares, self.ctl, self.sel, self.by_id)  # the host hands them calls
        self.queued = False  # a call waited for a slot: spares of our own are kept for such calls
        self.scratch_mb: int | None = None  # the last call's: the size the next spares mount
        self.spare_at: float | None = None  # when to fork the next spare
        self.next_sweep = 0.0
        self.closing = False

    # --- the loop -----------------------------------------------------------------------------------

    def serve(self) -> None:
        while True:
            for key, _ in self.sel.select(self._timeout()):
                if isinstance(key.data, Call):
                    self._take(key.data)
                    self._done(key.data)
                elif key.data == "ctl":
                    if not self._read_ctl():
                        return self._shutdown()
                else:
                    with contextlib.suppress(BlockingIOError):
                        while os.read(self.wake_r, 512):
                            pass
                    self._reap()
            self._housekeeping()

    def _timeout(self) -> float | None:
        waits = []
        if self.uids.dirty:
            waits.append(_SWEEP_EVERY)
        if self.spare_at is not None and self._short_of_spares():
            waits.append(self.spare_at - time.monotonic())
        if self.unreported:
            waits.append(self.unreported[0].report_at - time.monotonic())
        return max(0.0, min(waits)) if waits else None

    def _housekeeping(self) -> None:
        """What waits for an idle moment: reporting long calls started, sweeping dying uids,
        forking the next spare."""
        now = time.monotonic()
        while self.unreported and (self.unreported[0].finished or self.unreported[0].report_at <= now):
            call = self.unreported.popleft()
            if not call.finished:
                self._report(call)
        if self.uids.dirty and now >= self.next_sweep:
            self.next_sweep = now + _SWEEP_EVERY
            self.uids.sweep()
            self._start_queued()
        if self.spare_at is not None and now >= self.spare_at:
            self.spare_at = None
            if self._short_of_spares() and not self.closing and self.tools and len(self.running) < self.max:
                self._fork_spare(now)

    def _short_of_spares(self) -> bool:
        """Offers to the host first; spares of our own only once a call queued for a slot (the
        host hands a call to an offer only while a slot is free)."""
        return len(self.offers) < _SPARES or (self.queued and len(self.spares.ready) < _SPARES)

    def _fork_spare(self, now: float) -> None:
        """One fork per pass (a call may be waiting), with the uid its call will run as."""
        uid = self.uids.take()
        if self.uids.enabled and not uid:
            return  # every uid is in use or still dying: forked after the next sweep
        if len(self.offers) < _SPARES:
            dirs = self.tool_dirs if self.cfg["landlock"] else {}
            used = self.offers.offer(self.tools, dirs, uid, self.scratch_mb)
        else:
            used = self.spares.fork(self.tools, uid, self.scratch_mb)
        if not used:
            if uid:
                self.uids.free.appendleft(uid)  # no process ever ran as it
        elif self._short_of_spares():
            self.spare_at = now

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
                for sid in msg.get("took") or ():  # offers the host handed calls to, since its last
                    self._take(self.by_id.get(-int(sid)))
                if msg["op"] == "call" and len(fds) == 4:
                    status = socket.socket(fileno=fds[0])
                    status.setblocking(False)
                    call = Call(int(msg["id"]), msg, status, (fds[1], fds[2], fds[3]))
                    fds = []
                    self.by_id[call.id] = call
                    self.queue.append(call)
                    self._start_queued()
                    if call.pid == 0 and not call.finished:  # waits for a slot: its timeout too
                        call.waited = self.queued = True
                        self._send(call, FRAME_QUEUED)
                elif msg["op"] == "kill":
                    self._kill(int(msg["id"]), str(msg.get("reason", "cancelled")))
            except (ValueError, KeyError, TypeError):
                pass  # malformed message from the host: drop it
            finally:
                for fd in fds:
                    os.close(fd)
            self._start_queued()

    # --- starting a call ----------------------------------------------------------------------------

    def _start_queued(self) -> None:
        while self.queue and len(self.running) < self.max:
            if self.uids.exhausted():
                return  # every uid still has processes dying: wait for the sweep
            self._start(self.queue.popleft())

    def _prepare(self, call: Call) -> Tool:
        """The tool (imported once), and what Landlock lets the child read of it."""
        ref = call.msg["ref"]
        if ref not in self.tools:
            self.tools[ref] = load_tool(ref)
            # What Landlock lets the child read of the tool's own package (once per tool).
            self.tool_dirs[ref] = tool_paths(ref.partition(":")[0])
        if self.cfg["landlock"]:
            call.msg["tool_dirs"] = self.tool_dirs[ref]
        gc.freeze()  # children then never touch (copy) the zygote's objects in their GC runs
        return self.tools[ref]

    def _scratch(self, call: Call) -> str:
        """The call's scratch: a tmpfs of its own that its child mounts over our scratch dir, in
        its own mount namespace ("own_scratch"), else a dir of its own in it, owned by its uid."""
        if self.cfg["own_scratch"]:
            return str(self.cfg["scratch"])
        call.scratch = make_dir(self.cfg["scratch"], f"call{call.id}", call.uid)
        return call.scratch

    def _start(self, call: Call) -> None:
        try:
            tool = self._prepare(call)
        except Exception as exc:
            why = f"cannot load tool {call.msg['ref']!r}: {type(exc).__name__}: {exc}"
            return self._finish(call, {"error": why})
        if self.cfg["own_scratch"]:
            self.scratch_mb = call.msg["limits"].get("scratch_mb")
        try:
            pid, done = self.spares.take(call, self.scratch_mb)
            if pid < 0:
                call.uid = call.msg["uid"] = self.uids.take()
                pid, done = self.spares.forker.fresh(call, tool, self._scratch(call))
        except OSError as exc:
            return self._finish(call, {"error": f"cannot make the call's scratch dir: {exc}"})
        if pid < 0:
            return self._finish(call, {"error": "fork failed (the host is out of processes or memory)"})
        for fd in call.fds:
            os.close(fd)
        call.pid, call.done = pid, done
        if done is not None:
            done.setblocking(False)
            self.sel.register(done, selectors.EVENT_READ, call)
        self.running[pid] = call
        if call.waited:
            self._report(call)  # the host's timeout starts now
        else:
            call.report_at = time.monotonic() + _REPORT_AFTER
            self.unreported.append(call)
        if self.spare_at is None:
            self.spare_at = time.monotonic() + _SPARE_DELAY

    # --- ending a call ------------------------------------------------------------------------------

    def _done(self, call: Call) -> None:
        """The child says its result is written (or closed its socket: its reaping will tell)."""
        try:
            data = call.done.recv(16) if call.done is not None else b""
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data[:1] == DONE and not call.finished:
            self._contain(call)
            self._finish(call, {"done": True})
        self._forget_done(call)  # after the outcome: bookkeeping, off the call's path

    def _kill(self, call_id: int, reason: str) -> None:
        """The host's timeout or cancellation."""
        call = self.by_id.get(call_id)
        if call is None:
            return
        self._take(call)
        if call.pid == 0:  # still queued
            self.queue.remove(call)
            return self._finish(call, {"killed": reason, "queued": True})
        call.killed = reason
        self._contain(call)
        self._finish(call, {"killed": reason})

    def _contain(self, call: Call, *, reaped: bool = False) -> None:
        """SIGKILL every process of the call, synchronously: its process (and group), then its
        uid, which reaches the rest (a setsid daemon, a process forking right now: the kernel
        refuses a fork whose parent has a kill pending). None of them runs another instruction."""
        if not reaped:  # a reaped pid may already name another process
            with contextlib.suppress(OSError):
                os.kill(call.pid, signal.SIGKILL)
        if call.uid:
            self.uids.kill(call.uid)
        else:  # not root: what the tool left in its process group (the table says what escapes)
            with contextlib.suppress(OSError):
                os.killpg(call.pid, signal.SIGKILL)

    def _reap(self) -> None:
        while True:
            try:
                pid, wstatus, rusage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self._reaped(pid, wstatus, rusage)

    def _reaped(self, pid: int, wstatus: int, rusage: Any) -> None:
        call = self.running.pop(pid, None) or self.offers.taken(pid)
        if call is None:
            uid, scratch = self.spares.reaped(pid)
            self.uids.release(uid)
            remove_dir(scratch)
            return  # a discarded spare, or an orphan re-parented to us (we are a subreaper)
        if not call.finished:  # it ended without saying "done": exit status, crash, limit
            self._contain(call, reaped=True)
            status: dict[str, Any] = {"cpu": rusage.ru_utime + rusage.ru_stime, "rss_kb": rusage.ru_maxrss}
            if os.WIFSIGNALED(wstatus):
                status["signal"] = os.WTERMSIG(wstatus)
            else:
                status["exit"] = os.WEXITSTATUS(wstatus)
            self._finish(call, status)
        self._forget_done(call)
        self.uids.release(call.uid)
        call.uid = 0
        call.drop_scratch()
        self._start_queued()
        self.spare_at = self.spare_at or time.monotonic()  # a slot is free: spares may be forked

    def _take(self, call: Call | None) -> None:  # an offer has a call (or ended): it is a call
        if call is not None and self.offers.taken(call.pid) is not None:
            self.running[call.pid] = call

    def _finish(self, call: Call, status: dict[str, Any]) -> None:
        """Send the outcome. A call that never ran gives its fds, scratch and uid back now."""
        call.finished = True
        if call.pid > 0 and not call.reported:
            status["pid"] = call.pid  # on_started(pid) was not called yet
        if call.pid <= 0:
            for fd in call.fds:
                os.close(fd)
            call.drop_scratch()
            if call.uid:
                self.uids.free.appendleft(call.uid)  # no process ever ran as it
                call.uid = 0
        self._send(call, FRAME_STATUS + _json.dumps(status))
        call.status.close()
        self.by_id.pop(call.id, None)
        self.spare_at = time.monotonic()  # idle from here on: the next spare can be forked
        if call.pid <= 0:
            self._start_queued()

    def _report(self, call: Call) -> None:
        call.reported = True
        self._send(call, FRAME_STARTED + PID.pack(call.pid))

    def _send(self, call: Call, frame: bytes) -> None:
        with contextlib.suppress(OSError):  # the host gave up on this call (cancelled): nothing to tell
            call.status.send(frame)

    def _forget_done(self, call: Call) -> None:
        if call.done is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(call.done)
            close_quietly(call.done)
            call.done = None

    def _shutdown(self) -> None:
        self.closing = True
        self.spares.close()
        for offered in list(self.offers.by_pid.values()):
            self._take(offered)  # killed and reaped below, as the calls they may have
        for call in list(self.queue):
            self._finish(call, {"killed": "closed", "queued": True})
        self.queue.clear()
        for call in list(self.running.values()):
            if not call.finished:
                call.killed = "closed"
                self._contain(call)
                self._finish(call, {"killed": "closed"})
        while self.running:
            try:
                pid, wstatus, rusage = os.wait4(-1, 0)
            except ChildProcessError:
                break
            self._reaped(pid, wstatus, rusage)
        shutil.rmtree(self.cfg["scratch"], ignore_errors=True)


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

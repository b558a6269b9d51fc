"""What the fork server forks: a call's child (from a spare forked ahead of time, else a fresh
fork), in a PID namespace of its own where it can; and how it finds a tool by its reference."""

from __future__ import annotations

import collections
import contextlib
import ctypes
import importlib
import inspect
import os
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import _json
from ._child import run_child, spare_main

__all__ = ["Call", "Spare", "Spares", "Forker", "resolve", "Tool"]

_CLONE_NEWPID = 0x20000000
_libc = ctypes.CDLL(None, use_errno=True)
Tool = tuple[Callable[..., Any], Any]  # the function, and its argument binder


def resolve(ref: str) -> Callable[..., Any]:
    """`module:qualname` -> the callable. An object that wraps the function (e.g. a registry's
    tool object that is not itself a function) is unwrapped through `__wrapped__`."""
    module_name, _, qualname = ref.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    while not callable(obj) or (not _is_function(obj) and hasattr(obj, "__wrapped__")):
        obj = obj.__wrapped__
    return obj  # type: ignore[no-any-return]


def _is_function(obj: Any) -> bool:
    return inspect.isfunction(obj) or inspect.isbuiltin(obj) or inspect.ismethod(obj)


def load_tool(ref: str) -> Tool:
    """The function and the same argument binder the host registered (Enum members, dataclasses)."""
    from .._schema import function_schema

    fn = resolve(ref)
    return fn, function_schema(fn).bind


@dataclass(slots=True, eq=False)
class Call:
    """One call, from its message to its reaping."""

    id: int
    msg: dict[str, Any]
    status: socket.socket  # to the host
    fds: tuple[int, ...]  # result, stdout, stderr memfds (none for an offered spare's call)
    pid: int = 0
    scratch: str = ""
    killed: str | None = None
    uid: int = 0
    done: socket.socket | None = None  # from the child: b"D" once its result is written
    finished: bool = False  # its outcome was sent (its processes may still be being reaped)
    waited: bool = False  # queued for a slot: the host was told ("Q"), and is told when it starts
    reported: bool = False  # "P" (started, its pid) sent
    report_at: float = 0.0  # when to send "P" if it still runs (a call started at once)

    def drop_scratch(self) -> None:
        remove_dir(self.scratch)
        self.scratch = ""


@dataclass(slots=True)
class Spare:
    pid: int
    sock: socket.socket  # hands it a call; then carries its b"D"
    known: frozenset[str]  # the tools it inherited, resolved
    uid: int  # the uid its call will run as (0: none, the host is not root)
    scratch_mb: int | None  # the size of the scratch tmpfs it mounted ("own_scratch")
    scratch: str  # its call's scratch dir, entered already


class Forker:
    """Forks children of the fork server, each PID 1 of a fresh PID namespace when `pidns` (an
    fd of our own namespace, to come back to) is given: when that child dies, the kernel kills
    everything left in the namespace, even processes that escaped the group with setsid."""

    def __init__(self, cfg: dict[str, Any], pidns: int | None) -> None:
        self.cfg = cfg
        self.pidns = pidns

    def fork(self) -> int:
        """os.fork(), in a fresh PID namespace when we can; -1 if the fork failed."""
        if self.pidns is not None:
            _libc.unshare(_CLONE_NEWPID)  # the next fork() is PID 1 of a fresh namespace
        try:
            pid = os.fork()
        except OSError:
            pid = -1
        if pid != 0 and self.pidns is not None:
            _libc.setns(self.pidns, _CLONE_NEWPID)
        return pid

    def spare(self, tools: dict[str, Tool], uid: int, scratch_mb: int | None, scratch: str) -> Spare | None:
        """A child forked ahead of time, confining itself while it waits for a call (that will
        run as `uid` in `scratch`, a tmpfs of `scratch_mb` with "own_scratch")."""
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = self.fork()
        if pid == 0:
            mine.close()
            spare_main(theirs, tools, self.cfg, (uid, scratch_mb, scratch))
        theirs.close()
        if pid < 0:
            mine.close()
            return None
        return Spare(pid, mine, frozenset(tools), uid, scratch_mb, scratch)

    def hand_to(self, spare: Spare, call: Call, fits: bool) -> bool:
        """Give the call to the spare; False if it does not `fit` the call (its scratch size) or
        know the tool (it is then dropped: it sees EOF and exits)."""
        try:
            if fits and call.msg["ref"] in spare.known:
                frame = _json.dumps({"call": call.msg, "scratch": spare.scratch})
                socket.send_fds(spare.sock, [frame], list(call.fds))
                return True
        except OSError:
            pass
        spare.sock.close()
        return False

    def fresh(self, call: Call, tool: Tool, scratch: str) -> tuple[int, socket.socket | None]:
        """A child forked now for the call: its pid (-1 if the fork failed) and its done socket."""
        try:
            mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        except OSError:
            return -1, None
        pid = self.fork()
        if pid == 0:
            mine.close()
            run_child(call.msg, (call.fds[0], call.fds[1], call.fds[2]), scratch, tool, self.cfg, done=theirs)
        theirs.close()
        if pid < 0:
            mine.close()
            return -1, None
        return pid, mine


class Spares:
    """The spare children not handed a call yet, oldest (most ready) first, and the uid and
    scratch dir each holds until it is handed one or reaped."""

    def __init__(self, forker: Forker) -> None:
        self.forker = forker
        self.own_scratch = bool(forker.cfg["own_scratch"])
        self.ready: collections.deque[Spare] = collections.deque()
        self.held: dict[int, tuple[int, str]] = {}  # pid -> uid, scratch dir
        self.made = 0

    def fork(self, tools: dict[str, Tool], uid: int, scratch_mb: int | None) -> bool:
        """One more spare, to run its call as `uid` in its scratch (without "own_scratch": a dir
        of its own, made here, that uid's); False if none could be made (`uid` was not used)."""
        scratch = str(self.forker.cfg["scratch"])
        try:
            if not self.own_scratch:
                self.made += 1
                scratch = make_dir(scratch, f"spare{self.made}", uid)
            spare = self.forker.spare(tools, uid, scratch_mb, scratch)
        except OSError:
            spare = None
        if spare is None:
            if not self.own_scratch:
                remove_dir(scratch)
            return False
        self.ready.append(spare)
        self.held[spare.pid] = (uid, "" if self.own_scratch else scratch)
        return True

    def take(self, call: Call, scratch_mb: int | None) -> tuple[int, socket.socket | None]:
        """Hand the call to the oldest spare that fits it (same scratch size, knows the tool): it
        runs it as its uid, in its scratch. The others are dropped (they see EOF and exit; their
        uids and scratch dirs come back when they are reaped). (-1, None) if none is left."""
        while self.ready:
            spare = self.ready.popleft()
            fits = not self.own_scratch or spare.scratch_mb == scratch_mb
            call.uid = call.msg["uid"] = spare.uid
            if self.forker.hand_to(spare, call, fits):
                _uid, call.scratch = self.held.pop(spare.pid)  # the call's now
                return spare.pid, spare.sock
            call.uid = 0
        return -1, None

    def reaped(self, pid: int) -> tuple[int, str]:
        """A spare (or an orphan) `pid` was reaped: the uid and scratch dir it held, if any."""
        for spare in [s for s in self.ready if s.pid == pid]:
            spare.sock.close()
            self.ready.remove(spare)
        return self.held.pop(pid, (0, ""))

    def close(self) -> None:
        while self.ready:
            self.ready.popleft().sock.close()


def probe_pidns() -> int | None:
    """A PID namespace per call needs CAP_SYS_ADMIN: an fd of our own namespace if we can."""
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


def make_dir(parent: str, name: str, uid: int) -> str:
    """A scratch dir of one call's (or spare's) own: mode 0700, its uid's."""
    path = os.path.join(parent, name)
    os.mkdir(path, 0o700)
    if uid:
        os.chown(path, uid, uid)
    return path


def remove_dir(path: str) -> None:
    if path:
        try:
            os.rmdir(path)  # the common case: the tool left nothing behind
        except OSError:
            shutil.rmtree(path, ignore_errors=True)


def close_quietly(sock: socket.socket | None) -> None:
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.close()

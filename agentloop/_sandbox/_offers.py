"""Offered spares: spare children the fork server hands to the host before any call, so that the
host gives a call straight to one. The call's path then crosses three wake-ups (host -> spare,
spare -> fork server "D", fork server -> host "S") instead of four: the fork server's wake-up to
take the call and hand it over is gone (measured in benchmarks/README.md, bench_sandbox).

What stays with the fork server: the outcome. The host reads it only from the status socket,
whose other end only the fork server holds, and the fork server sends it only after it has
SIGKILLed the spare's pid and every process of its uid, as for any call. What the host gets, on
the control socket (see `_protocol`): the spare's pid, the tools it knows, its scratch size, and
the host ends of its call socket and status socket, and the call's three memfds (the spare
holds the same three). Each is the spare's alone, made just before (or, the status socket, just
after) its fork; the fork server keeps none of them but the status socket's own end.

The call socket carries one message, host -> spare, before the spare has dropped root: the spare
reads it with a plain recv (an fd sent along is dropped by the kernel, never installed), closes
it at once, and takes its uid, scratch and Landlock dirs from the fork server, not from the
message. A tool therefore holds no end of either socket; like any call it holds only its memfds
and its done socket (which can end only its own call).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import selectors
import signal
import socket
from typing import Any

from .. import _json
from ._child import spare_main
from ._forking import Call, Spares, Tool, make_dir, remove_dir

__all__ = ["Offers"]


class Offers:
    """The spares offered to the host and not yet known to have been handed a call, by pid. Each
    is a `Call` already (id -sid; its status socket, done socket, uid and scratch), so that its
    call's end is the fork server's usual one."""

    def __init__(
        self, spares: Spares, ctl: socket.socket, sel: selectors.BaseSelector, by_id: dict[int, Call]
    ) -> None:
        self.spares = spares  # holds the uid and scratch of a spare never offered, until reaped
        self.forker = spares.forker
        self.ctl = ctl
        self.sel = sel  # the fork server's: an offer's done socket is watched from the start
        self.by_id = by_id  # the fork server's calls by id: an offer's is -sid
        self.by_pid: dict[int, Call] = {}
        self.sids = itertools.count(1)
        self.made = 0

    def __len__(self) -> int:
        return len(self.by_pid)

    def taken(self, pid: int) -> Call | None:
        """The offered spare `pid`, no longer an offer: the host handed it a call (it said so,
        the spare said "done", the host killed it, or it was reaped)."""
        return self.by_pid.pop(pid, None)

    def offer(
        self, tools: dict[str, Tool], tool_dirs: dict[str, list[str]], uid: int, scratch_mb: int | None
    ) -> bool:
        """Fork a spare and offer it to the host; whether `uid` is in use (by the offer, or by a
        spare forked but not offered, killed: held until it is reaped)."""
        scratch = str(self.forker.cfg["scratch"])
        own = bool(self.forker.cfg["own_scratch"])
        sid = next(self.sids)
        try:
            if not own:
                self.made += 1
                scratch = make_dir(scratch, f"offer{self.made}", uid)
            made = self._fork(sid, tools, tool_dirs, (uid, scratch_mb, scratch))
        except OSError:
            made = None
        if made is None:
            if not own:
                remove_dir(scratch)
            return False
        if isinstance(made, int):  # forked, but the host could not be told: killed, reaped later
            self.spares.held[made] = (uid, "" if own else scratch)
            return True
        pid, done, status = made
        call = Call(-sid, {}, status, (), pid=pid, uid=uid, done=done, reported=True)
        call.scratch = "" if own else scratch
        self.by_pid[pid] = self.by_id[call.id] = call
        self.sel.register(done, selectors.EVENT_READ, call)
        return True

    def _fork(
        self,
        sid: int,
        tools: dict[str, Tool],
        tool_dirs: dict[str, list[str]],
        ahead: tuple[int, int | None, str],
    ) -> tuple[int, socket.socket, socket.socket] | int | None:
        """The spare, and the host told of it: (pid, done socket, status socket); its pid alone
        if it was forked but could not be offered (it is killed)."""
        held: list[Any] = []
        try:
            memfds: list[int] = []
            for name in ("result", "stdout", "stderr"):
                memfds.append(os.memfd_create(f"agentloop-{name}", os.MFD_CLOEXEC))
                held.append(memfds[-1])
            call_h, call_s = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            done_z, done_s = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            held += [call_h, call_s, done_z, done_s]
            pid = self.forker.fork()
            if pid == 0:
                call_h.close()
                done_z.close()
                fds3 = (memfds[0], memfds[1], memfds[2])
                spare_main(done_s, tools, self.forker.cfg, ahead, direct=(call_s, fds3, tool_dirs))
            if pid < 0:
                return None
            try:
                status_z, status_h = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            except OSError:
                os.kill(pid, signal.SIGKILL)
                return pid
            held.append(status_h)
            if not self._tell(sid, pid, tools, ahead[1], [call_h, status_h, *memfds]):
                os.kill(pid, signal.SIGKILL)  # never offered: the uid and scratch wait for its reaping
                status_z.close()
                return pid
            held.remove(done_z)
            return pid, done_z, status_z
        finally:
            _close(*held)

    def _tell(
        self, sid: int, pid: int, tools: dict[str, Tool], scratch_mb: int | None, fds: list[Any]
    ) -> bool:
        """The offer, on the control socket; False if the host cannot take it now."""
        sized = bool(self.forker.cfg["own_scratch"])
        msg = {
            "op": "spare",
            "sid": sid,
            "pid": pid,
            "tools": sorted(tools),
            "scratch_mb": scratch_mb,
            "sized": sized,
        }
        fileno = [f if isinstance(f, int) else f.fileno() for f in fds]
        try:
            socket.send_fds(self.ctl, [_json.dumps(msg)], fileno)
        except OSError:
            return False
        return True

    def close(self) -> None:
        """The fork server stops: kill every spare still on offer (the host may hold its sockets)."""
        for pid in self.by_pid:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def _close(*things: Any) -> None:
    for thing in things:
        if thing is None:
            continue
        with contextlib.suppress(OSError):
            if isinstance(thing, int):
                os.close(thing)
            else:
                thing.close()

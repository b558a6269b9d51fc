"""The host's side of offered spares (`_offers` is the fork server's): read the offers, pick one
that fits a call, hand the call over.

Nothing here runs in the background: a call reads whatever offers have arrived (a non-blocking
read of the control socket) when it starts, under the server's lock, so any number of calls on
any number of event loops and threads share them. A call the host hands to an offer counts as
running in the fork server from its next control message on (`Server.send` carries the sids),
and the host hands one over only while its own calls in flight on that server, this one
included, are at most `max_processes`: past that, calls go through the fork server and queue.
"""

from __future__ import annotations

import array
import contextlib
import os
import socket
from dataclasses import dataclass
from typing import Any

from .. import _json
from ._classify import Memfds
from ._outcome import Limits
from ._server import Server

__all__ = ["Offer", "take_offer", "hand_over", "write_arguments"]

_FDS = 5  # call socket, status socket, result / stdout / stderr memfds


@dataclass(slots=True, eq=False)
class Offer:
    """A spare the fork server offered: the host ends of its call and status sockets and the
    call's memfds."""

    sid: int
    pid: int
    tools: frozenset[str]
    scratch_mb: int | None
    sized: bool  # its scratch is a tmpfs of `scratch_mb` (resized by the spare for a call of another)
    call: socket.socket
    status: socket.socket
    fds: Memfds

    def fits(self, ref: str) -> bool:
        """It knows the tool. Any scratch size fits: the spare, still root when the call comes,
        resizes its tmpfs first (cheaper than a discard and a fork on the call's path)."""
        return ref in self.tools

    def fileno(self) -> tuple[int, ...]:
        return (self.call.fileno(), self.status.fileno(), self.fds.result, self.fds.stdout, self.fds.stderr)

    def close(self) -> None:
        """Discard: the spare sees its call socket close and exits (the fork server reaps it)."""
        for sock in (self.call, self.status):
            with contextlib.suppress(OSError):
                sock.close()
        with contextlib.suppress(OSError):
            self.fds.close()


def take_offer(server: Server, ref: str, limits: Limits) -> Offer | None:
    """An offer that fits the call, now the host's to hand it to; None: go through the fork
    server (no offer fits, or `max_processes` calls are in flight). Offers that do not know the
    tool are discarded (forked before the fork server loaded it): the fork server offers new
    ones, which know it."""
    if server.rx is None or server.inflight > server.max_processes:
        return None
    with server.lock:
        _read_offers(server)
        while server.offers:
            offer: Offer = server.offers.popleft()
            if offer.fits(ref):
                server.took.append(offer.sid)  # before the call is handed over: see the docstring
                return offer
            offer.close()
    return None


def _read_offers(server: Server) -> None:
    assert server.rx is not None
    while True:
        try:
            data, fds = _recv_cloexec(server.rx)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            server.broken = True
            return
        if not data and not fds:
            return  # the fork server is gone: its calls will say so
        offer = _offer(data, fds)
        if offer is None:
            for fd in fds:
                os.close(fd)
        else:
            server.offers.append(offer)


def _recv_cloexec(sock: socket.socket) -> tuple[bytes, list[int]]:
    """One message and its fds, close-on-exec from the start: no program the host starts
    inherits an offer. (`socket.recv_fds` drops its `flags` argument on Python 3.11.)"""
    data, ancillary, _flags, _addr = sock.recvmsg(
        1 << 12, socket.CMSG_SPACE(_FDS * 4), socket.MSG_CMSG_CLOEXEC
    )
    fds = array.array("i")
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    return data, list(fds)


def _offer(data: bytes, fds: list[int]) -> Offer | None:
    try:
        msg: dict[str, Any] = _json.loads(data)
        if msg.get("op") != "spare" or len(fds) != _FDS:
            return None
        mb = msg.get("scratch_mb")
        sid, pid, tools = int(msg["sid"]), int(msg["pid"]), frozenset(map(str, msg["tools"]))
        sized, scratch_mb = bool(msg.get("sized")), None if mb is None else int(mb)
    except (ValueError, TypeError, KeyError):
        return None
    call, status = socket.socket(fileno=fds[0]), socket.socket(fileno=fds[1])
    call.setblocking(False)
    status.setblocking(False)
    return Offer(sid, pid, tools, scratch_mb, sized, call, status, Memfds(fds[2], fds[3], fds[4]))


def write_arguments(fd: int, arguments: dict[str, Any]) -> None:
    """The arguments go into the result memfd; the child reads, then empties it."""
    data = _json.dumps(arguments)
    written = 0
    while written < len(data):
        written += os.pwrite(fd, data[written:], written)


def hand_over(server: Server, offer: Offer, ref: str, arguments: dict[str, Any], limits: Limits) -> bool:
    """The call, to the offered spare, on its own socket, which then closes: it carries this one
    call only. False if the spare is gone (nothing of the call ran: try another way)."""
    try:
        write_arguments(offer.fds.result, arguments)
        offer.call.send(_json.dumps({"ref": ref, "limits": limits.to_wire()}))
    except OSError:
        return False
    finally:
        offer.call.close()
    server.handed += 1
    return True

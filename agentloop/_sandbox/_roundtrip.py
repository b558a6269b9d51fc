"""One call on a running fork server, from the host's side: its fds, the call message, the wait
for the zygote's frames (with the timeout armed once the child runs), the kill, the outcome.

No background task and no loop-bound object: every call owns a socketpair and three memfds and
awaits its own socket, so one sandbox serves any number of event loops, on asyncio and trio.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable
from typing import Any

import anyio

from .. import _json
from ._classify import Memfds, classify, unavailable
from ._handover import Offer, hand_over, take_offer, write_arguments
from ._outcome import DEFAULT_TIMEOUT, Limits, SandboxOutcome
from ._protocol import FRAME_QUEUED, FRAME_STARTED, FRAME_STATUS, PID
from ._server import Server

__all__ = ["call_on", "wait_readable"]

# anyio >= 4.7 (see pyproject) waits on a raw fd (the pidfd) as well as on a socket.
wait_readable = anyio.wait_readable
KILL_GRACE = 5.0  # seconds the zygote gets to confirm a kill before it is killed itself
_TRANSIENT = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EAGAIN, errno.ENOBUFS}
_SETUP_PATIENCE = 60.0  # seconds a call waits for fds that other calls of this sandbox hold


async def call_on(
    server: Server,
    ref: str,
    arguments: dict[str, Any],
    limits: Limits,
    on_started: Callable[[int], None] | None,
    *,
    others_running: Callable[[], bool],
) -> SandboxOutcome:
    """Run one call on `server`; every failure is an outcome. `others_running()` says whether
    other calls of the sandbox hold fds that they will free (then a call out of fds waits).
    A spare the fork server offered takes the call straight from us when one fits."""
    while (offer := take_offer(server, ref, limits)) is not None:
        outcome = await _call_offer(server, offer, ref, arguments, limits, on_started)
        if outcome is not None:
            return outcome
    made = await _call_fds(others_running)
    if isinstance(made, SandboxOutcome):
        return made
    mine, theirs, fds = made
    try:
        call_id = next(server.ids)
        try:
            _send_call(server, call_id, ref, arguments, limits, theirs, fds)
        except OSError as exc:
            server.broken = True
            return unavailable(f"the fork server does not accept calls: {exc}")
        finally:
            theirs.close()
        mine.setblocking(False)
        timeout = limits.timeout or DEFAULT_TIMEOUT
        waited = await _wait(server, call_id, mine, timeout, on_started)
        return _conclude(server, waited, limits, fds)
    finally:
        mine.close()
        fds.close()


async def _call_offer(
    server: Server,
    offer: Offer,
    ref: str,
    arguments: dict[str, Any],
    limits: Limits,
    on_started: Callable[[int], None] | None,
) -> SandboxOutcome | None:
    """The call, on an offered spare: handed over, its timeout from the send, its outcome (and
    kills: id -sid) through the fork server. None if the spare was gone before it got the call."""
    try:
        if not hand_over(server, offer, ref, arguments, limits):
            return None
        timeout = limits.timeout or DEFAULT_TIMEOUT
        waited = await _wait(server, -offer.sid, offer.status, timeout, on_started, started=offer.pid)
        return _conclude(server, waited, limits, offer.fds)
    finally:
        offer.close()
        with server.lock:  # the fork server knows of the call now (it sent its outcome)
            if offer.sid in server.took:
                server.took.remove(offer.sid)


def _conclude(
    server: Server, waited: tuple[dict[str, Any] | None, str | None], limits: Limits, fds: Memfds
) -> SandboxOutcome:
    """The outcome, from the fork server's status (None: it sent none) and the host's kill."""
    status, host_killed = waited
    if status is None and server.discarded and not host_killed:
        status, host_killed = {}, "cancelled"  # aclose() stopped the fork server under this call
    if status is None:
        if not host_killed and server.popen.poll() is None:
            # The fork server lives but dropped this call (it ran out of fds receiving it).
            return unavailable("the fork server could not take this call (out of file descriptors?)")
        server.broken = True
        if not host_killed:
            return unavailable(server.why_dead())
        status = {}  # we killed the zygote itself to stop this call
    if host_killed:
        status["killed"] = host_killed
    return classify(status, limits, fds)


async def _call_fds(
    others_running: Callable[[], bool],
) -> tuple[socket.socket, socket.socket, Memfds] | SandboxOutcome:
    """The call's fds; out of fds / memory here, wait while other calls can free some, else fail."""
    delay, waited = 0.001, 0.0
    while True:
        try:
            return _new_fds()
        except OSError as exc:
            if exc.errno not in _TRANSIENT or not others_running() or waited > _SETUP_PATIENCE:
                return unavailable(
                    f"the host cannot start another call ({exc.strerror or exc}); "
                    "lower the number of parallel calls or raise `ulimit -n`"
                )
        await anyio.sleep(delay)
        waited += delay
        delay = min(delay * 2, 0.05)


def _new_fds() -> tuple[socket.socket, socket.socket, Memfds]:
    """A call's status socketpair and its result/stdout/stderr memfds; nothing leaks on failure."""
    fds: list[int] = []
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        for n in ("result", "stdout", "stderr"):
            fds.append(os.memfd_create(f"agentloop-{n}", os.MFD_CLOEXEC))
    except OSError:
        mine.close()
        theirs.close()
        for fd in fds:
            os.close(fd)
        raise
    return mine, theirs, Memfds(fds[0], fds[1], fds[2])


def _send_call(
    server: Server,
    call_id: int,
    ref: str,
    arguments: dict[str, Any],
    limits: Limits,
    status_sock: socket.socket,
    fds: Memfds,
) -> None:
    """The arguments go into the result memfd (the child reads, then empties it); the message
    carries the status socket and the three memfds."""
    write_arguments(fds.result, arguments)
    msg = {"op": "call", "id": call_id, "ref": ref, "limits": limits.to_wire()}
    server.send(msg, [status_sock.fileno(), fds.result, fds.stdout, fds.stderr])


async def _wait(
    server: Server,
    call_id: int,
    sock: socket.socket,
    # The deadline runs from the send, or from the "P" of a call that waited for a slot ("Q"),
    # so the caller cannot express it as a cancel scope: it becomes a deadline here.
    timeout: float,  # noqa: ASYNC109 - see above
    on_started: Callable[[int], None] | None,
    *,
    started: int | None = None,  # the pid of a call handed to an offered spare: it runs now
) -> tuple[dict[str, Any] | None, str | None]:
    try:
        deadline = anyio.current_time() + timeout
        if started is not None:
            _started(on_started, started)
        frame = await _recv_by(sock, deadline)
        if frame is not None and frame[:1] == FRAME_QUEUED:
            frame = await _recv(sock)  # queued until a slot is free: no timeout while queued
            deadline = anyio.current_time() + timeout
        if frame is not None and frame[:1] == FRAME_STARTED:
            _started(on_started, PID.unpack(frame[1:5])[0])
            frame = await _recv_by(sock, deadline)
        if frame is not None:
            return _final(frame, on_started), None
        return await _kill(server, call_id, sock, "timeout"), "timeout"  # the deadline passed
    except BaseException:
        # Cancelled (or anything else): the child must be dead before we let go.
        with anyio.CancelScope(shield=True):
            await _kill(server, call_id, sock, "cancelled")
        raise


def _started(on_started: Callable[[int], None] | None, pid: int) -> None:
    if on_started is not None:
        on_started(pid)


def _final(frame: bytes, on_started: Callable[[int], None] | None) -> dict[str, Any] | None:
    """The outcome's status; a call too short to have been reported started gives its pid here."""
    status = _status(frame)
    if status is not None and "pid" in status:
        _started(on_started, int(status.pop("pid")))
    return status


async def _recv_by(sock: socket.socket, deadline: float) -> bytes | None:
    """The next frame (b"": the socket closed), or None if none came by `deadline` (one that
    came just as it passed is taken)."""
    with anyio.move_on_after(max(0.0, deadline - anyio.current_time())):
        return await _recv(sock)
    try:
        return sock.recv(1 << 16)
    except BlockingIOError:
        return None


async def _kill(server: Server, call_id: int, sock: socket.socket, reason: str) -> dict[str, Any] | None:
    try:
        server.send({"op": "kill", "id": call_id, "reason": reason})
    except OSError:
        server.kill()
        return None
    with anyio.move_on_after(KILL_GRACE):
        while True:
            frame = await _recv(sock)
            if frame[:1] not in (FRAME_STARTED, FRAME_QUEUED):
                return _status(frame)
    server.kill()  # the zygote does not answer: kill it, and its children with it
    return None


async def _recv(sock: socket.socket) -> bytes:
    while True:
        try:
            return sock.recv(1 << 16)
        except BlockingIOError:
            await wait_readable(sock)


def _status(frame: bytes) -> dict[str, Any] | None:
    """The zygote's status frame; None when the socket closed without one (zygote gone)."""
    if frame[:1] != FRAME_STATUS:
        return None
    status = _json.loads(frame[1:])
    return status if isinstance(status, dict) else None

"""What runs in a child forked by the zygote: confine it, run the tool once, write the result.

`run_child` never returns. Confinement happens before any tool code runs and fails closed: if a
step fails, the child exits with EXIT_CONFINE_FAILED without calling the tool.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import fcntl
import inspect
import math
import os
import resource
import signal
import socket
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from .. import _json
from ._landlock import READ, Ruleset, denial_hint, relative_hint
from ._privs import (
    confine_privileges,
    early_privileges,
    mount_scratch,
    parent_pid,
    read_proc_self,
    remount_scratch,
)
from ._protocol import DONE, EXIT_CONFINE_FAILED, RESULT_FD

__all__ = ["run_child", "spare_main", "prctl"]

_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1
_MIB = 1 << 20
_MSG_CAP = 2000  # exception messages are cut to this many characters
_TB_CAP = 8000  # tracebacks keep their last this many characters (the innermost frames)
# Pre-encoded so that it can be written when no memory is left to build anything.
_MEMORY_FRAME = b'{"s":"memory"}\n'
_PAGE = os.sysconf("SC_PAGE_SIZE")


def prctl(option: int, arg: int) -> None:
    if _libc.prctl(option, arg, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({option}): {os.strerror(err)}")


def run_child(
    call: dict[str, Any],
    fds: tuple[int, int, int],
    scratch: str,
    tool: tuple[Callable[..., Any], Callable[[dict[str, Any]], dict[str, Any]] | None],
    cfg: dict[str, Any],
    *,
    done: socket.socket | int,
    ready: Ready | None = None,
) -> NoReturn:
    """`tool`: the function and its argument binder. `done`: the socket on which the child tells
    the zygote that its result is written (or its fd, moved `_above` already); the zygote then
    kills everything of the call and sends the outcome without waiting for this process to
    finish exiting (tearing down its namespaces and memory takes milliseconds). `ready`: what a
    spare did before it had the call."""
    fn, binder = tool
    code = EXIT_CONFINE_FAILED
    try:
        ready = ready or Ready(early_setup(cfg))
        done_fd = done if isinstance(done, int) else _above(done)
        args = _confine(call, fds, scratch, cfg, (ready, done_fd))
        code = 0
        ruleset = ready.ruleset
        _run(fn, binder, args, call["limits"], allowed=None if ruleset is None else ruleset.allowed)
        with contextlib.suppress(OSError):  # the zygote is gone: the exit tells it anyway
            os.write(done_fd, DONE)
    except BaseException:
        try:
            traceback.print_exc()
            sys.stderr.flush()
        except BaseException:
            pass
    finally:
        os._exit(code)


@dataclass(slots=True, frozen=True)
class Ready:
    """How far a child got before its call: `early_setup`'s Landlock ruleset and, for a spare
    (`ahead`), everything of the confinement that does not depend on the call: scratch mounted
    and entered, the scratch allowed in the ruleset; for an offered spare
    (`fds_taken`), its memfds on 1-3 and every other fd the zygote held closed as well."""

    ruleset: Ruleset | None
    ahead: bool = False
    fds_taken: bool = False


def _above(sock: socket.socket) -> int:
    """The socket's fd, moved above the fds the memfds go onto (1-3) so that none replaces it;
    its old number is closed with the zygote's other fds, not by the object."""
    fd = fcntl.fcntl(sock.fileno(), fcntl.F_DUPFD_CLOEXEC, 10)
    sock.detach()
    return fd


def spare_main(
    sock: socket.socket,
    tools: dict[str, Any],
    cfg: dict[str, Any],
    ahead: tuple[int, int | None, str],
    direct: Direct | None = None,
) -> NoReturn:
    """A child forked ahead of time: the fork and its first scheduling (~1.5 ms on a loaded
    2-core machine) are then off the call's critical path, and so is the call-independent part
    of its confinement and, with `ahead` = (uid, scratch_mb, scratch) from the fork server, the
    mount of the call's scratch tmpfs and entering it (~0.25 ms). It stays root until it has
    the call (a process of a call's uid is always a call's), waits for one call, then runs it
    as that uid. `direct`: an offered spare (`_offers`), which takes its call from the host
    instead of from the fork server (and resizes its tmpfs, still root, for a call of another
    scratch size; the fork server gives its own spares only calls of their size). What does not
    depend on the call happens here, off its path: for an offered spare, whose memfds are known,
    the fds too."""
    try:
        uid, scratch_mb, scratch = ahead
        ready = _ahead(cfg, uid, scratch_mb, scratch, offered=direct is not None)
        done: socket.socket | int = sock
        call_fd = -1
        if direct is not None:
            done, call_fd = _above(sock), _above(direct[0])
            _take_fds(direct[1], {done, call_fd, _fd(ready.ruleset, done)})
        _prefault()
        if direct is not None:
            call, fds3 = _take_direct(call_fd, direct, uid)
            size = call["limits"].get("scratch_mb")
            if cfg.get("own_scratch") and size != scratch_mb:  # still root: resized for the call
                remount_scratch(scratch, size)
        else:
            data, fds, _flags, _addr = socket.recv_fds(sock, 1 << 16, 4)
            if not data or len(fds) != 3:
                os._exit(0)  # the zygote discarded us
            msg = _json.loads(data)
            call, scratch, fds3 = msg["call"], msg["scratch"], (fds[0], fds[1], fds[2])
        tool = tools[call["ref"]]
    except BaseException:
        os._exit(EXIT_CONFINE_FAILED)
    run_child(call, fds3, scratch, tool, cfg, done=done, ready=ready)


def _ahead(cfg: dict[str, Any], uid: int, scratch_mb: int | None, scratch: str, *, offered: bool) -> Ready:
    """A spare's call-independent confinement: its scratch (mounted for `uid`, the uid its call
    will run as) entered and in its Landlock ruleset, no core dumps. It stays root until its
    call is here (`_confine`)."""
    ruleset = early_setup(cfg)
    if cfg.get("own_scratch"):
        mount_scratch(scratch, uid, scratch_mb)
    _enter(scratch)
    if ruleset is not None:
        ruleset.allow([scratch], ~0)  # the call's scratch: everything
    _setlimit(resource.RLIMIT_CORE, 0)
    return Ready(ruleset, ahead=True, fds_taken=offered)


def _fd(ruleset: Ruleset | None, default: int) -> int:
    return default if ruleset is None else ruleset.fd


# An offered spare's call socket (from the host), its three memfds (the host holds the same) and
# what Landlock lets each known tool read of its package.
Direct = tuple[socket.socket, tuple[int, int, int], dict[str, list[str]]]


def _take_direct(call_fd: int, direct: Direct, uid: int) -> tuple[dict[str, Any], tuple[int, int, int]]:
    """The one call the host hands an offered spare, on `call_fd` (its call socket). A plain
    read (one message): an fd sent along would be dropped by the kernel, not installed here. The
    socket is closed at once (it carries this call only), and the call's uid and readable dirs
    are ours, not the message's. Plain os calls: warm already (see `_prefault`)."""
    _call_sock, fds3, tool_dirs = direct
    data = os.read(call_fd, 1 << 16)
    os.close(call_fd)
    if not data:
        os._exit(0)  # the host discarded us (or went away)
    msg = _json.loads(data)
    ref = str(msg["ref"])
    return {"ref": ref, "limits": dict(msg["limits"]), "uid": uid, "tool_dirs": tool_dirs.get(ref)}, fds3


def early_setup(cfg: dict[str, Any]) -> Ruleset | None:
    """The call-independent part of the confinement; returns the Landlock ruleset built so far
    (system dirs, interpreter, site-packages, agentloop, ro_paths), None where there is none."""
    # The zygote's SIGCHLD wake-up pipe and handler must not leak into the tool.
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # dies with the zygote, whatever happens
    zygote = cfg.get("zygote_pid")
    # The zygote may have died before PDEATHSIG was armed. getppid() says 0 in a PID namespace of
    # our own; /proc (the zygote's namespace) still names the real parent. (In "isolated" the
    # zygote is PID 1 of bubblewrap's namespace: its death kills us anyway.)
    if zygote and parent_pid() != zygote:
        os._exit(EXIT_CONFINE_FAILED)
    # Own process group, killed as a whole by the zygote. Not setsid(): with scheduler autogroups
    # a new session costs ~1 ms; the zygote already runs in a session of its own, without a tty.
    os.setpgid(0, 0)
    early_privileges(cfg)
    version = int(cfg.get("landlock") or 0)
    if not version:
        return None
    ruleset = Ruleset(version, deny_tcp=bool(cfg["isolated"]))
    ruleset.allow_defaults(cfg.get("landlock_ro") or (), network=not cfg["isolated"])
    return ruleset


def _enter(scratch: str) -> None:
    """The scratch dir becomes the cwd, HOME and TMPDIR (~0.15 ms: os.environ is slow to update)."""
    os.chdir(scratch)
    os.environ.update({"HOME": scratch, "TMPDIR": scratch, "PWD": scratch})
    if "tempfile" in sys.modules:
        import tempfile  # imported already: only its cached directory is reset

        tempfile.tempdir = None  # re-read TMPDIR


def _setlimit(which: int, soft: int, hard: int | None = None) -> None:
    cur_hard = resource.getrlimit(which)[1]
    hard = soft if hard is None else hard
    if cur_hard != resource.RLIM_INFINITY:  # cannot raise a hard limit without CAP_SYS_RESOURCE
        hard, soft = min(hard, cur_hard), min(soft, cur_hard)
    resource.setrlimit(which, (soft, hard))


def _confine(
    call: dict[str, Any],
    fds: tuple[int, int, int],
    scratch: str,
    cfg: dict[str, Any],
    kept: tuple[Ready, int],
) -> Any:
    """Everything call-dependent, in order: fds, scratch, privileges (a spare did these ahead, as
    far as `ready` says), Landlock, then the arguments and the rlimits. Returns the arguments."""
    ready, done_fd = kept
    ruleset = ready.ruleset
    if not ready.fds_taken:
        _take_fds(fds, {done_fd, _fd(ruleset, done_fd)})
    if not ready.ahead:
        _enter(scratch)
    # Root until the call is here: a process of a call's uid is always a call's.
    confine_privileges(call, scratch, cfg, mounted=ready.ahead)
    if ruleset is not None:  # after the scratch mount: a Landlock domain may not mount
        if not ready.ahead:
            ruleset.allow([scratch], ~0)  # the call's scratch: everything
        ruleset.allow(call.get("tool_dirs") or (), READ)  # the tool's own package (found by the zygote)
        ruleset.restrict()

    # The arguments were pre-written by the host into the result memfd; empty it for the result.
    size = os.fstat(RESULT_FD).st_size
    raw = os.pread(RESULT_FD, size, 0) if size else b"{}"
    os.ftruncate(RESULT_FD, 0)
    args = _json.loads(raw)
    _set_limits(call, cfg)
    return args


def _take_fds(fds: tuple[int, int, int], keep: set[int]) -> None:
    """The memfds become stdout, stderr and RESULT_FD; every other fd the zygote held is closed,
    except `keep` (the done socket, the Landlock ruleset)."""
    res_fd, out_fd, err_fd = fds
    os.dup2(out_fd, 1)
    os.dup2(err_fd, 2)
    if res_fd != RESULT_FD:
        os.dup2(res_fd, RESULT_FD)
    top = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    low = RESULT_FD + 1
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, top)


def _set_limits(call: dict[str, Any], cfg: dict[str, Any]) -> None:
    limits = call["limits"]
    _setlimit(resource.RLIMIT_CORE, 0)
    if limits.get("open_files"):
        _setlimit(resource.RLIMIT_NOFILE, int(limits["open_files"]))
    if limits.get("file_size_mb"):
        _setlimit(resource.RLIMIT_FSIZE, int(limits["file_size_mb"]) * _MIB)
    if call.get("nproc") or cfg.get("nproc"):  # per call uid: the call's own budget
        _setlimit(resource.RLIMIT_NPROC, int(call.get("nproc") or cfg["nproc"]))
    if limits.get("cpu_s"):
        secs = max(1, math.ceil(limits["cpu_s"]))
        _setlimit(resource.RLIMIT_CPU, secs)  # soft = hard: SIGKILL, also for PID 1 of a namespace
    if limits.get("memory_mb"):
        # Relative to what the forked interpreter already maps, so memory_mb is the tool's share.
        mapped = int(read_proc_self("statm").split()[0]) * _PAGE
        _setlimit(resource.RLIMIT_AS, mapped + int(limits["memory_mb"]) * _MIB)


def _prefault() -> None:
    """Run once, with nothing at stake, what every call runs after its tool returns (flush the
    std streams, encode a result and its header): the pages of the objects involved are then
    copied (fork's copy-on-write: reference counts are written) before the call, not during it."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(BaseException):
            stream.flush()
    body = _json.dumps_result({"a": [1, 2.5, "x", None, True]}).encode("utf-8", "replace")
    _header("ok", n=len(body), cut=False)
    inspect.isawaitable(body)
    _json.loads(b'{"ref": "m:f", "limits": {"timeout": 1.5, "scratch_mb": null}}')  # the call's message


def _write(data: bytes) -> None:
    view = memoryview(data)
    offset = 0
    while offset < len(view):
        offset += os.pwrite(RESULT_FD, view[offset:], offset)


def _header(status: str, **fields: Any) -> bytes:
    return _json.dumps({"s": status, **fields}) + b"\n"


def _exc_fields(
    exc: BaseException, *, with_traceback: bool = False, allowed: list[str] | None = None
) -> dict[str, Any]:
    try:
        message = str(exc)
        hint = (denial_hint(exc, allowed) if allowed is not None else None) or relative_hint(exc)
        if hint:
            message = f"{message} ({hint})"
    except Exception:
        message = "<unprintable>"
    # sendable: a lone surrogate in the message made the frame unencodable, and the call "crashed"
    fields = {"t": type(exc).__name__, "m": _json.sendable(message[:_MSG_CAP])}
    if with_traceback:  # sent back in the result frame: the host keeps it on the call's record
        try:
            tb = "".join(traceback.format_exception(exc))
        except Exception:
            tb = f"{type(exc).__name__}: <unprintable>\n"
        fields["tb"] = _json.sendable(tb[-_TB_CAP:])
    return fields


async def _await(awaitable: Any) -> Any:
    return await awaitable


def _run(
    fn: Callable[..., Any],
    binder: Callable[[dict[str, Any]], dict[str, Any]] | None,
    args: Any,
    limits: dict[str, Any],
    *,
    allowed: list[str] | None = None,
) -> None:
    try:
        kwargs = binder(args) if binder is not None else args
        result = fn(**kwargs)
        if inspect.isawaitable(result):
            result = asyncio.run(_await(result))
    except MemoryError:
        _write(_MEMORY_FRAME)
        return
    except OSError as exc:
        if exc.errno == errno.EFBIG:  # RLIMIT_FSIZE: it wrote more than file_size_mb
            _write(_header("output_limit", **_exc_fields(exc)))
        else:
            _write(_header("raised", **_exc_fields(exc, with_traceback=True, allowed=allowed)))
            traceback.print_exc()
        return
    except BaseException as exc:
        _write(_header("raised", **_exc_fields(exc, with_traceback=True, allowed=allowed)))
        traceback.print_exc()
        return
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(BaseException):
                stream.flush()

    try:
        text = result if isinstance(result, str) else _json.dumps_result(result)
    except MemoryError:
        _write(_MEMORY_FRAME)
        return
    except BaseException as exc:  # TypeError / ValueError, or the value's own model_dump / tolist raising
        _write(_header("invalid_result", **_exc_fields(exc)))  # (it was "exited without a result")
        return
    cap = limits.get("output_bytes")
    # Cut before encoding: a 1 GB string is not copied again, the host never sees more than cap.
    if cap is None:
        body, cut = text.encode("utf-8", "replace"), False
    else:
        body = text[:cap].encode("utf-8", "replace")
        cut = len(text) > cap or len(body) > cap
        body = body[:cap]
    _write(_header("ok", n=len(text), cut=cut) + body)

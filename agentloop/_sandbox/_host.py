"""`ProcessSandbox`: the host side of the "process" and "isolated" execution modes.

No background task and no loop-bound object: every call owns a socketpair and three memfds and
awaits its own socket, so one sandbox serves any number of event loops, on asyncio and trio.
"""

from __future__ import annotations

import errno
import importlib
import itertools
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import anyio

from .. import _json
from .._exceptions import ConfigurationError, SandboxUnavailableError, ToolDefinitionError
from ._bwrap import _python_roots, bwrap_argv, probe_bwrap
from ._classify import classify, unavailable
from ._outcome import DEFAULT_TIMEOUT, Limits, SandboxOutcome
from ._privs import others_can_read, set_dumpable
from ._protocol import BOOT, FRAME_STARTED, FRAME_STATUS, PID, SCRATCH_IN_SANDBOX, base_env

__all__ = ["ProcessSandbox"]

# anyio >= 4.7 (see pyproject) waits on a raw fd (the pidfd) as well as on a socket.
_wait_readable = anyio.wait_readable
_KILL_GRACE = 5.0  # seconds the zygote gets to confirm a kill before it is killed itself
_NPROC_BUDGET = 512  # processes a sandboxed uid may add (where RLIMIT_NPROC is enforced)
_PRELOAD = ("asyncio", "agentloop._json", "agentloop._sandbox._child")
_TRANSIENT = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EAGAIN, errno.ENOBUFS}
_SETUP_PATIENCE = 60.0  # seconds a call waits for fds that other calls of this sandbox hold
_UID_BLOCK = 64  # per-call uids of one sandbox: calls beyond this many at once queue
_sandbox_counter = itertools.count()


def _default_uids() -> range:
    """64 uids no other live sandbox on this machine uses: derived from our pid (unique among live
    processes) and which of this process's sandboxes it is (4 may run at once without sharing)."""
    block = ((os.getpid() & 0x3FFFFF) << 2) | (next(_sandbox_counter) & 3)
    start = (1 << 30) + block * _UID_BLOCK
    return range(start, start + _UID_BLOCK)


def _interpreter_dirs() -> list[str]:
    import site

    return [sys.prefix, sys.base_prefix, os.path.dirname(os.__file__), *site.getsitepackages()]


class _Server:
    """One running zygote, as seen from the host."""

    def __init__(self, popen: subprocess.Popen[bytes], ctl: socket.socket, scratch: str | None, err_fd: int):
        self.popen, self.ctl, self.scratch, self.err_fd = popen, ctl, scratch, err_fd
        self.ids = itertools.count(1)
        self.broken = False
        self.binds: frozenset[str] = frozenset()  # what bubblewrap binds for the tools ("isolated")
        self.inflight = 0  # calls using this server (guarded by the sandbox's lock)
        self.retired = False  # replaced: discarded once its last call ends
        self.discarded = False

    def alive(self) -> bool:
        return not self.broken and self.popen.poll() is None

    def send(self, msg: dict[str, Any], fds: list[int] = []) -> None:  # noqa: B006 - never mutated
        socket.send_fds(self.ctl, [_json.dumps(msg)], fds)

    def why_dead(self) -> str:
        """The tail of the zygote's stderr: the reason it failed to start, usually."""
        size = os.fstat(self.err_fd).st_size
        tail = os.pread(self.err_fd, 2000, max(0, size - 2000)).decode(errors="replace").strip()
        code = self.popen.poll()
        return f"the fork server exited ({code})" + (f": {tail}" if tail else "")

    def stop(self) -> None:
        self.broken = True
        self.ctl.close()  # the zygote sees EOF, kills its children and exits

    def kill(self) -> None:
        self.broken = True
        if self.popen.poll() is None:
            self.popen.kill()  # children die through PR_SET_PDEATHSIG / --die-with-parent


def _check_seccomp() -> None:
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


class ProcessSandbox:
    """Runs tool calls in fresh child processes forked from a long-lived fork server.

    `isolated=True` runs the fork server inside bubblewrap. `max_processes` caps the children
    running at once (default 2 x CPU count); further calls queue in the fork server. `env` adds
    allowlisted variables to the children's tiny environment. `bwrap_path` overrides where
    bubblewrap is looked for. `scratch_root` is where "process" mode creates the per-call scratch
    dirs (default: /dev/shm when writable, since a mkdir + rmdir on a journaled disk costs ~3 ms a
    call; else the temp dir). "isolated" always uses a tmpfs inside the sandbox. `ro_paths` are
    what tools may read besides the interpreter, site-packages, agentloop and their own package
    (bubblewrap binds them; Landlock, where the kernel has it, allows them in both modes).
    """

    def __init__(
        self,
        *,
        isolated: bool = False,
        max_processes: int | None = None,
        env: Mapping[str, str] | None = None,
        bwrap_path: str | None = None,
        scratch_root: str | None = None,
        uid_range: range | None = None,
        ro_paths: Sequence[str] = (),
    ) -> None:
        if env and any(k.upper() == "FLUX_API_KEY" for k in env):
            raise ConfigurationError("the sandbox environment must not carry the API key (FLUX_API_KEY)")
        if max_processes is not None and max_processes < 1:
            raise ConfigurationError("max_processes must be at least 1")
        self.isolated = isolated
        self.max_processes = max_processes or 2 * (os.cpu_count() or 1)
        self._env = base_env(dict(os.environ), dict(env or {}))
        self._bwrap = bwrap_path if bwrap_path is not None else (shutil.which("bwrap") or "bwrap")
        self._lock = threading.Lock()  # guards _server: calls may come from several loops/threads
        self._server: _Server | None = None
        self._available: SandboxUnavailableError | bool | None = None  # cached probe result
        self._closed = False
        self._scratch_root = scratch_root
        if uid_range is not None and (
            len(uid_range) < 1 or uid_range.step != 1 or uid_range.start < 1000 or uid_range.stop > 1 << 32
        ):
            raise ConfigurationError(
                "uid_range must be a non-empty range(start, stop) of uids >= 1000 with step 1"
            )
        self._uids = uid_range if uid_range is not None else _default_uids()
        self._ro_paths = tuple(os.path.abspath(p) for p in ro_paths)
        self._active = 0  # calls between admission and their outcome (guarded by _lock)
        # 4 fds per queued call in the fork server, which shares our hard limit; 32 for itself.
        self._max_active = max(1, (resource.getrlimit(resource.RLIMIT_NOFILE)[1] - 32) // 4)
        self._tool_binds: dict[str, frozenset[str]] = {}

    # --- registration-time checks -------------------------------------------------------------------

    @staticmethod
    def tool_ref(fn: Callable[..., Any]) -> str:
        """ "module:qualname" of `fn`, checked to be importable by that path in a fresh process."""
        module = getattr(fn, "__module__", None)
        qualname = getattr(fn, "__qualname__", None)
        name = getattr(fn, "__name__", repr(fn))
        move = f"; define {name!r} at the top level of an importable module to run it sandboxed"
        if not module or not qualname:
            raise ToolDefinitionError(f"{fn!r} has no module or qualified name{move}")
        if module == "__main__":
            raise ToolDefinitionError(
                f"{name!r} is defined in __main__, which a fork server cannot import{move}"
            )
        if "<locals>" in qualname or "<lambda>" in qualname:
            raise ToolDefinitionError(f"{name!r} is a lambda or a nested function ({qualname}){move}")
        mod = sys.modules.get(module)
        if mod is None:
            try:
                mod = importlib.import_module(module)
            except Exception as exc:
                raise ToolDefinitionError(
                    f"module {module!r} of {name!r} cannot be imported: {exc}{move}"
                ) from None
        obj: Any = mod
        for part in qualname.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                # Decorators run before the module attribute is assigned: accept a module that is
                # still importing; the fork server reports a clear error if it is really missing.
                if getattr(getattr(mod, "__spec__", None), "_initializing", False):
                    return f"{module}:{qualname}"
                raise ToolDefinitionError(f"{module}:{qualname} does not resolve to {name!r}{move}")
        while obj is not fn and hasattr(obj, "__wrapped__"):
            obj = obj.__wrapped__
        if obj is not fn:
            raise ToolDefinitionError(f"{module}:{qualname} names another object, not {name!r}{move}")
        return f"{module}:{qualname}"

    def check_available(self) -> None:
        """Raise SandboxUnavailableError (with the reason) if this mode cannot run on this host."""
        if self._available is True:
            return
        if isinstance(self._available, SandboxUnavailableError):
            raise self._available
        try:
            if not sys.platform.startswith("linux"):
                raise SandboxUnavailableError(f"sandboxed tools need Linux, this is {sys.platform}")
            if not (hasattr(os, "memfd_create") and hasattr(socket, "send_fds") and hasattr(os, "fork")):
                raise SandboxUnavailableError("this Python lacks os.memfd_create / socket.send_fds / os.fork")
            _check_seccomp()
            if self.isolated:
                if not (os.path.isfile(self._bwrap) and os.access(self._bwrap, os.X_OK)):
                    raise SandboxUnavailableError(
                        f"bubblewrap not found ({self._bwrap!r}): install it (Debian/Ubuntu: "
                        "apt-get install bubblewrap) or use sandbox='process'"
                    )
                probe_bwrap(self._bwrap, self._path(), self._env)
        except SandboxUnavailableError as exc:
            self._available = exc
            raise
        self._available = True

    # --- the fork server ----------------------------------------------------------------------------

    @staticmethod
    def _path() -> list[str]:
        return [os.path.abspath(p) if p else os.getcwd() for p in sys.path]

    @staticmethod
    def _nproc() -> int:
        uid = os.getuid()
        count = 0
        for entry in os.scandir("/proc"):
            try:
                if entry.name.isdigit() and entry.stat().st_uid == uid:
                    count += 1
            except OSError:
                pass
        return count + _NPROC_BUDGET  # RLIMIT_NPROC counts all processes of the uid

    def _scratch_parent(self) -> str | None:
        if self._scratch_root is not None:
            return self._scratch_root
        shm = "/dev/shm"
        return shm if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK) else None

    def _start_server(self, binds: frozenset[str] = frozenset()) -> _Server:
        self.check_available()
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
        root = os.geteuid() == 0
        # No process of our uid (a tool, when we are not root) may ptrace us or read our memory.
        set_dumpable(False)
        scratch = (
            SCRATCH_IN_SANDBOX
            if self.isolated
            else tempfile.mkdtemp(prefix="agentloop-sandbox-", dir=self._scratch_parent())
        )
        if root and not self.isolated:
            os.chmod(scratch, 0o711)  # children (other uids) may enter their own dir, not list
        path = self._path()
        cfg = {
            "path": path,
            "ctl_fd": child.fileno(),
            "scratch": scratch,
            "isolated": self.isolated,
            "uids": [self._uids.start, len(self._uids)] if root else None,
            "nproc": _NPROC_BUDGET if root else self._nproc(),
            # Only where the interpreter cannot be read by another uid (e.g. pyenv under /root).
            "keep_read": root and not self.isolated and not others_can_read(_interpreter_dirs()),
            "max_processes": self.max_processes,
            "parent_pid": None if self.isolated else os.getpid(),
            "preload": _PRELOAD,
            # What Landlock lets a child read besides system dirs (its tool's package is added per call).
            "landlock_ro": _python_roots(path, sorted(binds | frozenset(self._ro_paths))),
        }
        argv = [os.path.abspath(sys.executable), "-I", "-c", BOOT, _json.dumps_str(cfg)]
        if self.isolated:
            argv = bwrap_argv(self._bwrap, path, sorted(binds)) + argv
        try:
            popen = subprocess.Popen(
                argv,
                env={**self._env, "HOME": scratch},
                cwd="/" if self.isolated else scratch,
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
        server = _Server(popen, host, None if self.isolated else scratch, err_fd)
        server.binds = binds
        return server

    def _ensure_server(self, binds: frozenset[str]) -> _Server:
        """The running server (one more call in flight on it), started or replaced as needed: a
        dead one, or one whose bubblewrap lacks a tool's directory, is retired."""
        with self._lock:
            if self._closed:
                raise SandboxUnavailableError("the sandbox was closed")
            old = self._server
            if old is not None and (not old.alive() or not binds <= old.binds):
                self._server = None
                old.retired = True
                if old.inflight == 0:
                    self._discard(old)
                binds |= old.binds
            if self._server is None:
                self._server = self._start_server(binds)
            self._server.inflight += 1
            return self._server

    def _binds_for(self, ref: str) -> frozenset[str]:
        """ "isolated": the tool's own top-level package directory (or module file) and `ro_paths`."""
        if not self.isolated:
            return frozenset()
        found = self._tool_binds.get(ref)
        if found is None:
            top = ref.partition(":")[0].split(".")[0]
            try:
                mod = sys.modules.get(top) or importlib.import_module(top)
            except Exception:
                mod = None
            paths: list[str] = list(getattr(mod, "__path__", None) or [])
            file = getattr(mod, "__file__", None)
            if not paths and isinstance(file, str):
                paths = [file]
            found = self._tool_binds[ref] = frozenset(os.path.realpath(p) for p in paths)
        return found | frozenset(self._ro_paths)

    @staticmethod
    def _discard(server: _Server) -> None:
        if server.discarded:
            return
        server.discarded = True
        server.kill()
        server.popen.wait()  # already dead or SIGKILLed: reaping is immediate
        os.close(server.err_fd)
        if server.scratch:
            shutil.rmtree(server.scratch, ignore_errors=True)

    # --- one call -----------------------------------------------------------------------------------

    async def call(
        self,
        ref: str,
        arguments: dict[str, Any],
        limits: Limits,
        *,
        on_started: Callable[[int], None] | None = None,
    ) -> SandboxOutcome:
        """Run `ref` with `arguments` in a fresh child under `limits`; every failure is an outcome.

        `on_started(pid)` is called once the child runs (its timeout starts then); for "isolated"
        the pid is the one inside the sandbox's PID namespace. Cancelling the caller kills the
        child (and everything it started) before the cancellation propagates.
        """
        await self._admit()
        try:
            try:
                server = self._ensure_server(self._binds_for(ref))
            except SandboxUnavailableError as exc:
                return unavailable(str(exc))
            try:
                return await self._call_on(server, ref, arguments, limits, on_started)
            finally:
                with self._lock:
                    server.inflight -= 1
                    retired = server.retired and server.inflight == 0
                if retired:
                    self._discard(server)
        finally:
            with self._lock:
                self._active -= 1

    async def _admit(self) -> None:
        """Wait for one of the `_max_active` call slots. Every call in flight holds 4 fds in the
        host and (queued) 4 in the fork server: past the fd limit, calls queue here instead of
        failing. Polled with a backoff: a loop-bound primitive would tie the sandbox to one loop."""
        delay = 0.001
        while True:
            with self._lock:
                if self._active < self._max_active:
                    self._active += 1
                    return
            await anyio.sleep(delay)
            delay = min(delay * 2, 0.05)

    async def _call_on(
        self,
        server: _Server,
        ref: str,
        arguments: dict[str, Any],
        limits: Limits,
        on_started: Callable[[int], None] | None,
    ) -> SandboxOutcome:
        delay, waited = 0.001, 0.0
        while True:  # out of fds / memory here: wait while other calls can free some, else fail
            try:
                mine, theirs, fds = _call_fds()
                break
            except OSError as exc:
                if exc.errno not in _TRANSIENT or self._active <= 1 or waited > _SETUP_PATIENCE:
                    return unavailable(
                        f"the host cannot start another call ({exc.strerror or exc}); "
                        "lower the number of parallel calls or raise `ulimit -n`"
                    )
            await anyio.sleep(delay)
            waited += delay
            delay = min(delay * 2, 0.05)
        try:
            data = _json.dumps(arguments)
            written = 0
            while written < len(data):
                written += os.pwrite(fds[0], data[written:], written)
            call_id = next(server.ids)
            msg = {"op": "call", "id": call_id, "ref": ref, "limits": limits.to_wire()}
            try:
                server.send(msg, [theirs.fileno(), *fds])
            except OSError as exc:
                server.broken = True
                return unavailable(f"the fork server does not accept calls: {exc}")
            finally:
                theirs.close()
            mine.setblocking(False)
            timeout = limits.timeout or DEFAULT_TIMEOUT
            status, host_killed = await self._wait(server, call_id, mine, timeout, on_started)
            if status is None:
                if not host_killed and server.popen.poll() is None:
                    # The fork server lives but dropped this call (it ran out of fds receiving it).
                    return unavailable("the fork server could not take this call (out of file descriptors?)")
                server.broken = True
                if host_killed:  # we killed the zygote itself to stop this call
                    return classify({"killed": host_killed}, host_killed, limits, *fds)
                return unavailable(server.why_dead())
            return classify(status, host_killed, limits, *fds)
        finally:
            mine.close()
            for fd in fds:
                os.close(fd)

    async def _wait(
        self,
        server: _Server,
        call_id: int,
        sock: socket.socket,
        # The deadline starts when the zygote reports the call started (not while it is queued),
        # so the caller cannot express it as a cancel scope: it becomes a move_on_after there.
        timeout: float,  # noqa: ASYNC109 - see above
        on_started: Callable[[int], None] | None,
    ) -> tuple[dict[str, Any] | None, str | None]:
        try:
            frame = await _recv(sock)  # queued until a slot is free: no timeout while queued
            if frame[:1] == FRAME_STARTED:
                if on_started is not None:
                    on_started(PID.unpack(frame[1:])[0])
                with anyio.move_on_after(timeout):
                    frame = await _recv(sock)
                    return _status(frame), None
                return await self._kill(server, call_id, sock, "timeout"), "timeout"
            return _status(frame), None
        except BaseException:
            # Cancelled (or anything else): the child must be dead before we let go.
            with anyio.CancelScope(shield=True):
                await self._kill(server, call_id, sock, "cancelled")
            raise

    async def _kill(
        self, server: _Server, call_id: int, sock: socket.socket, reason: str
    ) -> dict[str, Any] | None:
        try:
            server.send({"op": "kill", "id": call_id, "reason": reason})
        except OSError:
            server.kill()
            return None
        with anyio.move_on_after(_KILL_GRACE):
            while True:
                frame = await _recv(sock)
                if frame[:1] != FRAME_STARTED:
                    return _status(frame)
        server.kill()  # the zygote does not answer: kill it, and its children with it
        return None

    # --- shutdown -----------------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Stop the fork server (running calls end as "cancelled"). Idempotent."""
        with self._lock:
            self._closed = True
            server, self._server = self._server, None
        if server is None:
            return
        server.stop()
        with anyio.CancelScope(shield=True):
            try:
                pidfd = os.pidfd_open(server.popen.pid)
            except OSError:
                pidfd = None
            if pidfd is not None:
                try:
                    with anyio.move_on_after(_KILL_GRACE):
                        await _wait_readable(pidfd)  # readable once the zygote has exited
                finally:
                    os.close(pidfd)
            self._discard(server)

    async def __aenter__(self) -> ProcessSandbox:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _call_fds() -> tuple[socket.socket, socket.socket, list[int]]:
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
    return mine, theirs, fds


async def _recv(sock: socket.socket) -> bytes:
    while True:
        try:
            return sock.recv(1 << 16)
        except BlockingIOError:
            await _wait_readable(sock)


def _status(frame: bytes) -> dict[str, Any] | None:
    """The zygote's status frame; None when the socket closed without one (zygote gone)."""
    if frame[:1] != FRAME_STATUS:
        return None
    status = _json.loads(frame[1:])
    return status if isinstance(status, dict) else None

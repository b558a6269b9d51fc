"""`ProcessSandbox`: the host side of the "process" and "isolated" execution modes, a
`ToolExecutor`. It admits calls, keeps one fork server running (`_server`) and hands each call to
it (`_roundtrip`); every failure is an outcome.
"""

from __future__ import annotations

import importlib
import os
import resource
import shutil
import socket
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import anyio

from .._exceptions import ConfigurationError, SandboxUnavailableError
from ._bwrap import probe_bwrap
from ._classify import unavailable
from ._outcome import Limits, SandboxOutcome
from ._privs import CAP_SYS_ADMIN, has_cap
from ._protocol import base_env
from ._roundtrip import KILL_GRACE, call_on, wait_readable
from ._server import Server, ServerSpec, check_seccomp, default_uids, discard, host_path, start_server
from ._toolref import tool_ref

__all__ = ["ProcessSandbox"]


def _check_uid_range(uid_range: range | None) -> range:
    if uid_range is None:
        return default_uids()
    if len(uid_range) < 2 or uid_range.step != 1 or uid_range.start < 1000 or uid_range.stop > 1 << 32:
        raise ConfigurationError(
            "uid_range must be a range(start, stop) of at least 2 uids >= 1000 with step 1 (the first "
            "is the fork server's own while it kills a call's processes, the others are the calls')"
        )
    return uid_range


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
        self._spec = ServerSpec(
            isolated=isolated,
            max_processes=self.max_processes,
            env=base_env(dict(os.environ), dict(env or {})),
            bwrap=bwrap_path if bwrap_path is not None else (shutil.which("bwrap") or "bwrap"),
            scratch_root=scratch_root,
            uids=_check_uid_range(uid_range),
            ro_paths=tuple(os.path.abspath(p) for p in ro_paths),
        )
        self._lock = threading.Lock()  # guards _server: calls may come from several loops/threads
        self._server: Server | None = None
        self._available: SandboxUnavailableError | bool | None = None  # cached probe result
        self._closed = False
        self._active = 0  # calls between admission and their outcome (guarded by _lock)
        # 4 fds per queued call in the fork server, which shares our hard limit; 64 for itself and
        # the offered spares (5 fds each here while held, 2 each there, and a fork's worth more).
        self._max_active = max(1, (resource.getrlimit(resource.RLIMIT_NOFILE)[1] - 64) // 4)
        self._tool_binds: dict[str, frozenset[str]] = {}

    # --- registration-time checks -------------------------------------------------------------------

    @staticmethod
    def tool_ref(fn: Callable[..., Any]) -> str:
        """ "module:qualname" of `fn`, checked to be importable by that path in a fresh process."""
        return tool_ref(fn)

    def check_available(self) -> None:
        """Raise SandboxUnavailableError (with the reason) if this mode cannot run on this host."""
        if self._available is True:
            return
        if isinstance(self._available, SandboxUnavailableError):
            raise self._available
        try:
            self._probe()
        except SandboxUnavailableError as exc:
            self._available = exc
            raise
        self._available = True

    def _probe(self) -> None:
        if not sys.platform.startswith("linux"):
            raise SandboxUnavailableError(f"sandboxed tools need Linux, this is {sys.platform}")
        if not (hasattr(os, "memfd_create") and hasattr(socket, "send_fds") and hasattr(os, "fork")):
            raise SandboxUnavailableError("this Python lacks os.memfd_create / socket.send_fds / os.fork")
        check_seccomp()
        if self.isolated:
            bwrap = self._spec.bwrap
            if not (os.path.isfile(bwrap) and os.access(bwrap, os.X_OK)):
                raise SandboxUnavailableError(
                    f"bubblewrap not found ({bwrap!r}): install it (Debian/Ubuntu: "
                    "apt-get install bubblewrap) or use sandbox='process'"
                )
            if os.geteuid() == 0 and not has_cap(CAP_SYS_ADMIN):
                raise SandboxUnavailableError(
                    "the 'isolated' sandbox cannot run here: this process runs as root without "
                    "CAP_SYS_ADMIN (as in a typical container), and bubblewrap needs it to create its "
                    "namespaces. Nothing runs unsandboxed. Use sandbox='process' (per-call uid, "
                    "seccomp and Landlock hold here: `agentloop doctor` prints the table), or run "
                    "the host with CAP_SYS_ADMIN"
                )
            probe_bwrap(bwrap, host_path(), self._spec.env)

    # --- the fork server ----------------------------------------------------------------------------

    def _ensure_server(self, binds: frozenset[str]) -> Server:
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
                    discard(old)
                binds |= old.binds
            if self._server is None:
                self.check_available()
                self._server = start_server(self._spec, binds)
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
        return found | frozenset(self._spec.ro_paths)

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
                return await call_on(
                    server, ref, arguments, limits, on_started, others_running=lambda: self._active > 1
                )
            finally:
                with self._lock:
                    server.inflight -= 1
                    retired = server.retired and server.inflight == 0
                if retired:
                    discard(server)
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

    def offer_fds(self) -> frozenset[int]:
        """The fds this sandbox holds for the spares its fork server offered (leak checks)."""
        with self._lock:
            server = self._server
        return frozenset() if server is None else server.offer_fds()

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
                    with anyio.move_on_after(KILL_GRACE):
                        await wait_readable(pidfd)  # readable once the zygote has exited
                finally:
                    os.close(pidfd)
            # A call still in flight reads the server (its stderr memfd, its socket) to conclude:
            # the last one discards it, as for a replaced server. Dead either way from here.
            with self._lock:
                server.retired = True
                last = server.inflight == 0
            if last:
                discard(server)
            else:
                server.kill()

    async def __aenter__(self) -> ProcessSandbox:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

"""Start a test's worker script as a fork of a warm interpreter instead of a fresh one.

The crash tests kill worker processes (SIGKILL) and resume their runs in new ones: dozens of
processes per suite run, each of which used to be a fresh `python worker.py ...` paying
~0.3-0.4 s of CPU to start and import agentloop, anyio and trio before doing ~0.05 s of work.
Here one server process per pytest process (per xdist worker) imports those once and forks a
child per script run: the child is a real process of its own (own pid, own file locks, killed by
a real SIGKILL, exit status from the kernel), running the script as `python script.py args`
would (`__main__`, `sys.argv`, `sys.path[0]`, stdin / stdout / stderr on pipes, the normal
interpreter exit: atexit handlers, non-daemon threads joined, stdio flushed).

    proc = spawn(script, [args...], preload=("agentloop", "trio"))   # Popen-like
    done = run(script, [args...], preload=..., timeout=120)          # CompletedProcess
    argv = command(script, [args...], preload=...)  # for code that starts the process (MCP clients)

`AGENTLOOP_TESTS_FRESH_WORKERS=1` starts fresh interpreters instead (`subprocess.Popen`), to
compare. The server holds nothing but imported modules (no thread, no event loop, no open file of a
test) when it forks. It is started when first needed and ends when its pytest process does
(the control socket closes: it reads EOF). Run as a script, this file is the server.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import importlib
import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_servers: dict[tuple[str, ...], _Server] = {}  # preload list -> its server, in this pytest process

# agentloop with both anyio backends and SQLite: the crash workers, a router or a lease holder in a
# process of its own, the `agentloop` command (tests/test_cli_everyday.py)
AGENTLOOP_PRELOAD = (
    "agentloop",
    "agentloop.cli",
    "agentloop.testing",
    "anyio",
    "anyio._backends._asyncio",
    "anyio._backends._trio",
    "trio",
    "sqlite3",
)
# tests/mcp_server_fixture.py's imports (`mcp` alone is ~0.65 s of CPU), for every test file that
# starts it (the same tuple: the same server)
MCP_FIXTURE_PRELOAD = (
    "anyio",
    "anyio._backends._asyncio",
    "mcp_types",
    "mcp.server.lowlevel",
    "mcp.server.stdio",
    "uvicorn",
)


class WarmProcess:
    """The subset of `subprocess.Popen` the tests use, for a child of the fork server."""

    def __init__(self, server: _Server, pid: int, pidfd: int, stdin: Any, stdout: Any, stderr: Any) -> None:
        self._server, self.pid, self._pidfd = server, pid, pidfd
        self.stdin, self.stdout, self.stderr = stdin, stdout, stderr
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self.wait(0) if self.returncode is None and _readable(self._pidfd, 0) else self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            if not _readable(self._pidfd, timeout):  # the pidfd turns readable when the process ends
                raise subprocess.TimeoutExpired(str(self.pid), timeout or 0)
            self.returncode = self._server.status_of(self.pid)
            os.close(self._pidfd)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:  # through the pidfd: never another process that reused the pid
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        """Read stdout and stderr to their ends (no input: write to `stdin` before), then wait."""
        if self.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                self.stdin.close()
        deadline = None if timeout is None else time.monotonic() + timeout
        out: dict[Any, list[bytes]] = {self.stdout: [], self.stderr: []}
        with selectors.DefaultSelector() as sel:
            for f in out:
                os.set_blocking(f.fileno(), False)
                sel.register(f.fileno(), selectors.EVENT_READ, f)
            while sel.get_map():
                left = None if deadline is None else deadline - time.monotonic()
                ready = sel.select(left)
                if not ready:
                    raise subprocess.TimeoutExpired(str(self.pid), timeout or 0)
                for key, _ in ready:
                    chunk = os.read(key.fd, 65536)
                    if chunk:
                        out[key.data].append(chunk)
                    else:
                        sel.unregister(key.fd)
        left = None if deadline is None else max(deadline - time.monotonic(), 0)
        self.wait(left)
        for f in out:
            f.close()
        return b"".join(out[self.stdout]).decode(), b"".join(out[self.stderr]).decode()


def spawn(script: Path, args: list[str], *, preload: tuple[str, ...]) -> WarmProcess | subprocess.Popen[str]:
    """`Popen([sys.executable, script, *args], stdin/stdout/stderr=PIPE, text=True)`, forked from a
    server that imported `preload`."""
    if _fresh():
        pipe = subprocess.PIPE
        return subprocess.Popen(
            [sys.executable, str(script), *map(str, args)], stdin=pipe, stdout=pipe, stderr=pipe, text=True
        )
    server = _servers.get(preload)
    if server is None:
        server = _servers[preload] = _Server(preload)
    return server.spawn([str(script), *map(str, args)])


def run(
    script: Path, args: list[str], *, preload: tuple[str, ...], timeout: float
) -> subprocess.CompletedProcess[str]:
    """`subprocess.run([sys.executable, script, *args], capture_output=True, text=True, timeout=...)`."""
    proc = spawn(script, args, preload=preload)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
    return subprocess.CompletedProcess([script, *args], proc.wait(), out, err)


def command(script: Path, args: list[str], *, preload: tuple[str, ...]) -> list[str]:
    """A command line for code that starts the process itself (an MCP client, `anyio.open_process`):
    a small launcher (`python -S`, no site-packages: ~20 ms) hands its stdin, stdout and stderr and
    its environment to the server, which forks the script with them; the launcher passes on
    SIGTERM / SIGINT / SIGHUP and ends as the script ends (its exit code, or killed by the same
    signal). Fresh mode: `[sys.executable, script, *args]`."""
    argv = [str(script), *map(str, args)]
    if _fresh():
        return [sys.executable, *argv]
    server = _servers.get(preload)
    if server is None:
        server = _servers[preload] = _Server(preload)
    return [sys.executable, "-S", __file__, "launch", server.address, *argv]


def _fresh() -> bool:
    """Fresh interpreters when asked to, or where there is no pidfd / fd passing (not Linux)."""
    usable = hasattr(os, "pidfd_open") and hasattr(socket, "send_fds") and hasattr(os, "fork")
    return os.environ.get("AGENTLOOP_TESTS_FRESH_WORKERS") == "1" or not usable


def _readable(fd: int, timeout: float | None) -> bool:
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        return bool(sel.select(timeout))


class _Server:
    """The client side: the server process and its control socket (one request at a time)."""

    def __init__(self, preload: tuple[str, ...]) -> None:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)  # a message per send
        self.dir = tempfile.mkdtemp(prefix="agentloop-warm-fork-")
        self.address = os.path.join(self.dir, "socket")  # for launchers (`command`)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        listener.bind(self.address)
        listener.listen(64)
        fds = [theirs.fileno(), listener.fileno()]
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "serve", *map(str, fds), *preload],
            pass_fds=fds,
            stdin=subprocess.DEVNULL,
        )
        theirs.close()
        listener.close()
        self.sock = mine
        self.statuses: dict[int, int] = {}  # exit statuses the server reported, not yet claimed
        atexit.register(self.close)

    def spawn(self, argv: list[str]) -> WarmProcess:
        pipes = [os.pipe() for _ in range(3)]  # the child's stdin, stdout, stderr
        child_ends = [pipes[0][0], pipes[1][1], pipes[2][1]]
        try:
            socket.send_fds(self.sock, [json.dumps({"argv": argv, "cwd": os.getcwd()}).encode()], child_ends)
            pid, pidfd = self._next_spawned()
        finally:
            for fd in child_ends:
                os.close(fd)
        stdin = open(pipes[0][1], "w")
        stdout, stderr = open(pipes[1][0]), open(pipes[2][0])
        return WarmProcess(self, pid, pidfd, stdin, stdout, stderr)

    def _next_spawned(self) -> tuple[int, int]:
        """The server answers a spawn with the child's pid and a pidfd (sent with the message)."""
        while True:
            msg, fds, _flags, _addr = socket.recv_fds(self.sock, 4096, 1)
            if not msg:
                raise RuntimeError("the warm fork server ended (see its stderr above)")
            m = json.loads(msg)  # an exit report of an earlier child, or the answer
            if "exit" not in m:
                return m["pid"], fds[0]
            self.statuses[m["pid"]] = m["exit"]

    def status_of(self, pid: int) -> int:
        while pid not in self.statuses:  # the process ended: its report is on the way
            msg = self.sock.recv(4096)
            if not msg:
                raise RuntimeError("the warm fork server ended (see its stderr above)")
            m = json.loads(msg)
            self.statuses[m["pid"]] = m["exit"]
        return self.statuses.pop(pid)

    def close(self) -> None:
        self.sock.close()  # the server reads EOF and exits
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


# --- the server -----------------------------------------------------------------------------------


def _serve(ctl: socket.socket, listener: socket.socket) -> dict[str, Any] | None:
    """Fork a child per request (from the pytest process on `ctl`, or from a launcher connected to
    `listener`); report each child's exit to whoever asked for it. Returns the request in a child,
    None in the server once the pytest process is gone."""
    sel = selectors.DefaultSelector()
    sel.register(ctl, selectors.EVENT_READ, ctl)
    sel.register(listener, selectors.EVENT_READ, "accept")
    while True:
        for key, _ in sel.select():
            if key.data == "accept":
                conn, _addr = listener.accept()
                sel.register(conn, selectors.EVENT_READ, conn)
            elif isinstance(key.data, socket.socket):
                conn = key.data
                msg, fds, _flags, _addr = socket.recv_fds(conn, 1 << 20, 3)
                if not msg and conn is ctl:
                    return None
                if not msg:  # a launcher went away (its child, if any, is reported to nobody)
                    sel.unregister(conn)
                    conn.close()
                    continue
                pid = os.fork()
                if pid == 0:
                    _leave_the_server(sel, fds)
                    return dict(json.loads(msg))
                for fd in fds:
                    os.close(fd)
                pidfd = os.pidfd_open(pid)  # before the child can be reaped: the pid is still its
                sel.register(pidfd, selectors.EVENT_READ, (pid, conn))
                socket.send_fds(conn, [json.dumps({"pid": pid}).encode()], [pidfd])
            else:
                pid, conn = key.data
                sel.unregister(key.fd)
                os.close(key.fd)
                _pid, status = os.waitpid(pid, 0)
                with contextlib.suppress(OSError):  # a launcher that was killed
                    conn.send(json.dumps({"pid": pid, "exit": os.waitstatus_to_exitcode(status)}).encode())


def _leave_the_server(sel: selectors.BaseSelector, fds: list[int]) -> None:
    """In a new child: drop the server's sockets and its siblings' pidfds; stdio from `fds`."""
    for key in list(sel.get_map().values()):
        if isinstance(key.fileobj, socket.socket):
            key.fileobj.close()
        else:
            os.close(key.fd)
    sel.close()
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)


def _launch(address: str, argv: list[str]) -> None:
    """The launcher of `command`: hand stdio and the environment over, then be the child's stand-in."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    conn.connect(address)
    req = {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}
    socket.send_fds(conn, [json.dumps(req).encode()], [0, 1, 2])
    _msg, fds, _flags, _addr = socket.recv_fds(conn, 4096, 1)  # the pid, and a pidfd for it
    pidfd = fds[0]
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)  # only the child holds the pipes now: their ends are its ends
    os.dup2(devnull, 1)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda n, _f: _forward(pidfd, n))
    code = json.loads(conn.recv(4096))["exit"]
    if code < 0:  # killed by a signal: end the same way
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    os._exit(code)


def _forward(pidfd: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        signal.pidfd_send_signal(pidfd, sig)


def _run_child(request: dict[str, Any]) -> None:
    """Become `python argv[0] argv[1:]`: the script runs as `__main__`, its errors and its exit as
    a fresh interpreter's (an uncaught exception: traceback on stderr, exit 1)."""
    import runpy

    argv = request["argv"]
    os.chdir(request["cwd"])
    if "env" in request:
        os.environ.clear()
        os.environ.update(request["env"])

    unbuffered = sys.stdout.write_through  # -u / PYTHONUNBUFFERED, as the server was started...
    if "env" in request:  # ... or as the launcher's environment says
        unbuffered = bool(request["env"].get("PYTHONUNBUFFERED"))
    # new stdio objects over fds 0-2 (the test's pipes now), buffered as a fresh interpreter's on pipes
    sys.stdin = open(0, closefd=False)
    sys.stdout = open(1, "w", closefd=False, buffering=-1)
    sys.stderr = open(2, "w", closefd=False, buffering=1, errors="backslashreplace")
    sys.stdout.reconfigure(write_through=unbuffered)
    sys.argv = argv
    sys.path[0] = os.path.dirname(os.path.abspath(argv[0]))
    runpy.run_path(argv[0], run_name="__main__")


if __name__ == "__main__":
    if sys.argv[1] == "launch":
        _launch(sys.argv[2], sys.argv[3:])
    ctl_fd, listener_fd, *preload = sys.argv[2:]
    for name in preload:
        importlib.import_module(name)
    # The preloaded objects go to the GC's permanent generation: a child's collections (its
    # interpreter's exit runs several) never visit them, so never write to (copy) their pages. A
    # child that exited cost 0.25 s of CPU (AGENTLOOP_PRELOAD) to 0.6 s (the MCP fixture's) without
    # it, most of a fresh interpreter's start; ~0.02-0.05 s with it. The child's own objects are
    # collected as usual; nothing else of its exit changes.
    gc.collect()
    gc.freeze()
    listener = socket.socket(fileno=int(listener_fd))
    request = _serve(socket.socket(fileno=int(ctl_fd)), listener)
    if request is not None:
        _run_child(request)
    else:  # the pytest process is gone (it removes the directory too, unless it was killed)
        shutil.rmtree(os.path.dirname(listener.getsockname()), ignore_errors=True)

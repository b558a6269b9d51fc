"""`agentloop ui` bounds what clients can hold: idle sockets, slowloris heads, huge heads.

Against the real served CLI (a subprocess, loopback only); waits are for events (a socket
closed by the server) under generous deadlines, never sleeps.
"""

from __future__ import annotations

import contextlib
import select
import socket
from pathlib import Path

import anyio
import httpx
import pytest
from test_ui_hostile import _server_pid
from ui_browser import served

from agentloop import SQLiteJournal


@pytest.fixture
def db(tmp_path: Path) -> str:
    path = str(tmp_path / "j.db")

    async def make() -> None:
        journal = SQLiteJournal(path)
        token = await journal.create("r1", {"model": "m", "messages": [{"role": "user", "content": "hi"}]})
        await journal.release("r1", token)
        journal.close()

    anyio.run(make)
    return path


def address(url: str) -> tuple[str, int]:
    return "127.0.0.1", int(url.split(":")[2].split("/")[0])


def closed_by_server(s: socket.socket, deadline: float = 120.0) -> bool:
    """Reads until the server closes the socket (True) or `deadline` seconds pass (False)."""
    s.settimeout(deadline)
    try:
        while s.recv(65536):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


def sockets_of(pid: int) -> int:
    fds = Path(f"/proc/{pid}/fd")
    return sum(1 for fd in fds.iterdir() if fd.readlink().name.startswith("socket:"))


def test_a_slowloris_client_is_cut(db: str) -> None:
    # The four slow clients are opened together: each one's 1 s deadline runs at the same time as
    # the others' (one after the other, the test waited out four of them).
    with served(db, "--request-timeout", "1") as url, contextlib.ExitStack() as stack:
        host, port = address(url)

        def connect() -> socket.socket:
            return stack.enter_context(socket.create_connection((host, port)))

        silent = connect()  # connects, never says a word
        slow = connect()  # a head that never ends
        slow.sendall(f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nX-a: b".encode())
        body = connect()  # a decision form whose body never comes
        body.sendall(
            f"POST /decide/r1 HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: 500\r\n\r\nx".encode()
        )
        kept = connect()  # one request, then a slow second one
        kept.sendall(f"GET /static/app.css HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        kept.settimeout(60)
        assert kept.recv(65536).startswith(b"HTTP/1.1 200")
        kept.sendall(b"GET / HTTP/1.1\r\n")
        for cut in (silent, slow, body, kept):
            assert closed_by_server(cut)
        assert httpx.get(url, trust_env=False).status_code == 200  # and the server goes on


def test_idle_connections_cannot_exhaust_the_server(db: str) -> None:
    with served(db, "--max-connections", "8", "--request-timeout", "600") as url:
        host, port = address(url)
        pid = _server_pid(db)
        idle = [socket.create_connection((host, port)) for _ in range(40)]
        try:
            # the server keeps 8; every other one is closed (each new one evicts the oldest idle)
            open_ = list(idle)
            while len(open_) > 8:
                readable, _, _ = select.select(open_, [], [], 120)
                assert readable, "the server held more idle connections than --max-connections"
                for s in readable:
                    assert closed_by_server(s, 10)
                    open_.remove(s)
            assert sockets_of(pid) <= 8 + 4  # the 8, the listening socket, the event loop's own
            for _ in range(3):  # a real client is served at once, without waiting for the idle ones' timeout
                r = httpx.get(url, trust_env=False, timeout=60)
                assert r.status_code == 200 and "r1" in r.text
            assert sockets_of(pid) <= 8 + 4
        finally:
            for s in idle:
                s.close()


def _stalled_reader(host: str, port: int, path: str) -> socket.socket:
    """A client that asks for a page and never reads a byte of it (a tiny receive buffer, so the
    server's writer fills up and pauses)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect((host, port))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    return s


def dropped_without_reading(s: socket.socket, deadline: float = 120.0) -> bool:
    """Waits, reading nothing, until the server resets or closes `s` (True) or `deadline` passes."""
    p = select.poll()
    p.register(s, select.POLLRDHUP)  # POLLHUP / POLLERR (a reset) are reported whatever the mask
    return bool(p.poll(int(deadline * 1000)))


def test_clients_that_never_read_cannot_hold_the_server(tmp_path: Path) -> None:
    """Regression: uvicorn's writer waits for as long as a client reads nothing, holding the
    connection (never idle, so never evicted) and its task: `--max-connections` such clients held
    the inspector for good. Each is now reset after `--write-timeout` seconds without progress."""
    path = str(tmp_path / "big.db")

    async def make() -> None:  # a 2 MiB page (40 texts of 60 KB): more than socket buffers hold
        journal = SQLiteJournal(path)
        msgs = [{"role": "user", "content": f"{i} " + "x" * 60_000} for i in range(40)]
        await journal.release("big", await journal.create("big", {"model": "m", "messages": msgs}))
        journal.close()

    anyio.run(make)
    with served(path, "--max-connections", "4", "--write-timeout", "1", "--request-timeout", "600") as url:
        host, port = address(url)
        stalled = [_stalled_reader(host, port, "/runs/big") for _ in range(6)]
        try:
            for s in stalled:
                assert dropped_without_reading(s), "a client that reads nothing held its connection"
            r = httpx.get(url.rstrip("/") + "/runs/big", trust_env=False, timeout=60)
            assert r.status_code == 200 and len(r.content) > 1_000_000  # a reading client gets it all
        finally:
            for s in stalled:
                s.close()


def test_a_huge_request_head_is_refused(db: str) -> None:
    with served(db, "--max-header-bytes", "4096") as url:
        r = httpx.get(url, headers={"x-big": "a" * 8000}, trust_env=False)
        assert r.status_code in (400, 431)
        assert httpx.get(url, trust_env=False).status_code == 200


@pytest.mark.parametrize(
    "args",
    [
        ["--max-connections", "0"],
        ["--request-timeout", "0"],
        ["--keep-alive", "-1"],
        ["--max-header-bytes", "10"],
        ["--write-timeout", "0"],
    ],
)
def test_nonsense_limits_are_a_usage_error(db: str, args: list[str]) -> None:
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "agentloop.cli", "ui", "--journal", db, "--port", "0", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "must be" in done.stderr and "http://" not in done.stdout

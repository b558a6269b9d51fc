"""Hostile (and a few friendly) tools for tests/test_sandbox.py: importable by "module:qualname"."""

from __future__ import annotations

import ctypes
import dataclasses
import datetime as dt
import enum
import os
import signal
import socket
import sys
import time
from decimal import Decimal
from typing import Any


def echo(text: str, n: int = 1) -> dict[str, Any]:
    return {"text": text * n, "pid_is_child": True}


def shout(text: str) -> str:
    return text.upper()


async def async_add(a: int, b: int) -> int:
    import asyncio

    await asyncio.sleep(0)
    return a + b


def trivial() -> int:
    return 1


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclasses.dataclass
class Point:
    x: int
    y: int


def describe(color: Color, point: Point) -> str:
    return f"{color.name} at {point.x},{point.y}"


def money(amount: Decimal, wait: dt.timedelta, data: bytes) -> dict[str, Any]:
    return {"got": f"{amount!r} {wait!r} {data!r}", "back": [amount, wait, data]}


class Int64:
    """What numpy.int64 is to Python: not an int subclass; `tolist()` gives the Python int."""

    def __init__(self, value: int) -> None:
        self.value = value

    def tolist(self) -> int:
        return self.value


def array_stats() -> dict[str, Any]:
    """Results as numpy / pandas code returns them: a scalar that is not an int, arrays."""
    import array

    return {"count": Int64(3), "values": array.array("d", [1.5, 2.5]), "rows": [array.array("i", [1, 2])]}


def boom(message: str) -> None:
    raise ValueError(message)


def memory_bomb() -> int:
    hog = []
    while True:
        hog.append(bytearray(16 << 20))


def cpu_spin() -> None:
    while True:
        pass


def stubborn_spin() -> None:
    """Ignores SIGTERM / SIGXCPU / SIGINT and spins: only SIGKILL stops it."""
    for sig in (signal.SIGTERM, signal.SIGXCPU, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    while True:
        pass


def fork_bomb(n: int) -> list[int]:
    """Forks `n` children that block forever, half of them in a session of their own (setsid,
    so out of the call's process group), and returns their pids as /proc shows them (the host's
    pids in "process" mode, even inside a PID namespace) without waiting for them."""
    r, w = os.pipe()
    forked = 0
    for i in range(n):
        try:
            pid = os.fork()
        except OSError:
            break
        if pid == 0:
            if i % 2:
                os.setsid()
            os.write(w, os.readlink("/proc/self").encode().rjust(16))
            while True:
                time.sleep(3600)
        forked += 1
    return [int(os.read(r, 16)) for _ in range(forked)]


def huge_result() -> str:
    return "x" * (1 << 30)


def flood_stdout() -> str:
    chunk = b"y" * (1 << 20)
    for _ in range(1024):
        os.write(1, chunk)
    return "done"


def read_env(name: str) -> dict[str, Any]:
    return {"value": os.environ.get(name), "keys": sorted(os.environ)}


def connect(host: str, port: int) -> str:
    with socket.create_connection((host, port), timeout=2):
        return "connected"


def write_file(path: str) -> str:
    with open(path, "w") as f:
        f.write("hello")
    return os.path.abspath(path)


def list_scratch() -> list[str]:
    """What the call's scratch dir (its cwd) holds."""
    return sorted(os.listdir("."))


def scratch_mb() -> int:
    """The size of the filesystem the call's scratch dir (its cwd) is on, MB."""
    st = os.statvfs(".")
    return st.f_blocks * st.f_frsize >> 20


def segfault() -> None:
    ctypes.string_at(0)


def block_forever() -> None:
    while True:
        time.sleep(3600)


def not_json() -> object:
    return object()  # (a set is sent as a JSON array)


def whoami() -> dict[str, Any]:
    return {"cwd": os.getcwd(), "uid": os.getuid(), "argv0": sys.argv[0]}


def json_loads(text: str) -> Any:  # for the tests: parse a result the sandbox returned
    import json

    return json.loads(text)


class Counter:
    """Everyday method shapes a user registers with sandbox="process" (tests/test_outside_round4.py)."""

    step = 10

    @classmethod
    def scaled(cls, x: int) -> int:
        return x * cls.step

    def bump(self, x: int) -> int:
        return x + 1

    def __call__(self, x: int) -> int:
        return x


counter = Counter()


def read_relative(name: str) -> str:
    """Opens a path relative to its current directory, as a user's tool reads 'config.json'."""
    with open(name) as f:
        return f.read()

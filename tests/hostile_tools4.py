"""Round-4 hostile tools (module-level so the "process" / "isolated" sandboxes can import them)."""

from __future__ import annotations

import os
import signal
import time
from typing import Any


class BadStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("str of the exception raises")

    def __repr__(self) -> str:
        raise RuntimeError("repr of the exception raises")


class HugeStr(Exception):
    def __str__(self) -> str:
        return "x" * (4 * 1024 * 1024)


class BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("repr raises")

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("eq raises")

    __hash__ = None  # type: ignore[assignment]


def raise_bad_str() -> None:
    raise BadStr()


def raise_huge_str() -> None:
    raise HugeStr()


def raise_system_exit() -> None:
    raise SystemExit(3)


def raise_keyboard_interrupt() -> None:
    raise KeyboardInterrupt


def exit_now() -> None:
    os._exit(0)


def bad_repr_result() -> Any:
    return BadRepr()


def recursive_result() -> Any:
    a: list[Any] = []
    a.append(a)
    return a


def deep_result() -> Any:
    out: Any = []
    for _ in range(100_000):
        out = [out]
    return out


def non_utf8_result() -> Any:
    return b"\xff\xfe\x00 raw bytes"


def surrogate_result() -> str:
    return "half \udcff a pair"


def huge_result() -> str:
    return "y" * (4 * 1024 * 1024)


def close_all_fds() -> str:
    os.closerange(0, 4096)
    return "closed all"


def block_sigterm_and_sleep() -> str:
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(3600)
    return "woke"


def kill_parent_group() -> str:
    os.killpg(os.getpgid(os.getppid()), signal.SIGKILL)
    return "group killed?"


def echo_raise(text: str) -> None:
    """Raises with what the model sent (a tool's error message often quotes its input)."""
    raise ValueError(f"no such city: {text}")

"""Round-7 hostile tools (module-level so the "process" sandbox can import them): results whose own
conversion hooks (`model_dump`, `tolist`, `__getattr__`) raise while agentloop encodes them."""

from __future__ import annotations

from typing import Any


class BadDump:
    """A pydantic-like value whose model_dump fails (a serializer error of its own)."""

    def model_dump(self, mode: str = "python") -> Any:
        raise RuntimeError("model_dump failed")


class BadToList:
    """A numpy-like value whose tolist fails."""

    def tolist(self) -> Any:
        raise RuntimeError("tolist failed")


class Proxy:
    """A lazy proxy whose every attribute lookup fails with its own error (not AttributeError)."""

    def __getattr__(self, name: str) -> Any:
        raise LookupError(f"proxy has no {name}")


class ExitingToList:
    def tolist(self) -> Any:
        raise SystemExit(3)


def bad_dump() -> Any:
    return BadDump()


def bad_tolist() -> Any:
    return {"rows": [BadToList()]}


def proxy() -> Any:
    return Proxy()


def exiting_tolist() -> Any:
    return ExitingToList()

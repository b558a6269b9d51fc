"""Limits: per-tool resource limits, a frozen policy object.

Kept apart from the sandbox machinery so that `import agentloop` stays light: every tool has
Limits (the timeout and the output cap apply in every mode), few programs need a fork server.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from ._budget import is_number
from ._exceptions import ToolDefinitionError

__all__ = ["Limits", "SANDBOX_DEFAULT_TIMEOUT"]

# A child under a tight address-space limit can spin in allocation failures forever, and
# RLIMIT_CPU does not count time spent blocked: a wall-clock kill is always needed, so a
# sandboxed call without an explicit timeout still gets this one.
SANDBOX_DEFAULT_TIMEOUT = 60.0

_SECONDS = frozenset({"timeout", "cpu_s"})  # the other fields count bytes, MB or files: ints
# The rlimits are 64-bit counts (bytes, seconds): a bigger value registered fine and then made
# every sandboxed call "sandbox_unavailable" (OverflowError in the child's setrlimit).
_MAX = {
    "memory_mb": 2**40,
    "file_size_mb": 2**40,
    "scratch_mb": 2**40,
    "cpu_s": 2**40,
    "open_files": 2**31 - 1,
}


@dataclass(frozen=True, slots=True)
class Limits:
    """Resource limits of a tool call. `None` means "no limit".

    - `timeout`: wall-clock seconds. Every mode. "thread" can only abandon the thread (Python
      cannot kill a thread); the out-of-process modes kill the child's process group, and use
      60 s when no timeout is set (see `SANDBOX_DEFAULT_TIMEOUT`).
    - `output_bytes`: cap of the result text sent to the model (64 KB by default). Every mode. A
      longer result is cut and ends with a visible marker, with outcome `output_limit`.
    - `memory_mb` (RLIMIT_AS the tool may add to the forked interpreter), `cpu_s` (RLIMIT_CPU),
      `open_files` (RLIMIT_NOFILE), `file_size_mb` (RLIMIT_FSIZE): "process" / "isolated" only.
    - `scratch_mb`: size of the call's own `/scratch` tmpfs ("isolated"; RAM-backed).

    Registry defaults and per-tool limits combine with `merge`: every field the tool sets to a
    value other than the class default wins.
    """

    timeout: float | None = None
    memory_mb: int | None = None
    cpu_s: float | None = None
    output_bytes: int | None = 64_000
    open_files: int | None = 64
    file_size_mb: int | None = 16
    scratch_mb: int | None = 256

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            # NaN passes `<= 0` and infinity means "no limit" (that is None); a byte count or a
            # file count that is not an int failed only mid-run (`output_bytes=1.5` raised a raw
            # TypeError out of the run when the result was cut)
            seconds = f.name in _SECONDS
            if not is_number(value, whole=not seconds) or value <= 0:
                kind = "a positive, finite number of seconds" if seconds else "a positive int"
                raise ToolDefinitionError(f"Limits.{f.name} must be {kind} or None (no limit), got {value!r}")
            if value > _MAX.get(f.name, value):
                raise ToolDefinitionError(
                    f"Limits.{f.name} must be at most {_MAX[f.name]} (the kernel's limit is a 64-bit "
                    f"count), got {value!r:.40}; use None for no limit"
                )
        if self.open_files is not None and self.open_files < 8:
            raise ToolDefinitionError("Limits.open_files must be at least 8 (the interpreter needs a few)")

    def merge(self, override: Limits | None) -> Limits:
        """These limits with every field that `override` sets differently from the defaults."""
        if override is None:
            return self
        changes = {
            f.name: getattr(override, f.name)
            for f in fields(override)
            if getattr(override, f.name) != f.default
        }
        return replace(self, **changes) if changes else self

    def to_wire(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

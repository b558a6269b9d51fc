"""Resource limits of one sandboxed call, and the typed outcome a call ends in."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .._exceptions import ToolDefinitionError

__all__ = ["Limits", "SandboxOutcome", "DEFAULT_TIMEOUT"]

# A child under a tight address-space limit can spin in allocation failures forever, and RLIMIT_CPU
# does not count time spent blocked: a wall-clock kill is always needed, so a call without an
# explicit timeout still gets this one.
DEFAULT_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class Limits:
    """Hard limits of one tool call in the "process" / "isolated" modes.

    `None` means "no limit" (except `timeout`: `None` means `DEFAULT_TIMEOUT`, 60 s).

    - `timeout`: wall-clock seconds, counted from the child's start (not the time spent queued
      behind `max_processes`); the child's whole process group is killed when it is exceeded.
    - `memory_mb`: address space (RLIMIT_AS) the tool may add to the forked interpreter, in MiB.
    - `cpu_s`: CPU seconds (RLIMIT_CPU, rounded up to whole seconds by the kernel).
    - `output_bytes`: cap of the result text, and of the captured stdout / stderr each.
    - `open_files`: RLIMIT_NOFILE.
    - `file_size_mb`: largest file the tool may write (RLIMIT_FSIZE), stdout/stderr included.
    """

    timeout: float | None = None
    memory_mb: int | None = None
    cpu_s: float | None = None
    output_bytes: int | None = 64_000
    open_files: int | None = 64
    file_size_mb: int | None = 16

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ToolDefinitionError(f"Limits.{f.name} must be a positive number or None, not {value!r}")
        if self.open_files is not None and self.open_files < 8:
            raise ToolDefinitionError("Limits.open_files must be at least 8 (the interpreter needs a few)")

    def merge(self, override: Limits | None) -> Limits:
        """The effective limits: `self` (e.g. the registry default) with every field of `override`
        that differs from the class default replacing ours."""
        if override is None:
            return self
        changes = {
            f.name: getattr(override, f.name)
            for f in dataclasses.fields(override)
            if getattr(override, f.name) != f.default
        }
        return dataclasses.replace(self, **changes) if changes else self

    def to_wire(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass(slots=True)
class SandboxOutcome:
    """How one sandboxed call ended.

    `status` is one of: ok, raised, invalid_result, timeout, memory, cpu, output_limit, crashed,
    cancelled, sandbox_unavailable. `content` is what the model sees: the result text for `ok`
    (str results as is, others JSON-encoded), otherwise a clear message. `error` is a short
    machine-friendly detail (exception type, signal name, ...). `stdout` / `stderr` hold what the
    tool printed, capped at `output_bytes` each (for logs, not for the model).
    """

    status: str
    content: str
    error: str | None = None
    truncated: bool = False
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

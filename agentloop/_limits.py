"""Limits: per-tool resource limits, a frozen policy object.

Kept apart from the sandbox machinery so that `import agentloop` stays light: every tool has
Limits (the timeout and the output cap apply in every mode), few programs need a fork server.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

__all__ = ["Limits"]


@dataclass(frozen=True, slots=True)
class Limits:
    """Resource limits of a tool call. `None` means "no limit" (or the registry's default).

    - `timeout`: wall-clock seconds. Every mode. "thread" can only abandon the thread (Python
      cannot kill a thread); the out-of-process modes kill the child's process group.
    - `output_bytes`: cap of the result text sent to the model. Every mode. A longer result is cut
      and ends with a visible marker, with outcome `output_limit`.
    - `memory_mb`, `cpu_s`, `open_files`, `file_size_mb`: hard rlimits, "process"/"isolated" only.
    """

    timeout: float | None = None
    memory_mb: int | None = None
    cpu_s: float | None = None
    output_bytes: int | None = 64_000
    open_files: int | None = 64
    file_size_mb: int | None = 16

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value <= 0):
                raise ValueError(f"Limits.{f.name} must be a positive number or None, got {value!r}")

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

"""Out-of-process tool execution: the "process" and "isolated" sandbox modes.

`ProcessSandbox` forks every call from a long-lived fork server ("zygote") with hard rlimits, a
clean environment, its own process group (and PID namespace where possible) and a JSON result
frame; `isolated=True` runs the fork server inside bubblewrap.

`ProcessSandbox` (the host side) is imported on first use: the fork server imports this package
before `_zygote` and needs none of the host's modules (subprocess, ssl, anyio's streams: ~100
modules, ~40 % of the fork server's start-up CPU).
"""

from typing import TYPE_CHECKING

from ._outcome import DEFAULT_TIMEOUT, Limits, SandboxOutcome

if TYPE_CHECKING:
    from ._host import ProcessSandbox

__all__ = ["ProcessSandbox", "Limits", "SandboxOutcome", "DEFAULT_TIMEOUT"]


def __getattr__(name: str) -> object:
    if name == "ProcessSandbox":
        from ._host import ProcessSandbox

        return ProcessSandbox
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

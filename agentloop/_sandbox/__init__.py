"""Out-of-process tool execution: the "process" and "isolated" sandbox modes.

`ProcessSandbox` forks every call from a long-lived fork server ("zygote") with hard rlimits, a
clean environment, its own process group (and PID namespace where possible) and a JSON result
frame; `isolated=True` runs the fork server inside bubblewrap.
"""

from ._host import ProcessSandbox
from ._outcome import DEFAULT_TIMEOUT, Limits, SandboxOutcome

__all__ = ["ProcessSandbox", "Limits", "SandboxOutcome", "DEFAULT_TIMEOUT"]

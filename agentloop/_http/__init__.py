"""HTTP: FluxClient, its transports and bounded reads. The wire codecs are in `agentloop._wire`.

httpx is imported here first, without its command line: httpx 0.28's `__init__` imports
`httpx._main` whenever click is installed (import-linter, many dev environments), and with it
click, rich and pygments: ~90 modules, about 60 % of what importing httpx costs, paid by every
program that makes a FluxClient (the CLI's `agentloop demo`, a script's cold start) for a command
line it never runs. `httpx.main` stays callable: it imports the real one on its first call.
"""

from __future__ import annotations

import sys
from typing import Any


def _httpx_main(*args: Any, **kwargs: Any) -> Any:
    """httpx's command line (`httpx.main`), imported when it is first called."""
    from httpx._main import main

    return main(*args, **kwargs)


def _import_httpx_without_its_command_line() -> None:
    if "httpx" in sys.modules or "httpx._main" in sys.modules:
        return  # the program (or a library) imported it already: leave it exactly as it is
    sys.modules["httpx._main"] = None  # type: ignore[assignment]  # `from ._main import main` raises ImportError
    try:
        import httpx
    except ImportError:  # an httpx that cannot do without its command line: import it as it is
        del sys.modules["httpx._main"]
        import httpx

        return
    if sys.modules.get("httpx._main", "") is None:
        del sys.modules["httpx._main"]
    httpx.main = _httpx_main  # type: ignore[assignment]  # httpx bound its stub for a missing CLI ("not installed")


_import_httpx_without_its_command_line()

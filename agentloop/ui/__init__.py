"""The run inspector: `agentloop ui --journal runs.db` serves the journal's runs as web pages.

Needs the `ui` extra (`pip install 'agentloop[ui]'`: Starlette, uvicorn, Jinja2). Nothing here
is imported by `import agentloop`.

```python
from agentloop.ui import create_app   # an ASGI app: serve it with any ASGI server
app = create_app("runs.db")
```
"""

from __future__ import annotations

try:
    from ._app import AgentFactory, create_app
except ImportError as e:  # the `ui` extra is missing: say how to get it (MissingDependencyError)
    if (e.name or "").partition(".")[0] not in ("starlette", "jinja2", "uvicorn", "h11", "markupsafe"):
        raise
    from agentloop import MissingDependencyError

    raise MissingDependencyError(
        f"agentloop.ui needs the {e.name!r} package, which is not installed ({e}). "
        "Install the inspector with: pip install 'agentloop[ui]'"
    ) from None

__all__ = ["create_app", "AgentFactory"]

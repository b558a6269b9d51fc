"""The run inspector: `agentloop ui --journal runs.db` serves the journal's runs as web pages.

Needs the `ui` extra (`pip install 'agentloop[ui]'`: Starlette, uvicorn, Jinja2). Nothing here
is imported by `import agentloop`.

```python
from agentloop.ui import create_app   # an ASGI app: serve it with any ASGI server
app = create_app("runs.db")
```
"""

from __future__ import annotations

from ._app import AgentFactory, create_app

__all__ = ["create_app", "AgentFactory"]

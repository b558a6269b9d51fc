"""Run agentloop agents on Temporal workers (`pip install 'agentloop[temporal]'`).

The same `Agent` definition runs as a Temporal workflow: the one agent loop drives activities,
one per model request and one per tool call, so a run survives worker crashes and scales out over
any number of workers.

```python
from temporalio.client import Client
from agentloop.temporal import create_worker, start_run

client = await Client.connect("localhost:7233")
async with create_worker(client, "agents", tools=tools, model=FluxClient()):   # or `agentloop worker`
    run = await start_run(client, agent, "What's the weather in Lisbon?", task_queue="agents")
    result = await run.result()
```

Needs the optional dependency `temporalio`; `import agentloop` never imports it.
"""

from __future__ import annotations

try:
    import temporalio  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the installation
    from ._errors import TemporalNotInstalledError

    raise TemporalNotInstalledError(
        "agentloop.temporal needs the temporalio package: pip install 'agentloop[temporal]'"
    ) from e

from ._errors import IncompatibleWorkerError, TemporalRunError
from ._runs import AgentRun, get_run, run_agent, start_run
from ._spec import ToolActivityOptions, WorkerOptions
from ._store import ConversationStore
from ._worker import PASSTHROUGH_MODULES, create_worker, load_registry, sandbox_runner, worker_main
from ._workflow import AgentWorkflow

__all__ = [
    "AgentRun",
    "AgentWorkflow",
    "ConversationStore",
    "IncompatibleWorkerError",
    "PASSTHROUGH_MODULES",
    "TemporalRunError",
    "ToolActivityOptions",
    "WorkerOptions",
    "create_worker",
    "get_run",
    "load_registry",
    "run_agent",
    "sandbox_runner",
    "start_run",
    "worker_main",
]

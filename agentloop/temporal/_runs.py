"""The client side: start an agent run on Temporal and await its `RunResult`.

```python
client = await temporalio.client.Client.connect("localhost:7233")
run = await start_run(client, agent, "What's the weather in Lisbon?", task_queue="agents")
result = await run.result()        # a RunResult, as from Agent.run; limits raise the same errors
```

The run's id is the workflow id; `get_run(client, run_id)` reattaches from any process.
Approval: `pending = await run.wait_for_approval()` returns the pending calls (empty once the
run has finished), `await run.approve({call_id: True | False | Reject(...) | Override(...)})`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import ApplicationError, CancelledError, TerminatedError, TimeoutError
from temporalio.service import RPCError

import agentloop
from agentloop import (
    ConfigurationError,
    ConversationError,
    Decision,
    PendingCall,
    ResumeError,
    RunLimitExceeded,
    RunLimits,
    RunResult,
)

from .._ids import new_run_id
from ..abc import decision_to_data
from ._errors import TemporalRunError
from ._spec import WORKFLOW_NAME, agent_spec, limits_to_data

__all__ = ["AgentRun", "start_run", "run_agent", "get_run"]


class AgentRun:
    """A handle on one agent run on Temporal (a workflow whose id is `run_id`)."""

    __slots__ = ("handle", "run_id")

    def __init__(self, handle: WorkflowHandle[Any, Any]) -> None:
        self.handle = handle
        self.run_id: str = handle.id

    def __repr__(self) -> str:
        return f"AgentRun(run_id={self.run_id!r})"

    async def result(self) -> RunResult:
        """Wait for the run's end. Returns the `RunResult`; raises the `RunLimitExceeded` subclass a
        limit raised in-process (with `.result`), or `TemporalRunError` when the run failed."""
        try:
            out = await self.handle.result()
        except WorkflowFailureError as e:
            cause = e.cause
            kind = cause.type if isinstance(cause, ApplicationError) else type(cause).__name__
            if isinstance(cause, CancelledError):
                what = "was cancelled"
            elif isinstance(cause, TerminatedError):
                what = "was terminated"
            elif isinstance(cause, TimeoutError):
                what = "timed out (workflow execution timeout)"
            else:
                what = f"failed: {cause.message if isinstance(cause, ApplicationError) else cause}"
            raise TemporalRunError(
                f"agent run {self.run_id!r} {what}. See its history with `temporal workflow show --workflow-id "
                f"{self.run_id}`; fix the cause and start it again.",
                run_id=self.run_id,
                error_type=kind,
            ) from None
        result = RunResult.from_json(out["result"])
        error = out.get("error")
        if error:
            cls = getattr(agentloop, error["type"], None)  # every RunLimitExceeded subclass is public
            if not (isinstance(cls, type) and issubclass(cls, RunLimitExceeded)):
                cls = RunLimitExceeded
            raise cls(error["message"], result)
        return result

    async def pending(self) -> list[PendingCall]:
        """The calls waiting for a decision right now (a query; empty when none)."""
        return [PendingCall(**p) for p in await self.handle.query("pending")]

    async def wait_for_approval(self) -> list[PendingCall]:
        """Wait until the run needs decisions and return the pending calls; empty once it has finished."""
        try:
            data = await self.handle.execute_update("wait_for_approval")
        except RPCError:
            if (await self.handle.describe()).status != WorkflowExecutionStatus.RUNNING:
                return []  # it has finished: nothing will ever wait for approval
            raise
        return [PendingCall(**p) for p in data]

    async def approve(self, approvals: Mapping[str, Decision]) -> None:
        """Decide every pending call (as `Agent.resume(result, approvals=...)`); the run continues."""
        data = {k: decision_to_data(v) for k, v in approvals.items()}
        try:
            await self.handle.execute_update("approve", data)
        except WorkflowUpdateFailedError as e:
            cause = e.cause
            raise ResumeError(
                f"run {self.run_id!r} refused the approvals: {getattr(cause, 'message', cause)}"
            ) from None

    async def cancel(self) -> None:
        """Ask Temporal to cancel the run (`result()` then raises `TemporalRunError`)."""
        await self.handle.cancel()


async def start_run(
    client: Client,
    agent: Any,
    prompt: str | None = None,
    *,
    task_queue: str,
    messages: list[dict[str, Any]] | None = None,
    run_id: str | None = None,
    limits: RunLimits | None = None,
    execution_timeout: float | None = None,
) -> AgentRun:
    """Start `agent` (an `Agent`: model, instructions, limits, tool choice, settings) as a Temporal
    workflow served by workers on `task_queue`, and return its handle. The agent's `client` is not
    used: the worker's model answers, and the worker's registry supplies the tools by name."""
    if not isinstance(task_queue, str) or not task_queue:
        raise ConfigurationError(f"task_queue must be a non-empty string, got {task_queue!r}")
    if limits is not None and not isinstance(limits, RunLimits):
        raise ConfigurationError(f"limits must be a RunLimits, got {limits!r}")
    spec = agent_spec(agent)
    if limits is not None:
        spec["limits"] = limits_to_data(limits)
    if prompt is None and not messages:
        raise ConversationError("nothing to send: pass a prompt, messages=[...], or both")
    agent._start(prompt, messages, run_id)  # validates the conversation here, not in the worker
    handle = await client.start_workflow(
        WORKFLOW_NAME,
        {"agent": spec, "prompt": prompt, "messages": list(messages) if messages is not None else None},
        id=run_id or new_run_id(),
        task_queue=task_queue,
        execution_timeout=timedelta(seconds=execution_timeout) if execution_timeout else None,
    )
    return AgentRun(handle)


async def run_agent(client: Client, agent: Any, prompt: str | None = None, **kwargs: Any) -> RunResult:
    """`start_run(...)` and wait for its result."""
    return await (await start_run(client, agent, prompt, **kwargs)).result()


def get_run(client: Client, run_id: str) -> AgentRun:
    """Reattach to a run started elsewhere."""
    return AgentRun(client.get_workflow_handle(run_id))

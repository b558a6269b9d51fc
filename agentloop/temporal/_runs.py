"""The client side: start an agent run on Temporal and await its `RunResult`.

```python
client = await temporalio.client.Client.connect("localhost:7233")
run = await start_run(client, agent, "What's the weather in Lisbon?", task_queue="agents")
result = await run.result()        # a RunResult, as from Agent.run; limits raise the same errors
```

The run's id is the workflow id; `get_run(client, run_id)` reattaches from any process.
Approval: `pending = await run.wait_for_approval()` returns the pending calls (empty once the
run has finished), `await run.approve({call_id: True | False | Reject(...) | Override(...)})`.

Per run, as `Agent.run`: `deps=` (JSON data: it travels in the history to the worker's tools),
`model=`, `model_settings=`, `instructions=`. Dynamic instructions of the agent are resolved
here, once, when the run starts (as in-process, where they are resolved once at the start of
the run); the text is the run's system message. A structured `output_type` is validated in the
workflow against its JSON schema and turned back into the type by `AgentRun.result()`.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, TypedDict

from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import ApplicationError, CancelledError, TerminatedError, TimeoutError
from temporalio.service import RPCError
from typing_extensions import Unpack

import agentloop
from agentloop import (
    ConfigurationError,
    ConversationError,
    Decision,
    OutputValidationError,
    PendingCall,
    ResumeError,
    RunContext,
    RunLimitExceeded,
    RunLimits,
    RunResult,
)

from ..abc import decision_to_data
from ._errors import IncompatibleWorkerError, TemporalRunError
from ._spec import ROOT_KEY, WORKFLOW_NAME, agent_spec, check_deps, limits_to_data, reached
from ._version import INCOMPATIBLE, requirements

__all__ = ["AgentRun", "PerRun", "start_run", "run_agent", "get_run"]


class PerRun(TypedDict, total=False):
    """`start_run`'s per-run options: the same names and meaning as `Agent.run`'s."""

    deps: Any
    model: str
    model_settings: Mapping[str, Any]
    instructions: Any


class AgentRun:
    """A handle on one agent run on Temporal (a workflow whose id is `run_id`).

    `agent`: the agent that was started (or one like it), to turn a structured output back into
    its `output_type`; without it `result().output` is the validated JSON data.
    """

    __slots__ = ("agent", "handle", "run_id")

    def __init__(self, handle: WorkflowHandle[Any, Any], agent: Any = None) -> None:
        self.handle = handle
        self.run_id: str = handle.id
        self.agent = agent

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
            failed = IncompatibleWorkerError if kind == INCOMPATIBLE else TemporalRunError
            raise failed(
                f"agent run {self.run_id!r} {what}. See its history with `temporal workflow show --workflow-id "
                f"{self.run_id}`; fix the cause and start it again.",
                run_id=self.run_id,
                error_type=kind,
            ) from None
        result = RunResult.from_json(out["result"])
        error = out.get("error")
        if error:
            if error["type"] == OutputValidationError.__name__:
                raise OutputValidationError(
                    error["message"], result, error.get("last_answer"), list(error.get("errors") or ())
                )
            cls = getattr(agentloop, error["type"], None)  # every RunLimitExceeded subclass is public
            if not (isinstance(cls, type) and issubclass(cls, RunLimitExceeded)):
                cls = RunLimitExceeded
            raise cls(error["message"], result)
        result.output = self._typed(result)
        return result

    def _typed(self, result: RunResult) -> Any:
        """The output as the agent that gave it (after handoffs: `result.agent_name`) types it."""
        spec = getattr(_finisher(self.agent, result.agent_name), "output", None)
        output = result.output
        if spec is None or result.stop_reason != "final" or output is None:
            return output
        if isinstance(output, str) and spec.allows_text:
            return output  # a structured answer is a JSON object: a str is the text fallback's text
        try:  # the workflow validated it against the same schema; this makes it the type again
            return spec.validate(output)
        except Exception as e:
            raise ResumeError(
                f"run {self.run_id!r}: its output does not validate against this agent's output_type ({e}); "
                "was output_type changed since the run started?"
            ) from None

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


def _finisher(agent: Any, name: str | None) -> Any:
    """The agent named `name` among those `agent` reaches through handoffs (`agent` when none is)."""
    seen, todo = {id(agent)}, [agent]
    while todo:
        a = todo.pop(0)
        if getattr(a, "name", None) == name:
            return a
        for h, _ in getattr(a, "handoffs", ()):
            if id(h.agent) not in seen:
                seen.add(id(h.agent))
                todo.append(h.agent)
    return agent


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
    **per_run: Unpack[PerRun],
) -> AgentRun:
    """Start `agent` (an `Agent` and the agents it reaches through agent tools and handoffs) as a
    Temporal workflow served by workers on `task_queue`, and return its handle. The agent's
    `client` is not used: the worker's model answers, and the worker's registry supplies each
    agent's tools by name. `per_run`: `deps`, `model`, `model_settings`, `instructions`, as
    `Agent.run` takes them."""
    if not isinstance(task_queue, str) or not task_queue:
        raise ConfigurationError(f"task_queue must be a non-empty string, got {task_queue!r}")
    if limits is not None and not isinstance(limits, RunLimits):
        raise ConfigurationError(f"limits must be a RunLimits, got {limits!r}")
    data = await _workflow_input(agent, prompt, messages, run_id, limits, per_run)
    run_id = data.pop("run_id")  # minted by the agent when not given
    timeout = timedelta(seconds=execution_timeout) if execution_timeout else None
    try:
        handle = await client.start_workflow(
            WORKFLOW_NAME, data, id=run_id, task_queue=task_queue, execution_timeout=timeout
        )
    except RecursionError:
        raise ConfigurationError(
            "the run's input (prompt, messages or the agents' settings) is nested too deeply to be sent as "
            "JSON to Temporal; flatten it"
        ) from None
    except RPCError as e:
        if "exceeds limit" not in e.message:
            raise
        raise ConfigurationError(
            f"the run's input is larger than the Temporal server accepts in a workflow's history ({e.message}); "
            "keep large documents out of the prompt and the messages: give the agent a tool that fetches them"
        ) from None
    return AgentRun(handle, agent)


async def _workflow_input(
    agent: Any,
    prompt: str | None,
    messages: list[dict[str, Any]] | None,
    run_id: str | None,
    limits: RunLimits | None,
    per_run: PerRun,
) -> dict[str, Any]:
    """What the workflow starts from: the agents' spec, the conversation, the deps; all checked here."""
    unknown = sorted(set(per_run) - set(PerRun.__annotations__))
    if unknown:
        approval = {"require_approval", "requires_approval"} & set(unknown)
        raise ConfigurationError(
            f"start_run() got unknown options {unknown}; per run it takes {sorted(PerRun.__annotations__)}"
            + (
                " (approval is not set per run: Agent(require_approval=fn) for the agent, "
                "requires_approval=True when a tool is registered)"
                if approval
                else ""
            )
        )
    spec = agent_spec(agent)
    if limits is not None:
        spec["limits"] = limits_to_data(limits)
    if prompt is None and not messages:
        raise ConversationError("nothing to send: pass a prompt, messages=[...], or both")
    deps = check_deps(per_run.get("deps"))
    get = per_run.get
    # validates the conversation and the per-run options here, not in the worker; mints the run id
    state = agent._start(
        prompt, messages, run_id, deps, get("model"), get("model_settings"), get("instructions")
    )
    run_id = state.run_id
    spec.update(model=state.model, model_settings=dict(state.settings))
    if "instructions" in per_run and not callable(per_run["instructions"]):
        spec["instructions"] = per_run["instructions"]
    if state.instructions is not None:  # a function: called once, now, as at the start of an in-process run
        context = RunContext(deps, run_id, state.model, 0, messages=state.messages)
        spec["instructions"] = await _resolve(state.instructions, context)
    if ROOT_KEY in reached([spec, *spec.get("agents", {}).values()]):
        _own(spec, agent)
    spec.update(requires=requirements(spec), agentloop=agentloop.__version__)
    conversation = list(messages) if messages is not None else None
    text = spec.get("instructions")
    if get("instructions") is not None and text and conversation and conversation[0].get("role") in _SYSTEM:
        # Agent.run's rule: this run's instructions replace the leading system message. The
        # worker's agent has them as its own, which keep a leading system message: put them there.
        conversation[0] = {**conversation[0], "content": text}
    return {"agent": spec, "prompt": prompt, "messages": conversation, "deps": deps, "run_id": run_id}


_SYSTEM = ("system", "developer")


def _own(spec: dict[str, Any], agent: Any) -> None:
    """The first agent's own settings where the run starts with others (per-run options, resolved
    instructions): a handoff back to it, or it as an agent tool, uses its own, as in-process."""
    own: dict[str, Any] = {}
    if not callable(agent.instructions) and spec["instructions"] != agent.instructions:
        own["instructions"] = agent.instructions
    if spec["model"] != agent.model:
        own["model"] = agent.model
    if spec["model_settings"] != dict(agent.model_settings):
        own["model_settings"] = dict(agent.model_settings)
    if own:
        spec["own"] = own


async def _resolve(instructions: Any, ctx: RunContext[Any]) -> str | None:
    text = instructions(ctx)
    if inspect.isawaitable(text):
        text = await text
    if text is not None and not isinstance(text, str):
        raise ConfigurationError(f"the instructions function returned {type(text).__name__}, not str")
    return text


async def run_agent(client: Client, agent: Any, prompt: str | None = None, **kwargs: Any) -> RunResult:
    """`start_run(...)` and wait for its result."""
    return await (await start_run(client, agent, prompt, **kwargs)).result()


def get_run(client: Client, run_id: str, agent: Any = None) -> AgentRun:
    """Reattach to a run started elsewhere (`agent`: to get a structured output back as its type)."""
    return AgentRun(client.get_workflow_handle(run_id), agent)

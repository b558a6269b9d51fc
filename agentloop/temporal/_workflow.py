"""The Temporal workflow: the ONE agent loop (`Agent.run` / `Agent.resume`), unchanged, driven by
activities at its two seams.

- The model seam (`Model.request`) is `_ActivityModel`: each model request is a
  `model_request` activity; the conversation goes by reference (`_store`), so the history grows
  per step by what the step added, not by the conversation's length.
- The tool seam is the sandbox seam of the `Dispatcher`: the workflow's registry holds proxies
  of the worker's tools (same names, schemas, approval and idempotency flags) whose sandbox is
  `_ActivityBox`; invoking one runs a `tool_call` activity. So the loop's own code validates
  arguments, repairs nothing (the model activity already did), applies `RunLimits` (steps, tool
  calls, tokens, loop detection, the timeout as a cancel scope, which Temporal turns into a
  durable timer), keeps the calls of one message concurrent (one task group: the activities are
  scheduled together) and pauses for approval. The tool itself runs in the worker through the
  worker's `Dispatcher`, with its sandbox mode and `Limits`.

- The user's functions (a `History(processor=...)`, a handoff's `input_filter`) are stand-ins
  that run the `call_function` activity on the worker, which was given the functions
  (`_functions.py`); the loop around them is its own code, unchanged.

Determinism: nothing here reads a clock, a random source or does I/O. The loop runs on
Temporal's deterministic event loop (anyio's asyncio backend uses the running loop's `time()`,
`call_at` and tasks, which Temporal makes durable); the only random thing in the loop, minting a
tool-call id, never happens here because the model activity repairs ids before the answer is
recorded. A run's `deadline` is turned into a timeout against `workflow.now()`. The one value
that is not replayed exactly is `ToolCallRecord.duration_s` (measured by the loop around the
activity); it is reporting only and never decides anything. `tests/test_temporal.py` replays
recorded histories with Temporal's `Replayer` to check this.

Approval: when the loop pauses, the workflow waits for the `approve` update (validated: one
decision per pending call), then continues with `Agent.resume`, as in-process.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RawValue, RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    import contextvars
    import operator
    from dataclasses import asdict, replace

    from agentloop import (
        Agent,
        AgentloopError,
        ModelTurn,
        OutputValidationError,
        PendingCall,
        RunLimitExceeded,
        RunLimits,
        ToolCallStarted,
        ToolRegistry,
        Usage,
    )

    from ..abc import check_decisions, decision_from_data
    from ._activities import NON_RETRYABLE_MODEL_ERRORS
    from ._agents import SpecError, build_agents, start_options
    from ._functions import WorkflowFunctions, cause_message, cause_type, execute_activity
    from ._spec import DESCRIBE_ACTIVITY, MODEL_ACTIVITY, TOOL_ACTIVITY, WORKFLOW_NAME, limits_from_data
    from ._store import REFERENCE_MISSING, ROOT, chain, digest_of, tools_digest
    from ._version import check_spec

__all__ = ["AgentWorkflow"]


class _Outcome:
    """What the Dispatcher reads from a sandbox call."""

    __slots__ = ("content", "error", "status", "traceback")
    formatted = True  # the worker's Dispatcher wrote the text (and its format_tool_error): keep it

    def __init__(self, status: str, content: str, error: str | None, traceback: str | None = None) -> None:
        self.status, self.content, self.error, self.traceback = status, content, error, traceback


# The call a task is running: set when the loop announces it (ToolCallStarted, emitted in the
# call's own task right before the call runs), read by the box, which the executor seam hands
# only the tool and its arguments. Task-local, so concurrent calls each see their own.
_CALL: contextvars.ContextVar[ToolCallStarted] = contextvars.ContextVar("agentloop_temporal_call")


def _note_call(event: Any) -> None:
    """An observer of every agent of the workflow: the model's call id and step reach the worker."""
    if isinstance(event, ToolCallStarted):
        _CALL.set(event)


class _ActivityBox:
    """Stands in for a fork-server sandbox: a proxy tool's invocation is a `tool_call` activity."""

    def __init__(self, run_id: str, tools: dict[str, dict[str, Any]], deps: Any = None) -> None:
        self.run_id = run_id
        self.tools = tools
        self.deps = deps  # JSON data (checked by the client): sent to tools that take a RunContext

    async def call(self, ref: str, args: dict[str, Any], limits: Any) -> _Outcome:
        spec = self.tools[ref]
        data: dict[str, Any] = {"run_id": self.run_id, "name": ref, "arguments": args}
        started = _CALL.get(None)
        if started is not None and started.name == ref:
            data.update(run_id=started.run_id, call_id=started.tool_call_id, step=started.step)
        if spec.get("context"):
            data["deps"] = self.deps
        try:
            out = await execute_activity(
                TOOL_ACTIVITY,
                data,
                start_to_close_timeout=timedelta(seconds=spec["start_to_close_timeout"]),
                heartbeat_timeout=timedelta(seconds=spec["heartbeat_timeout"]),
                retry_policy=RetryPolicy(maximum_attempts=spec["maximum_attempts"]),
                summary=ref,
            )
        except ActivityError as e:
            # Every attempt was lost (a worker died or was shut down mid-call; the tool's own
            # failures are outcomes, not activity failures). Same semantics as a resumed durable run.
            attempts = spec["maximum_attempts"]
            text = (
                f"Outcome unknown: the worker running {ref!r} was lost ({cause_message(e)})"
                + (f" on all {attempts} attempts" if attempts > 1 else "")
                + (
                    ", and it was not run again because it is not marked idempotent"
                    if not spec["idempotent"]
                    else ""
                )
                + ". It may or may not have taken effect: check before calling it again."
            )
            return _Outcome("outcome_unknown", text, "worker lost")
        return _Outcome(out["status"], out["content"], out["error"], out.get("traceback"))


class _ActivityTools(ToolRegistry):
    """An agent's registry in the workflow: proxies of the worker's tools, invoked through `_ActivityBox`
    (plus, registered in-process style, its agent tools)."""

    def __init__(self, box: _ActivityBox, specs: Sequence[dict[str, Any]] = ()) -> None:
        super().__init__()
        self._box = box
        for spec in specs:
            self.add_spec(spec)

    def add_spec(self, spec: dict[str, Any]) -> None:
        fn = spec["definition"]["function"]
        self.register(
            _proxy,
            name=spec["name"],
            description=fn.get("description") or "",
            parameters=fn.get("parameters") or {"type": "object", "properties": {}},
            sandbox="process",
            idempotent=spec["idempotent"],
            requires_approval=spec["requires_approval"],
        )

    def _check_sandbox(self, name: str, fn: Any, mode: str) -> str:
        return name  # the "ref" the box receives: the tool's name on the worker

    def sandbox_for(self, mode: str, tool: str | None = None) -> Any:
        return self._box


def _proxy(**kwargs: Any) -> None:  # pragma: no cover - never called: the box runs the activity
    raise AssertionError("a proxy tool is invoked through its activity")


class _ActivityModel:
    """The `Model` the workflow's agent talks to: one `model_request` activity per request."""

    def __init__(self, described: dict[str, Any]) -> None:
        self.tools_digest = described["digest"]  # the worker's registry: referenced, never sent
        self.sent_tools: set[str] = set()  # other tools arrays the worker was sent (and stores)
        opts = described["model"]
        self.wire = opts.get("wire")  # the worker's wire decides output_mode="auto", as in-process
        self.options: dict[str, Any] = {
            "start_to_close_timeout": timedelta(seconds=opts["start_to_close_timeout"]),
            "heartbeat_timeout": timedelta(seconds=opts["heartbeat_timeout"]),
            "retry_policy": RetryPolicy(
                maximum_attempts=opts["maximum_attempts"],
                non_retryable_error_types=NON_RETRYABLE_MODEL_ERRORS,
            ),
        }
        # Per run (an agent tool's inner run shares this model with the outer run): the digest of
        # the conversation prefix the worker has stored, and that prefix's messages. A request
        # whose messages do not start with those very objects (a handoff's new system message, a
        # history policy's trimmed or noted copy) is sent whole.
        self.synced: dict[Any, tuple[str, list[Any]]] = {}
        self.full_sends = 0

    async def request(self, request: Any, emit: Any = None) -> ModelTurn:
        messages = request.messages
        base, prefix = self.synced.get(request.run_id, (ROOT, []))
        n = len(prefix)
        if n > len(messages) or not all(map(operator.is_, prefix, messages)):
            base, n = ROOT, 0
        data: dict[str, Any] = {
            "model": request.model,
            "base": base,
            "delta": messages[n:],
            "tool_choice": request.tool_choice,
            "settings": dict(request.settings),
            "run_id": request.run_id,
            "step": request.step,
        }
        # The tools array by digest: the worker's registry as it is (the common case), or an
        # agent's own set (a subset, final_result, transfer and agent tools), sent once.
        digest = tools_digest(request.tools) if request.tools else None
        data["tools_digest"] = digest
        if digest is None:
            data["tools"] = []
        elif digest != self.tools_digest and digest not in self.sent_tools:
            data["tools"] = request.tools
        try:
            out = await execute_activity(MODEL_ACTIVITY, data, summary=f"step {request.step}", **self.options)
        except ActivityError as e:
            if cause_type(e) != REFERENCE_MISSING:
                raise
            # This worker does not hold the prefix (or the tools): send everything, once.
            self.full_sends += 1
            data.update(base=ROOT, delta=list(messages), tools=list(request.tools))
            out = await execute_activity(MODEL_ACTIVITY, data, summary=f"step {request.step}", **self.options)
        if digest is not None and digest != self.tools_digest:
            self.sent_tools.add(digest)
        message = out["message"]
        head = digest_of(chain(data["base"], data["delta"]), message)
        self.synced[request.run_id] = (head, [*messages, message])  # the loop appends this very dict
        return ModelTurn(
            message,
            Usage.from_data(out["usage"]),
            out.get("finish_reason"),
            out.get("model"),
            out.get("request_id"),
            usage_problems=tuple(str(p) for p in out.get("usage_problems") or ()),
        )


def _input(raw: RawValue) -> Any:
    """The workflow's input, decoded here rather than by the SDK: an input it cannot decode (JSON
    nested deeper than Python's parser goes, not JSON at all) fails the workflow task, which
    Temporal retries forever. Anyone who can start a workflow on the queue writes this input."""
    try:
        return workflow.payload_converter().from_payload(raw.payload)
    except Exception as e:  # RecursionError, a decoding error, an unknown encoding
        raise ApplicationError(
            f"the workflow input cannot be read ({type(e).__name__}: {str(e)[:200]}): start agent runs with "
            "start_run (JSON nested deeper than a few hundred levels is refused)",
            type="ConfigurationError",
            non_retryable=True,
        ) from None


def _refuse(check: Any, *args: Any) -> Any:
    """`check(*args)`, a `SpecError` failing the run for good (raised from the workflow task, it
    would be retried forever: the run would hang)."""
    try:
        return check(*args)
    except SpecError as e:
        details = [e.details] if e.details else []
        raise ApplicationError(str(e), *details, type=e.kind, non_retryable=True) from None


@workflow.defn(name=WORKFLOW_NAME)
class AgentWorkflow:
    """One agent run. Input: `{"agent": spec, "prompt": str | None, "messages": list | None,
    "deps": JSON | None}` (the spec: `_spec.agent_spec`).

    Output: `{"result": RunResult JSON, "error": None | {"type", "message", ...}}`; a
    `RunLimitExceeded` or `OutputValidationError` comes back as its type and message with the
    partial result, for the client to raise. Any other error of the loop fails the run for good
    (not the workflow task, which Temporal would retry forever).
    """

    def __init__(self) -> None:
        self._pending: list[PendingCall] = []
        self._decisions: dict[str, Any] | None = None
        self._done = False

    @workflow.run
    async def run(self, raw: RawValue) -> dict[str, Any]:
        run_id = workflow.info().workflow_id
        data = _input(raw)
        if not isinstance(data, dict) or not isinstance(data.get("agent"), dict):  # not from start_run
            raise ApplicationError(
                "the workflow input is not {'agent': spec, 'prompt': ...}: start agent runs with start_run",
                type="ConfigurationError",
                non_retryable=True,
            )
        spec = data["agent"]
        _refuse(check_spec, spec)  # before any activity: a spec this worker cannot honour fails at once
        described = await workflow.execute_activity(
            DESCRIBE_ACTIVITY, start_to_close_timeout=timedelta(seconds=60), summary="tools"
        )
        deps = data.get("deps")
        agent = self._agent(spec, described, _ActivityBox(run_id, {}, deps))
        limits = limits_from_data(spec["limits"])  # a deadline is turned into time left at each resume
        try:
            result = await agent.run(
                data.get("prompt"),
                messages=data.get("messages"),
                run_id=run_id,
                deps=deps,
                **start_options(spec),
            )
            while result.paused:
                self._pending = list(result.pending)
                await workflow.wait_condition(lambda: self._decisions is not None)
                decisions, self._decisions, self._pending = self._decisions, None, []
                result = await agent.resume(
                    result, approvals=decisions, limits=self._limits(limits), deps=deps
                )
        except (RunLimitExceeded, OutputValidationError) as e:
            error: dict[str, Any] = {"type": type(e).__name__, "message": str(e)}
            if isinstance(e, OutputValidationError):
                error.update(last_answer=e.last_answer, errors=e.errors)
            return {"result": e.result.to_json(), "error": error}
        except ActivityError as e:  # the model request failed for good: fail the run, do not retry it
            raise ApplicationError(
                f"the model request failed: {cause_message(e)}",
                type=cause_type(e) or "ActivityError",
                non_retryable=True,
            ) from None
        except AgentloopError as e:  # raised by the loop: another attempt of the task would raise it again
            raise ApplicationError(str(e), type=type(e).__name__, non_retryable=True) from None
        finally:
            self._done = True
        return {"result": result.to_json(), "error": None}

    def _agent(self, spec: dict[str, Any], described: dict[str, Any], box: _ActivityBox) -> Agent[Any, Any]:
        """The spec's agents, on the workflow's model and the worker's tools (see `_agents.py`)."""
        box.tools = {t["name"]: t for t in described["tools"]}
        model = _ActivityModel(described)

        def make(**kwargs: Any) -> Agent[Any, Any]:
            if "limits" in kwargs:
                kwargs["limits"] = self._limits(kwargs["limits"])
            return Agent(client=model, observers=[_note_call], **kwargs)

        functions = WorkflowFunctions(described.get("functions", []), model)
        agent: Agent[Any, Any] = _refuse(
            build_agents, spec, box.tools, lambda specs: _ActivityTools(box, specs), make, functions.get
        )
        return agent

    @staticmethod
    def _limits(limits: RunLimits) -> RunLimits:
        """An absolute deadline becomes a timeout against workflow time (no wall clock in here)."""
        if limits.deadline is None:
            return limits
        left = max(limits.deadline - workflow.now().timestamp(), 0.001)
        timeout = left if limits.timeout is None else min(left, limits.timeout)
        return replace(limits, deadline=None, timeout=timeout)

    # --- approval -------------------------------------------------------------------------------

    @workflow.query(name="pending")
    def pending(self) -> list[dict[str, Any]]:
        return [asdict(p) for p in self._pending]

    @workflow.update(name="wait_for_approval")
    async def wait_for_approval(self) -> list[dict[str, Any]]:
        """Wait until the run waits for decisions (the pending calls) or has finished (empty)."""
        await workflow.wait_condition(lambda: bool(self._pending and self._decisions is None) or self._done)
        return [] if self._done else [asdict(p) for p in self._pending]

    @workflow.update(name="approve")
    async def approve(self, decisions: dict[str, Any]) -> None:
        self._decisions = {k: decision_from_data(v) for k, v in decisions.items()}

    @approve.validator
    def _check_approve(self, decisions: dict[str, Any]) -> None:
        if not self._pending or self._decisions is not None:
            raise ApplicationError(
                "the run is not waiting for approvals", type="ResumeError", non_retryable=True
            )
        if not isinstance(decisions, dict):
            raise ApplicationError(
                "approvals must be {call_id: decision}", type="ResumeError", non_retryable=True
            )
        try:
            check_decisions(self._pending, {k: decision_from_data(v) for k, v in decisions.items()})
        except Exception as e:  # ResumeError: unknown or missing ids
            raise ApplicationError(str(e), type="ResumeError", non_retryable=True) from None

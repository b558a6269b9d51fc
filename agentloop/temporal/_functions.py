"""The workflow side of activities: starting one the way anyio cancels, and the user's functions
(`History(processor=...)`, a handoff's `input_filter`, dynamic instructions of an agent the run
reaches) as calls of the `call_function` activity.

The rule: a user function never runs in workflow code. It may do I/O (summarise with a model),
read a clock or be slow, and the workflow is replayed. The client names it (`module:qualname`),
the worker was given the same function (`create_worker(functions=[...])`) and runs it in an
activity; the activity's result is recorded in the history, so a replay reads it back instead
of calling the function again. What the loop does around it is the loop's own code, unchanged:
the history policy's other steps, checking and repairing what the function returned.

The run's conversation goes to a processor by reference (the worker's `ConversationStore`, as
for model requests): normally only the messages added since its last call cross. Its result is
recorded as references into what the workflow sent (`_store.refer`): a message it returned
unchanged is an index, only a new or changed one crosses whole; and the worker stores the
result, so the model request right after it refers to it by digest. An input filter runs once
per handoff and gets its messages whole.

Plain code, no I/O, no clock: it runs in workflow code (passed through the sandbox as the loop's
modules are).
"""

from __future__ import annotations

import asyncio
import operator
from collections.abc import Callable
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

from agentloop import RunContext

from ._agents import SpecError
from ._spec import FUNCTION_ACTIVITY
from ._store import REFERENCE_MISSING, ROOT, chain, resolve

__all__ = ["WorkflowFunctions", "cause_message", "cause_type", "execute_activity"]


def cause_type(e: BaseException) -> str | None:
    cause = e.__cause__
    while cause is not None:
        if isinstance(cause, ApplicationError):
            return cause.type
        cause = cause.__cause__
    return None


def cause_message(e: BaseException) -> str:
    cause = e
    while cause.__cause__ is not None:
        cause = cause.__cause__
    return str(cause)


async def execute_activity(name: str, arg: Any, **options: Any) -> Any:
    """`workflow.execute_activity`, but cancellable the way anyio cancels.

    Temporal swallows a task's cancellation while it awaits an activity (it requests the
    activity's cancellation and keeps waiting for the outcome). anyio's cancel scopes, on the
    other hand, re-deliver cancellation on every loop iteration until the task leaves the scope,
    so awaiting the activity directly would spin the workflow's event loop forever. Here the
    activity is its own Temporal-owned handle; our task only waits on it through a shield, so a
    cancellation (the run's timeout, a failing sibling) leaves at once, exactly as in-process,
    and the activity is asked to cancel (the worker sees it at its next heartbeat).
    """
    handle = workflow.start_activity(name, arg, **options)
    try:
        return await asyncio.shield(handle)
    except asyncio.CancelledError:
        handle.cancel()
        handle.add_done_callback(_consume)
        raise


def _prefix(conversation: list[Any], *known: tuple[str, list[Any]] | None) -> tuple[str, int]:
    """The longest prefix of `conversation` the worker holds (the digest, its length): what this
    run's earlier calls sent, or what its model requests did (a handoff's first call, the worker
    has the conversation up to the last answer). The very message objects, or nothing."""
    best = (ROOT, 0)
    for digest, prefix in filter(None, known):
        n = len(prefix)
        if best[1] < n <= len(conversation) and all(map(operator.is_, prefix, conversation)):
            best = (digest, n)
    return best


def _consume(task: Any) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: its outcome no longer matters to the run


_WHAT = {
    "history": "History(processor=...)",
    "input_filter": "a handoff's input_filter",
    "instructions": "instructions=<function>",
}


class WorkflowFunctions:
    """The worker's functions, as the workflow's agents call them. `model`: the workflow's activity
    model, whose conversation reference the processor's stored result becomes."""

    def __init__(self, available: list[str], model: Any) -> None:
        self.available = set(available)
        self.model = model
        self.synced: dict[Any, tuple[str, list[Any]]] = {}  # per run: what the worker has of ctx.messages

    def get(self, ref: str, kind: str, who: str) -> Callable[..., Any]:
        """The stand-in for the function `ref` (kind "history" or "input_filter") of agent `who`."""
        if ref not in self.available:
            what = _WHAT[kind]
            raise SpecError(
                f"the worker has no function {ref!r} ({what} of agent {who!r}); pass the same function to "
                "create_worker(functions=[...]) on the worker",
                "ConfigurationError",
            )
        if kind == "history":

            async def process(ctx: RunContext[Any], messages: list[dict[str, Any]]) -> Any:
                return await self._process(ref, ctx, messages)

            return process
        if kind == "instructions":

            async def instructions(ctx: RunContext[Any]) -> Any:
                out = await self._with_context(ref, kind, ctx, {})
                return out["text"]

            instructions.__name__ = ref  # what the loop's messages name it by
            return instructions

        async def input_filter(messages: list[dict[str, Any]]) -> Any:
            out = await self._call({"ref": ref, "kind": kind, "messages": messages}, None)
            return out["value"] if "value" in out else resolve(out["items"], messages)

        return input_filter

    async def _process(self, ref: str, ctx: RunContext[Any], messages: list[dict[str, Any]]) -> Any:
        conversation = list(ctx.messages)
        # By value: the loop hands a processor copies (it may change them in place), so identity
        # no longer says "unchanged"; equal messages are the conversation itself all the same.
        same = len(messages) == len(conversation) and messages == conversation
        # None: the conversation itself (no other policy)
        out = await self._with_context(ref, "history", ctx, {"messages": None if same else messages})
        if "value" in out:  # not a list of messages: what the loop's own check refuses, as in-process
            return out["value"]
        result = resolve(out["items"], conversation + ([] if same else messages))
        self.model.synced[ctx.run_id] = (out["digest"], result)  # the worker stored it
        return result

    async def _with_context(self, ref: str, kind: str, ctx: RunContext[Any], extra: dict[str, Any]) -> Any:
        """A call of a function of the run's context (a processor, dynamic instructions): the
        conversation by reference (what the worker has of it from this run's earlier calls), the
        rest of the `RunContext` by value."""
        conversation = list(ctx.messages)
        base, n = _prefix(conversation, self.synced.get(ctx.run_id), self.model.synced.get(ctx.run_id))
        data = {
            "ref": ref,
            "kind": kind,
            "base": base,
            "delta": conversation[n:],
            **extra,
            "deps": ctx.deps,
            "run_id": ctx.run_id,
            "model": ctx.model,
            "step": ctx.step,
            "usage": ctx.usage.to_data(),
        }
        out = await self._call(data, conversation)
        self.synced[ctx.run_id] = (chain(data["base"], data["delta"]), conversation)
        return out

    async def _call(self, data: dict[str, Any], conversation: list[Any] | None) -> Any:
        options = self.model.options
        try:
            try:
                return await execute_activity(FUNCTION_ACTIVITY, data, summary=data["ref"], **options)
            except ActivityError as e:
                if cause_type(e) != REFERENCE_MISSING or conversation is None:
                    raise
                data.update(base=ROOT, delta=conversation)  # this worker lacks the prefix: send it all, once
                return await execute_activity(FUNCTION_ACTIVITY, data, summary=data["ref"], **options)
        except ActivityError as e:  # the function raised (or every worker running it was lost)
            raise ApplicationError(
                f"{cause_message(e)}", type=cause_type(e) or "ActivityError", non_retryable=True
            ) from None

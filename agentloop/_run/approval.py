"""Human approval: which calls need it, the decisions, and the JSON form of a (paused) run.

A tool registered with `requires_approval=True`, or any call for which the agent's
`require_approval(name, arguments)` predicate returns True, pauses the run: the other calls of
the step run, and `Agent.run` returns a `RunResult` with `stop_reason="approval_required"` and
`pending` (id, tool name, validated arguments). `Agent.resume(result, approvals={call_id:
decision})` continues it:

- `True`: the call runs;
- `False` (or `Reject("why")`): it is not run; the model is told a human rejected it;
- `Override(value)`: it is not run; `value` stands in as its result (encoded like a tool's).

`result.to_json()` / `RunResult.from_json(text)` carry a paused run to another process.
"""

from __future__ import annotations

import inspect
import reprlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio

from .. import _json
from .._budget import InputBudget
from .._exceptions import ResumeError, RunError
from .._tools.arguments import Checked, checked_arguments
from .._tools.registry import ToolRegistry
from .._types import (
    PendingCall,
    ToolCallRecord,
    encode_result,
    result_from_json,
    result_to_json,
    sendable,
)

__all__ = [
    "Override",
    "Reject",
    "Decision",
    "ApprovalPredicate",
    "check_approval",
    "decision_record",
    "decision_to_data",
    "decision_from_data",
    "result_to_json",
    "result_from_json",
]

# sync or async: an async predicate's coroutine was truthy, so every call paused unasked and its
# own logic never ran (with a "never awaited" warning)
ApprovalPredicate = Callable[[str, dict[str, Any]], "bool | Awaitable[bool]"]


@dataclass(frozen=True, slots=True)
class Override:
    """A human-supplied result that stands in for the call (the tool is not run)."""

    result: Any


@dataclass(frozen=True, slots=True)
class Reject:
    """A rejection with a reason the model is told."""

    reason: str = ""


Decision = bool | Override | Reject


@dataclass(frozen=True, slots=True)
class NestedDecision:
    """Internal: the decision for a call of an agent tool's inner run, with that run's paused state
    (`PendingCall.inner`) for the agent tool to resume it from (see `agent_tool.py`)."""

    decision: Decision
    inner: str


async def check_approval(
    registry: ToolRegistry,
    predicate: ApprovalPredicate | None,
    name: str,
    raw: Any,
    budget: InputBudget,
    limiter: Callable[[], anyio.CapacityLimiter],
) -> dict[str, Any] | None:
    """The validated arguments when this call needs approval, else None.

    Calls that will fail anyway (unknown tool, invalid arguments, arguments over the budget)
    need no approval: they never reach the tool.
    """
    tool = registry.get(name)
    if tool is None or (not tool.requires_approval and predicate is None):
        return None
    checked = await checked_arguments(tool, raw, budget, False, limiter)
    if not isinstance(checked, Checked):
        return None
    args = checked.arguments
    if tool.requires_approval:
        return args
    try:
        verdict = predicate(name, args)  # type: ignore[misc]
        if inspect.isawaitable(verdict):
            verdict = await verdict
    except Exception as e:  # fail safe: no call of the step has run yet, and none will
        raise RunError(
            f"the require_approval predicate raised {type(e).__name__}: {reprlib.repr(str(e))} for a call of "
            f"tool {reprlib.repr(name)}; that call and the rest of its step were not run. Fix the predicate "
            "(it must return True or False), then resume the run or run it again."
        ) from e
    return args if verdict else None


def decision_record(pending: PendingCall, decision: Decision, raw: str) -> ToolCallRecord | None:
    """The record that stands in for a rejected or overridden call; None for an approval."""
    if decision is True:
        return None
    if decision is False or isinstance(decision, Reject):
        why = decision.reason if isinstance(decision, Reject) else ""
        reason = f" Reason: {sendable(why)}" if why else ""  # sent to the model: no lone surrogates
        content = (
            f"Not run: a human rejected this call of {pending.name!r}.{reason} Do not call it again "
            "with these arguments; continue without it or ask the user."
        )
        return ToolCallRecord(
            pending.id, pending.name, pending.arguments, "rejected", content, pending.step, raw_arguments=raw
        )
    if isinstance(decision, Override):
        status, content, _ = encode_result(pending.name, decision.result, None)
        if status != "ok":
            raise ResumeError(
                f"Override for call {pending.id!r}: {content} Pass a str or a JSON-encodable value."
            )
        return ToolCallRecord(
            pending.id,
            pending.name,
            pending.arguments,
            "overridden",
            content,
            pending.step,
            raw_arguments=raw,
        )
    raise ResumeError(
        f"approval for call {pending.id!r} must be True, False, Reject(reason) or Override(result), got {decision!r}"
    )


def decision_to_data(decision: Decision) -> Any:
    """A decision as JSON data (the journal's "approvals" entry, Temporal's update, the inspector's form).

    Only a decision has a data form: anything else (`"no"`, `1`, `None`) raises `ResumeError`, never
    turns into an approval (`bool("no")` is True). An `Override` whose result cannot be encoded
    raises `ResumeError` too, before anything is stored.
    """
    if isinstance(decision, bool):
        return decision
    if isinstance(decision, Reject) and isinstance(decision.reason, str):
        return {"reject": sendable(decision.reason)}
    if isinstance(decision, Override):
        result = decision.result
        if encode_result("override", result, None)[0] != "ok":  # what the journal and the model need
            raise ResumeError(
                f"Override({_shown(result)}): a {type(result).__name__} cannot be encoded as JSON; "
                "pass a str or a JSON-encodable value"
            )
        value = sendable(result) if isinstance(result, str) else _json.plain(result)  # a set: a list
        if not isinstance(value, str) and _json.depth_exceeds(value, _json.MAX_VALUE_DEPTH):
            # the journal wrote it (orjson goes to 254) but never read it back (200): the run was lost
            raise ResumeError(
                f"Override({_shown(result)}): the value is nested deeper than {_json.MAX_VALUE_DEPTH} "
                "levels (arrays and objects); pass a flatter value or its JSON text as a str"
            )
        return {"override": value}
    raise ResumeError(
        f"a decision must be True, False, Reject(reason: str) or Override(result), got {_shown(decision)}"
    )


def decision_from_data(data: Any) -> Decision:
    """The decision `decision_to_data` wrote. Data of any other shape raises `ResumeError` (a decision
    that cannot be read is never taken for an approval)."""
    if isinstance(data, bool):
        return data
    if isinstance(data, dict) and len(data) == 1:
        if "override" in data:
            return Override(data["override"])
        if isinstance(data.get("reject"), str):
            return Reject(data["reject"])
    raise ResumeError(
        'a decision\'s data must be true, false, {"reject": reason} or {"override": result}, '
        f"got {_shown(data)}"
    )


def _shown(value: Any) -> str:
    """A bounded repr (the value may be huge or deeply nested data): reprlib bounds the work, the
    cut bounds the text (reprlib's bounds are per element)."""
    shown = reprlib.repr(value)
    return shown if len(shown) <= 200 else shown[:200] + "..."


def check_decisions(
    pending: list[PendingCall], approvals: Mapping[str, Decision] | None
) -> dict[str, Decision]:
    """The decisions for `pending`, one for each call (`ResumeError`: a call missing, one that is not
    pending, a value that is not a decision)."""
    if approvals is not None and not isinstance(approvals, Mapping):
        raise ResumeError(
            f"approvals must be a mapping {{call_id: decision}}, got {type(approvals).__name__}"
        )
    wanted = {p.id for p in pending}
    approvals = dict(approvals or {})
    unknown = sorted(set(approvals) - wanted, key=repr)  # keys of any type: the message must not fail
    if unknown:
        raise ResumeError(
            f"approvals given for calls that are not pending: {unknown}; pending: {sorted(wanted)}"
        )
    missing = sorted(wanted - set(approvals))
    if missing:
        names = ", ".join(f"{p.id} ({p.name})" for p in pending if p.id in missing)
        raise ResumeError(
            f"the run waits for a decision on every pending call; missing: {names}. Pass "
            "approvals={call_id: True | False | Override(result)} for each."
        )
    for call_id, value in approvals.items():  # each a decision, checked before any is journaled
        try:
            decision_to_data(value)
        except ResumeError as e:
            raise ResumeError(f"approval for call {call_id!r}: {e}") from None
    decided: dict[str, Any] = approvals  # Decision, or NestedDecision: internal, for an agent tool
    for p in pending:  # an inner run's paused state rides with the decisions to its agent tool
        if p.inner is not None:
            decided[p.id] = NestedDecision(approvals[p.id], p.inner)
    return decided

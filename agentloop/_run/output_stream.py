"""Partial structured output while streaming: `OutputDelta` events as the final answer arrives.

With `output_type` and `Agent.stream`, the fragments of the answer (the `final_result` call's
argument deltas, or the text of a native answer) are gathered per step; after each fragment the
JSON received so far is completed (open strings and containers closed, a dangling key or comma
dropped) and, when what is there so far matches the schema apart from fields not yet sent,
an `OutputDelta` carries it as plain JSON data. The typed, fully validated value is still only
`RunFinished.result.output`: a partial object may lack required fields, so it stays data.

Only the consumer of the stream pays for this: without `output_type`, or with `run`, the
events are not wrapped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import _json
from .._events import Event, TextDelta, ToolCallDelta, quick_init
from .._model import Emit
from .output_spec import TOOL_NAME, OutputSpec

__all__ = ["OutputDelta", "complete_json", "partial_output_emit"]


@quick_init
@dataclass(frozen=True, slots=True)
class OutputDelta(Event):
    """The structured output received so far (JSON data), after each piece of a streamed answer."""

    step: int
    output: Any


def partial_output_emit(emit: Emit, current: Callable[[], OutputSpec]) -> Emit:
    """`emit`, also sending an `OutputDelta` whenever the streamed answer grows into a valid partial.

    `current()` is the run's output spec at that moment (a refused native format switches it).
    """
    state: dict[str, Any] = {"step": None, "buffer": "", "index": None, "last": _NOTHING}

    async def wrapped(event: Any) -> None:
        await emit(event)
        spec = current()
        if isinstance(event, ToolCallDelta):
            if spec.mode != "tool":
                return
            if state["step"] != event.step:
                state.update(step=event.step, buffer="", index=None, last=_NOTHING)
            if state["index"] is None and event.name == TOOL_NAME:
                state["index"] = event.index
            if event.index != state["index"]:
                return
        elif isinstance(event, TextDelta) and spec.mode == "native":
            if state["step"] != event.step:
                state.update(step=event.step, buffer="", index=None, last=_NOTHING)
        else:
            return
        piece = event.arguments_delta if isinstance(event, ToolCallDelta) else event.text
        if not piece:
            return
        if len(state["buffer"]) > PARTIAL_MAX_CHARS:  # see PARTIAL_MAX_CHARS: no more partials this step
            return
        state["buffer"] += piece
        value = complete_json(state["buffer"])
        if value is _NOTHING or value == state["last"] or not _plausible(spec, value):
            return
        state["last"] = value
        await emit(OutputDelta(event.run_id, event.step, value["response"] if spec.wrapped else value))

    return wrapped


_NOTHING: Any = object()
# Each fragment re-reads the whole answer so far (in Python), so partials cost O(n²) over a
# step: past this size, no more OutputDeltas for the step (the final output still arrives). A
# hostile 5 MB answer in small fragments would otherwise hold the event loop for minutes.
PARTIAL_MAX_CHARS = 64 * 1024
_SKIP = frozenset({"required", "minItems", "minProperties", "minLength", "dependentRequired"})


def _plausible(spec: OutputSpec, value: Any) -> bool:
    """Valid so far: every error is one that more of the answer could still fix."""
    if spec.wrapped and (not isinstance(value, dict) or "response" not in value):
        return False
    return all(e.validator in _SKIP for e in spec.validator.iter_errors(value))


def complete_json(prefix: str) -> Any:
    """The value of a JSON text cut anywhere, completed; `_NOTHING` when there is none yet."""
    text = prefix.strip()
    for _ in range(3):  # the text as is, then cut back to the last complete member, twice
        if not text:
            return _NOTHING
        closed, cut = _close(text)
        try:
            return _json.loads(closed)
        except ValueError:
            if cut is None or cut >= len(text):
                return _NOTHING
            text = text[:cut].rstrip().rstrip(",").rstrip()
    return _NOTHING


def _close(text: str) -> tuple[str, int | None]:
    """`text` with its open string and containers closed, and the last safe place to cut it."""
    stack: list[str] = []
    in_string = escaped = False
    cut: int | None = None
    for i, ch in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
            continue
        if ch == '"':
            in_string = True
        elif ch in "{[":
            stack.append("}" if ch == "{" else "]")
            cut = i + 1
        elif ch in "}]":
            if stack:
                stack.pop()
        elif ch == ",":
            cut = i
    if not in_string and stack and text[-1] in "0123456789.eE+-":
        return text, cut  # a number may be cut short ("1" of "10"): never guess it, cut back
    tail = text
    if in_string:
        tail = tail[:-1] if escaped else tail
        tail += '"'
    stripped = tail.rstrip()
    if stripped.endswith((",", ":")):
        if stripped.endswith(":") and stack and stack[-1] == "}":  # a key without its value: drop it
            return text, cut
        stripped = stripped[:-1]
    return stripped + "".join(reversed(stack)), cut

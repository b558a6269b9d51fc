"""One step's final answer under `output_type`: accept it, or feed the errors back and ask again.

Kept apart from the loop (`_agent.py`) like `_toolstep.py`: the loop only learns whether the
step ended the run ("done"), paused it, must be repeated ("retry"), or is an ordinary tool step
("tools"). Every message this adds keeps the conversation valid for both wires: each call of
the step gets its tool message, and feedback after a text answer is a user message (journaled
as a "message" entry, so a resumed run replays it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from .._events import ToolCallFinished
from .._exceptions import BadRequestError, OutputValidationError
from .._model import ModelRequest
from .._tools.dispatch import Dispatcher
from .calls import tools_step
from .limits import RunLimits
from .output_spec import TOOL_NAME, OutputInvalid, OutputSpec
from .state import Resume, Run, make_record

if TYPE_CHECKING:
    from .agent import Agent

__all__ = ["native_refused", "output_request", "output_step"]

_NATIVE_WORDS = ("response_format", "json_schema", "structured output", "response format")

Verdict = Literal["done", "paused", "retry", "tools"]
_ACCEPTED = "Final result accepted."
_NOT_RUN = "Not run: the run ended with the final result."


def output_request(spec: OutputSpec, request: ModelRequest, tool_choice: Any) -> None:
    """Ask for the output on this run's request: a response format, or the final-answer tool."""
    if spec.mode == "native":
        request.settings = {**request.settings, "response_format": spec.response_format}
        return
    request.tools = [*request.tools, spec.definition]  # a new list: the registry's stays as it is
    if not spec.allows_text and tool_choice in ("auto", None):
        request.tool_choice = "required"  # the answer must come through the tool: never plain text
    elif request.tool_choice is None:
        request.tool_choice = "auto"


def native_refused(spec: OutputSpec, request: ModelRequest, error: BadRequestError) -> OutputSpec | None:
    """When the route refused an automatically chosen response format: the tool spec, with the
    request switched over to it (this run only). None when the error is about something else."""
    if spec.mode != "native" or not spec.auto:
        return None
    text = str(error).lower()
    if not any(w in text for w in _NATIVE_WORDS):
        return None
    tool = spec.as_tool()
    request.settings = {k: v for k, v in request.settings.items() if k != "response_format"}
    output_request(tool, request, "auto" if request.tool_choice is None else request.tool_choice)
    return tool


async def output_step(
    agent: Agent[Any, Any],
    run: Run,
    spec: OutputSpec,
    message: dict[str, Any],
    step: int,
    dispatcher: Dispatcher,
    limits: RunLimits,
) -> tuple[Verdict, Any]:
    calls = message.get("tool_calls") or []
    content = message.get("content")
    if spec.mode == "native":
        if calls:
            return "tools", None
        try:
            return "done", await spec.parse_async(content or "", dispatcher.budget)
        except OutputInvalid as e:
            await _fail(agent, run, spec, content, e.errors, spec.feedback(e.errors, dispatcher.budget))
            return "retry", None
    finals = [c for c in calls if c["function"]["name"] == TOOL_NAME]
    if not finals:
        if calls:
            return "tools", None
        if spec.allows_text:
            return "done", content or ""
        await _fail(
            agent, run, spec, content, ["$: plain text instead of a final_result call"], spec.text_refused()
        )
        return "retry", None
    first = finals[0]
    raw = first["function"]["arguments"]
    try:
        value = await spec.parse_async(raw, dispatcher.budget)
    except OutputInvalid as e:
        errors = e.errors
    else:
        run.step_calls = calls
        for c in calls:
            ok = c is first
            status: Any = "ok" if ok else "skipped"
            record = make_record(c["id"], c["function"]["name"], c["function"]["arguments"], step, status,
                                 _ACCEPTED if ok else _NOT_RUN)  # fmt: skip
            await _settle(run, dispatcher, record)
        run.close_step()
        return "done", value
    # Invalid: the final_result call(s) get the errors as their tool result; the other calls run.
    known = {}
    for c in finals:
        text = (
            spec.feedback(errors, dispatcher.budget)
            if c is first
            else f"Call {TOOL_NAME} only once per answer."
        )
        record = make_record(c["id"], TOOL_NAME, c["function"]["arguments"], step, "invalid_arguments", text)
        await _settle(run, dispatcher, record)
        known[c["id"]] = record
    paused = await tools_step(
        agent, run, calls, step, dispatcher, limits, Resume(calls, known, frozenset(), {})
    )
    if paused is not None:
        return "paused", paused
    _count(agent, run, raw, errors)
    return "retry", None


async def _settle(run: Run, dispatcher: Dispatcher, record: Any) -> None:
    await run.settle(record)
    if dispatcher.emit is not None:
        await dispatcher.emit(ToolCallFinished(run.run_id, record.step, record))


async def _fail(
    agent: Agent[Any, Any], run: Run, spec: OutputSpec, answer: Any, errors: list[str], text: str
) -> None:
    """A text answer that is not an acceptable output: count it, then tell the model why."""
    _count(agent, run, answer, errors)
    feedback = {"role": "user", "content": text}
    run.messages.append(feedback)
    if run.journal is not None:
        await run.journal.append(run.run_id, "message", {"message": feedback}, step=run.steps)


def _count(agent: Agent[Any, Any], run: Run, answer: Any, errors: list[str]) -> None:
    run.output_failures += 1
    if run.output_failures > agent.output_retries:
        listed = "; ".join(errors[:5])
        raise OutputValidationError(
            f"the model's final answer failed output_type validation {run.output_failures} time(s) "
            f"(output_retries={agent.output_retries}); last errors: {listed}. The last answer is in "
            ".last_answer and the partial result in .result; raise output_retries, simplify the output "
            "type, or pin a stronger model.",
            run.result(None, OutputValidationError.stop_reason),
            answer if isinstance(answer, str) or answer is None else str(answer),
            errors,
        )

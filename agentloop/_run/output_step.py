"""One step's final answer under `output_type`: accept it, or feed the errors back and ask again.

Kept apart from the loop (`loop.py`) like `calls.py`: the loop only learns whether the
step ended the run ("done"), paused it ("paused", with the pending calls), must be repeated
("retry"), or is an ordinary tool step ("tools"). Every message this adds keeps the conversation valid for both wires: each call of
the step gets its tool message, and feedback after a text answer is a user message (journaled
as a "message" entry, so a resumed run replays it).
"""

from __future__ import annotations

from typing import Any, Literal

from .._exceptions import BadRequestError, OutputValidationError
from .._model import ModelRequest
from .calls import StepCalls
from .output_spec import TOOL_NAME, OutputInvalid, OutputSpec
from .state import Resume, Run, make_record

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
    spec: OutputSpec, retries: int, calls: StepCalls, run: Run, message: dict[str, Any], step: int
) -> tuple[Verdict, Any]:
    """Judge one answer under `spec`; `retries`: the agent's output_retries."""
    tool_calls = message.get("tool_calls") or []
    content = message.get("content")
    budget = calls.policy.budget
    if spec.mode == "native":
        if tool_calls:
            return "tools", None
        try:
            return "done", await spec.parse_async(content or "", budget)
        except OutputInvalid as e:
            await _fail(retries, calls, run, content, e.errors, spec.feedback(e.errors, budget))
            return "retry", None
    finals = [c for c in tool_calls if c["function"]["name"] == TOOL_NAME]
    if not finals:
        if tool_calls:
            return "tools", None
        if spec.allows_text:
            return "done", content or ""
        errors = ["$: plain text instead of a final_result call"]
        await _fail(retries, calls, run, content, errors, spec.text_refused())
        return "retry", None
    raw = finals[0]["function"]["arguments"]
    try:
        value = await spec.parse_async(raw, budget)
    except OutputInvalid as e:
        return await _invalid(spec, retries, calls, run, tool_calls, finals, step, e.errors)
    run.open_step(tool_calls, None)
    for c in tool_calls:
        ok = c is finals[0]
        status: Any = "ok" if ok else "skipped"
        record = make_record(c["id"], c["function"]["name"], c["function"]["arguments"], step, status,
                             _ACCEPTED if ok else _NOT_RUN)  # fmt: skip
        await _settle(run, calls, record)
    run.close_step()
    return "done", value


async def _invalid(
    spec: OutputSpec,
    retries: int,
    calls: StepCalls,
    run: Run,
    tool_calls: list[dict[str, Any]],
    finals: list[dict[str, Any]],
    step: int,
    errors: list[str],
) -> tuple[Verdict, Any]:
    """An invalid final_result: its call(s) get the errors as their tool result; the other calls run."""
    run.open_step(tool_calls, None)
    known = {}
    for c in finals:
        text = (
            spec.feedback(errors, calls.policy.budget)
            if c is finals[0]
            else f"Call {TOOL_NAME} only once per answer."
        )
        record = make_record(c["id"], TOOL_NAME, c["function"]["arguments"], step, "invalid_arguments", text)
        await _settle(run, calls, record)
        known[c["id"]] = record
    done = await calls.run(run, tool_calls, step, Resume(tool_calls, known, frozenset(), {}))
    if done.pending:
        return "paused", done.pending
    if done.stop is not None:
        raise run.limit_error(done.stop)
    _count(retries, run, finals[0]["function"]["arguments"], errors)
    return "retry", None


async def _settle(run: Run, calls: StepCalls, record: Any) -> None:
    await run.settle(record)
    await calls.recorder.call_finished(record)


async def _fail(retries: int, calls: StepCalls, run: Run, answer: Any, errors: list[str], text: str) -> None:
    """A text answer that is not an acceptable output: count it, then tell the model why."""
    _count(retries, run, answer, errors)
    feedback = {"role": "user", "content": text}
    run.add_message(feedback)
    await calls.recorder.message_added(run.steps, feedback)


def _count(retries: int, run: Run, answer: Any, errors: list[str]) -> None:
    failures = run.output_failed()
    if failures > retries:
        listed = "; ".join(errors[:5])
        raise OutputValidationError(
            f"the model's final answer failed output_type validation {failures} time(s) "
            f"(output_retries={retries}); last errors: {listed}. The last answer is in "
            ".last_answer and the partial result in .result; raise output_retries, simplify the output "
            "type, or pin a stronger model.",
            run.result(None, OutputValidationError.stop_reason),
            answer if isinstance(answer, str) or answer is None else str(answer),
            errors,
        )

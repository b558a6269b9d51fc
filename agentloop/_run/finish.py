"""How a run's final answer ended (`RunResult.finish_reason`): a cut, filtered or refused answer
still ends the run as "final", but it is logged at WARNING and visible on the result."""

from __future__ import annotations

from typing import Any

from .._events import warning_logger
from .._types import ModelTurn, RunResult, sendable

__all__ = ["finish_reason", "finished"]

# finish_reason values (both wires, normalized) that say the final answer is not whole.
_CUT = frozenset({"length", "content_filter", "refusal", "pause_turn"})


def finished(result: RunResult[Any], turn: ModelTurn) -> RunResult[Any]:
    """The final result with the last answer's finish_reason (a wire may send any JSON there: kept
    only as a short str). An answer cut at max_tokens, filtered or refused still ends the run as
    "final" (its text is what the model sent), but it is logged at WARNING and visible on the
    result: a truncated answer used to look exactly like a whole one."""
    reason = finish_reason(turn)
    if reason is None:
        return result
    result.finish_reason = reason
    if reason in _CUT:
        log = warning_logger(run_id=result.run_id)
        if log is not None:
            log.warning(
                "final answer incomplete",
                step=result.steps,
                finish_reason=reason,
                hint="raise max_tokens (model_settings or FluxClient(max_tokens=...))"
                if reason == "length"
                else "the model or its provider stopped the answer",
            )
    return result


def finish_reason(turn: ModelTurn) -> str | None:
    """Why the answer of `turn` ended, as `RunResult.finish_reason` says it (also journaled with the
    answer, so a resumed finished run keeps it)."""
    reason = turn.finish_reason
    if reason == "stop" and isinstance(turn.message.get("refusal"), str) and not turn.message.get("content"):
        reason = "refusal"  # OpenAI's refusal field: the answer is the refusal, finish_reason says "stop"
    return sendable(reason[:64]) if isinstance(reason, str) else None

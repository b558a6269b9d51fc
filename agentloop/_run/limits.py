"""RunLimits: the budgets of one run, a frozen policy object shared freely between agents and runs,
and the one place they are interpreted: each check below answers with the `LimitHit` (the
exception class and its message) the loop raises, so what a limit means and what the caller is
told are written once.

Each limit has its own `RunLimitExceeded` subclass carrying the partial `RunResult`; the partial
result is always a valid conversation (every tool call has its tool message), so it can be
continued with `Agent.run(messages=exc.result.messages)`.

- `max_steps`: model requests per run; after that many requests that still asked for tools (and
  their tools ran): `StepLimitExceeded`.
- `max_tool_calls`: tool calls per run. Calls of a step beyond the budget are not run, get a tool
  result saying so (status `skipped`), and the run stops with `ToolCallLimitExceeded`.
- `max_total_tokens`: checked before every model request against the usage the endpoint
  reported so far; once reached, no request is sent: `TokenLimitExceeded`. (One request can
  overshoot it: its size is only known once it is answered.) A reported count that is not one
  (negative, NaN, a bool, text) would let a router walk past the budget: under a budget (this
  run's or a run's above it) the answer is refused with `APIResponseError` (`unreadable_usage`);
  without one the count is 0 and a WARNING names the field, and the run goes on.
- `timeout` (seconds from the start of `run` / `resume`) and `deadline` (a Unix time, as from
  `time.time()`): an anyio cancel scope around the whole run, model requests and tools
  included; whichever comes first wins: `TimeLimitExceeded`. Tools cut short have status
  `cancelled`.
- `loop_threshold`: the same tool with the same arguments this many times in a row: that call is
  not run and the model is told so (status `loop_detected`); if the model repeats it once more,
  the run stops with `LoopDetected`. `None` turns loop detection off (e.g. for polling tools).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields

import anyio

from .._budget import is_number
from .._events import warning_logger
from .._exceptions import (
    APIResponseError,
    ConfigurationError,
    LoopDetected,
    RunLimitExceeded,
    StepLimitExceeded,
    TimeLimitExceeded,
    TokenLimitExceeded,
    ToolCallLimitExceeded,
)

__all__ = ["RunLimits", "LimitHit", "unreadable_usage"]

LimitHit = tuple[type[RunLimitExceeded], str]  # the limit's exception class and what it says

_INTS = ("max_steps", "max_tool_calls", "max_total_tokens", "loop_threshold")


@dataclass(frozen=True, slots=True)
class RunLimits:
    """Budgets of one run. `None` means no limit. See the module docs for each field."""

    max_steps: int | None = 10
    max_tool_calls: int | None = None
    max_total_tokens: int | None = None
    timeout: float | None = None
    deadline: float | None = None
    loop_threshold: int | None = 3

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            # NaN passed every comparison: timeout=nan raised anyio's raw ValueError out of the
            # run, deadline=nan silently meant no deadline at all
            bad = not is_number(value, whole=f.name in _INTS)
            if bad or (value < 1 if f.name in _INTS else (value <= 0 and f.name == "timeout")):
                kind = "a positive integer" if f.name in _INTS else "a positive, finite number of seconds"
                if f.name == "deadline":
                    kind = "a finite Unix time (as from time.time())"
                raise ConfigurationError(f"{f.name} must be {kind} or None, got {value!r}")
        if self.loop_threshold is not None and self.loop_threshold < 2:
            raise ConfigurationError(
                f"loop_threshold must be >= 2 (a single call is not a loop) or None, got {self.loop_threshold!r}"
            )

    def cancel_deadline(self) -> float:
        """The run's deadline on the anyio clock (`math.inf` when there is none). Call inside the run."""
        now = anyio.current_time()
        deadline = float("inf")
        if self.timeout is not None:
            deadline = now + self.timeout
        if self.deadline is not None:
            deadline = min(deadline, now + (self.deadline - time.time()))
        return deadline

    def describe_time(self) -> str:
        parts = []
        if self.timeout is not None:
            parts.append(f"timeout={self.timeout:g} s")
        if self.deadline is not None:
            try:
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.deadline))
            except (OverflowError, OSError):  # a Unix time the C library cannot show (-1e18)
                when = f"{self.deadline:g} (Unix time)"  # it raised out of the run in its place
            parts.append(f"deadline={when}")
        return " / ".join(parts)

    # --- the checks: each returns the LimitHit to raise, or None --------------------------------

    def before_request(self, steps: int, tokens: int) -> LimitHit | None:
        """Before a model request: `steps` requests made (nested runs' included), `tokens` used."""
        if self.max_steps is not None and steps >= self.max_steps:
            return StepLimitExceeded, (
                f"the model still asked for tools after max_steps={self.max_steps} model requests; the "
                "partial result (every message and tool result so far) is in .result. Raise max_steps or "
                "continue with Agent.run(messages=exc.result.messages)."
            )
        if self.max_total_tokens is not None and tokens >= self.max_total_tokens:
            return TokenLimitExceeded, (
                f"the run used {tokens} tokens, reaching max_total_tokens={self.max_total_tokens}; no further "
                "model request was sent. The partial result is in .result; raise the limit or continue with "
                "Agent.run(messages=exc.result.messages)."
            )
        return None

    def calls_left(self, used: int) -> bool:
        """Whether one more tool call fits in `max_tool_calls` after `used` counted calls."""
        return self.max_tool_calls is None or used < self.max_tool_calls

    def calls_spent_text(self) -> str:
        """The tool result of a call over the budget (status `skipped`)."""
        return f"Not run: the run's budget of max_tool_calls={self.max_tool_calls} tool calls is spent."

    def calls_exceeded(self) -> LimitHit:
        return ToolCallLimitExceeded, (
            f"the model asked for more than max_tool_calls={self.max_tool_calls} tool calls; the calls over the "
            "budget were not run (status 'skipped'). The partial result is in .result; raise the limit or "
            "continue with Agent.run(messages=exc.result.messages)."
        )

    def time_exceeded(self) -> LimitHit:
        return TimeLimitExceeded, (
            f"the run passed its time limit ({self.describe_time()}) and was cancelled; tool calls cut "
            "short have status 'cancelled'. The partial result is in .result; give the run more time "
            "or continue with Agent.run(messages=exc.result.messages)."
        )


def loop_detected(streak: int) -> LimitHit:
    """The model repeated a call after being told to stop (`loop_threshold`)."""
    return LoopDetected, (
        f"the model kept calling the same tool with the same arguments ({streak} times in a row, "
        "after being told to stop); the run was stopped. The partial result is in .result."
    )


def outer_calls_exceeded(text: str) -> LimitHit:
    """A run above a nested run spent its max_tool_calls (`text`: the skipped calls' tool result)."""
    return ToolCallLimitExceeded, text.replace("Not run: t", "T") + " The partial result is in .result."


def unreadable_usage(problems: tuple[str, ...], request_id: str | None, budgeted: bool, run_id: str) -> None:
    """An answer whose usage report is not a token count (`ModelTurn.usage_problems`, counted as 0).

    Under a token budget it is refused (counting it as 0 would let a router walk past the budget;
    not retried: the router would answer the same). Without one, a good answer is not lost over
    accounting: one WARNING per answer names the fields (their values clipped, text never shown).
    """
    what = "; ".join(problems)
    if budgeted:
        raise APIResponseError(
            f"the endpoint reported token usage agentloop cannot count ({what}); counting it as 0 would let "
            "the run pass its token budget (RunLimits.max_total_tokens), so the run stops. This is a router "
            "or proxy fault: report it with the request id",
            request_id=request_id,
        )
    log = warning_logger(run_id=run_id)
    if log is not None:
        log.warning(
            "token usage not readable, counted as 0",
            problems=what,
            request_id=request_id,
            hint="a router or proxy fault; with RunLimits(max_total_tokens=...) the run would stop here",
        )

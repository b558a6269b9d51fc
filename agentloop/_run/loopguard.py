"""Loop detection: the same tool with the same arguments, many times in a row.

The streak runs over the calls of the whole run in the order the model made them (within a
step: the order it listed them), but identical calls side by side in one message count once: the
model has seen none of their results yet, so they are a burst (roll three dice, three fresh ids),
not a loop. Counting each of them refused the third die as "the result will not change", and
four parallel `roll_die()` calls stopped a default agent with LoopDetected "after being told to
stop", which it never was. Arguments are compared as parsed JSON with sorted keys, so
`{"a":1,"b":2}` and `{"b": 2, "a": 1}` are the same call. Large arguments (over
`INLINE_BYTES`) are compared as the text the model sent: the loop guard runs on the event loop
for every call, and parsing and re-encoding a megabyte there would stall every other run.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import IntEnum
from typing import Any

from .. import _json
from .._tools.arguments import INLINE_BYTES, ArgumentsError, clip, parse_arguments

__all__ = ["LoopGuard", "Streak", "call_key"]


class Streak(IntEnum):
    """What one more call does to the streak of identical calls."""

    FINE = 0  # below the threshold (or a different call)
    WARN = 1  # the threshold is reached: this call is not run, the model is told
    STOP = 2  # repeated after the warning: the run stops (LoopDetected)


_FINE, _WARN, _STOP = Streak.FINE, Streak.WARN, Streak.STOP  # module constants: no enum lookup per call
_NO_CALL = object()  # the name before the first call: equal to no name the model can send


def call_key(name: str, raw_arguments: Any) -> tuple[str, str]:
    """The identity of a call. Never raises: any depth, any size, any type of arguments."""
    if isinstance(raw_arguments, str) and len(raw_arguments) > INLINE_BYTES:
        return name, raw_arguments
    try:  # the one canonical codec: depth-limited parse, sorted-key encode
        return name, _json.canonical(parse_arguments(raw_arguments))
    except (ArgumentsError, TypeError, ValueError):
        if isinstance(raw_arguments, str):
            return name, raw_arguments
        return name, f"<{type(raw_arguments).__name__} {id(raw_arguments)}>"  # unencodable: never equal


class LoopGuard:
    """Tracks the current streak of identical calls. `threshold=None` never fires."""

    __slots__ = ("key", "name", "raw", "step", "streak", "threshold", "verdict")

    def __init__(self, threshold: int | None, history: Iterable[tuple[Any, ...]] = ()) -> None:
        self.threshold = threshold
        self.name: Any = _NO_CALL  # the last call: its name and raw arguments ...
        self.raw: Any = None
        self.key: tuple[str, str] | None = None  # ... and its identity, once it had to be computed
        self.streak = 0
        self.step: int | None = None  # the last call's step, and what it was told
        self.verdict = _FINE
        for name, raw, *step in history:  # (name, raw arguments[, step])
            self.observe(name, raw, step[0] if step else None)

    def observe(self, name: str, raw_arguments: Any, step: int | None = None) -> Streak:
        """Count one call: FINE, WARN (threshold reached) or STOP (repeated after the warning).
        A call identical to the one before it in the same `step` gets that call's verdict and
        does not lengthen the streak (None: every call is a step of its own).

        The identity (`call_key`: a JSON parse and a canonical encode) is computed only when the
        call has the last call's name but other text: another name, or the very same text, decides
        without it (the common cases, so most calls are never parsed here)."""
        if self.threshold is None:
            return _FINE
        burst = step is not None and step == self.step
        self.step = step
        if name != self.name:
            same, self.key = False, None
        elif type(raw_arguments) is str and raw_arguments == self.raw:
            same = True
        else:
            previous = self.key if self.key is not None else call_key(name, self.raw)
            self.key = call_key(name, raw_arguments)
            same = self.key == previous
        self.name, self.raw = name, raw_arguments
        if same and burst:
            return self.verdict
        self.streak = self.streak + 1 if same else 1
        if self.streak < self.threshold:
            self.verdict = _FINE
        else:
            self.verdict = _WARN if self.streak == self.threshold else _STOP
        return self.verdict

    def message(self, name: str, verdict: Streak) -> str:
        name = clip(name, 256)
        if verdict == _WARN:
            return (
                f"Not run: you called {name!r} with the same arguments {self.streak} times in a row, and the "
                "result will not change. Use the results you already have, call it with different "
                "arguments, or give your answer. Repeating this call again stops the run."
            )
        return f"Not run: {name!r} was called with the same arguments again after a warning; the run was stopped."

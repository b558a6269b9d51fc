"""Observers: every event of a run, delivered to user callables (metrics, tracing, audit).

`Agent(observers=[...])` turns the loop's `emit` on for every run and fans each event out to
the observers before the stream consumer (if any) gets it. An observer that raises is logged and
ignored: telemetry must never break a run.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from .._events import Event
from .._model import Emit
from .._tools.executors import tool_failure

__all__ = ["Observer", "fan_out"]

Observer = Callable[[Event], "Awaitable[None] | None"]
_log = logging.getLogger("agentloop")


def fan_out(observers: Sequence[Observer], emit: Emit | None) -> Emit:
    async def emit_all(event: Any) -> None:
        for observer in observers:
            try:
                result = observer(event)
                if inspect.isawaitable(result):
                    await result
            except BaseException as exc:
                # Judged as a tool's exception is: sys.exit(), a library's own BaseException and
                # a CancelledError the observer raised itself (an exporter awaiting a future its
                # client cancelled) must not end the run; KeyboardInterrupt and a real
                # cancellation still do, as they should.
                if not tool_failure(exc):
                    raise
                _log.warning(
                    "agentloop observer %r failed on %s", observer, type(event).__name__, exc_info=True
                )
        if emit is not None:
            await emit(event)

    return emit_all

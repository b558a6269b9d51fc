"""InputBudget: how much of each untrusted input one run or one request may cost. A frozen policy.

Everything that reaches agentloop from outside (a model's answer, an HTTP response, a stream)
is bounded here, in one place, so that one hostile or broken input costs its own run a bounded
amount of time and memory and nothing else in the process. Past a budget a tool call gets a clear
tool error fed back to the model, or a model request a typed `APIError`; nothing else happens.

The defaults are sized for a service that runs many agents in one process: generous for every
answer a real model gives, small enough that a hostile one cannot stall or bloat the process.

Model answers (checked by the loop, per tool call or per message):

- `max_argument_bytes`: bytes of one tool call's JSON arguments text.
- `max_json_depth`: nesting depth of a tool call's arguments (at most `_json.MAX_VALUE_DEPTH`,
  128, so that they fit, inside a request body, under the limit of 200 the one canonical codec
  enforces on everything it parses: bodies, stream events, journal).
- `max_tool_calls`: tool calls in one model message.
- `max_tool_name_chars`: characters of a tool name as the model wrote it (the name is echoed
  back in the error text only up to this length).
- `max_error_bytes`: bytes of an error text fed back to the model; a longer one is cut with a
  visible marker.
- `max_violations`: schema violations listed (with their JSON paths) in one error text.

HTTP (checked by `FluxClient`, per model request):

- `max_response_bytes`: bytes of one response body (non-streamed).
- `max_sse_line_bytes`: bytes of one line of a streamed response.
- `stream_idle_timeout`: seconds between two stream events (keep-alive comments do not count).
- `stream_end_grace`: seconds the rest of a streamed body is read after the wire's last event
  (`[DONE]`, `message_stop`), at most `stream_idle_timeout`. The answer is whole by then; the
  tail (a chunked body's terminator) is read only so the connection can be reused. A server or
  proxy that holds the connection open after the end costs this wait and that connection, never
  the answer. Smaller: a slow tail closes the connection sooner; larger: a slow proxy's
  connections are still reused.
- `request_timeout`: seconds for one whole model request, retries included, when the client
  has no `total_timeout` of its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Literal, TypeGuard, overload

from ._exceptions import ConfigurationError
from ._json import MAX_VALUE_DEPTH

__all__ = ["InputBudget", "check_int", "is_number"]

_KiB = 1024
_MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class InputBudget:
    """Bounds on untrusted input. See the module docs for each field; every field is overridable.

    ```python
    client = FluxClient(input_budget=InputBudget(max_response_bytes=64 * 1024 * 1024))
    ```
    """

    # model answers
    max_argument_bytes: int = 1 * _MiB
    max_json_depth: int = 64
    max_tool_calls: int = 128
    max_tool_name_chars: int = 256
    max_error_bytes: int = 8 * _KiB
    max_violations: int = 5
    # HTTP
    max_response_bytes: int = 32 * _MiB
    max_sse_line_bytes: int = 4 * _MiB
    stream_idle_timeout: float = 300.0
    stream_end_grace: float = 1.0
    request_timeout: float = 600.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            want_int = f.type in ("int", int)
            # NaN passes `<= 0`: request_timeout=nan raised anyio's raw ValueError out of every
            # request, stream_idle_timeout=nan silently removed the bound on a stalled stream
            if not is_number(value, whole=want_int) or value <= 0:
                kind = "a positive integer" if want_int else "a positive, finite number of seconds"
                raise ConfigurationError(
                    f"InputBudget.{f.name} must be {kind}, got {value!r}; leave it out to keep the default"
                )
        if self.max_json_depth > MAX_VALUE_DEPTH:
            raise ConfigurationError(
                f"InputBudget.max_json_depth must be at most {MAX_VALUE_DEPTH} (arguments are sent back "
                f"inside a request body, which the JSON codec holds to 200 levels), got {self.max_json_depth}"
            )


def check_int(name: str, value: Any, *, minimum: int = 1) -> None:
    """A count a caller configures (max_steps, max_connections...): an int, not a bool, >= minimum.

    Here, on the ground floor, so that the agent's checks do not import the HTTP package (and
    httpx with it) to reach the client's."""
    if not is_number(value, whole=True) or value < minimum:
        raise ConfigurationError(f"{name} must be an integer >= {minimum} or None, got {value!r}")


@overload
def is_number(value: Any, *, whole: Literal[True]) -> TypeGuard[int]: ...
@overload
def is_number(value: Any, *, whole: bool = False) -> TypeGuard[float]: ...


def is_number(value: Any, *, whole: bool = False) -> TypeGuard[float]:
    """A number a caller configures (seconds, a size, a count): an int (with `whole`), else an int
    or a finite float; never a bool, NaN or an infinity. The one test every configuration object
    (`InputBudget`, `RunLimits`, `Limits`, `RetryPolicy`, a journal's `lease_ttl`, Temporal's
    `WorkerOptions`) puts its values through before comparing them: NaN passes every comparison,
    and infinity is what None says. Typed per `whole`: a checked count stays an `int` to the type
    checker (one `TypeGuard[float]` made `warmup(connections=)`'s int a float)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return not whole and isinstance(value, float) and math.isfinite(value)

"""What both wires' stream assemblers share: text and tool-call slots, deltas out, a turn at the end.

An assembler is fed the SSE events of one network read at a time (`feed_all(batch)`, split by
`_http.bounded.sse_events`; `feed(event, data)` for one) and returns the events to emit for them
(`TextDelta` / `ToolCallDelta`). It never does I/O: the client awaits `emit` for each returned
event (back-pressure) and calls `result()` when the HTTP body ends. It is lenient about what it receives (wire-notes.md):
unknown events and comments are ignored, ids and names are taken once, arguments concatenated.
A stream that carries an error, or ends before the answer did, raises a `Failure` whose `error`
is the typed `APIError` the caller sees.
"""

from __future__ import annotations

from typing import Any

from .. import _json
from .._events import TextDelta, ToolCallDelta
from .._exceptions import APIConnectionError, APIResponseError
from .._retry import Failure
from .._types import ModelTurn, Usage

__all__ = ["StreamAssembler", "ToolSlot", "NO_EVENTS", "SHORT", "parse_short", "too_deep", "lone_surrogate"]

NO_EVENTS: tuple[()] = ()

# A JSON text this short cannot nest deeper than the codec's limit (each level takes an opening
# and a closing bracket), so `parse` calls the codec's parser without the depth check around it
# (`_json.loads` counts brackets, then walks the value when there are many): a stream's events
# are nearly all this short, and each pays the check otherwise. Same value, same ValueError.
SHORT = 2 * _json.MAX_DEPTH + 1
parse_short = _json._loads

# Error types a server may send mid-stream that are worth a retry (before anything was emitted).
_RETRYABLE_TYPES = frozenset(
    {"server_error", "api_error", "overloaded_error", "rate_limit_error", "timeout_error", "internal_error"}
)


def too_deep(error: _json.DepthError) -> str:
    """What a body or an event nested past the codec's bound is, and that no setting admits it:
    the user's first guess is `InputBudget.max_json_depth`, which bounds arguments below it."""
    return (
        f"nested too deep: {error}; that is the codec's fixed bound on every value "
        f"(InputBudget.max_json_depth, at most {_json.MAX_VALUE_DEPTH}, bounds a tool call's arguments "
        "below it: no setting raises it)"
    )


def lone_surrogate(problem: str) -> str:
    """What an answer holding a lone surrogate escape (`_json.SurrogateError.problem`) is, and what
    to do: it is JSON (the message said "not JSON" before), but no UTF-8 text can hold its text."""
    return (
        f"JSON that holds {problem}: half of a UTF-16 pair, not a character, so no UTF-8 text can hold "
        "it (the answer could be neither journaled nor sent back to the model); the model or a router "
        "cut a character in two: retry, and report it with the request id if it persists"
    )


class ToolSlot:
    """One tool call being assembled: id and name taken once, argument fragments appended."""

    __slots__ = ("announced", "args", "id", "name")

    def __init__(self) -> None:
        self.id = ""
        self.name = ""
        self.args: list[str] = []
        self.announced = False  # a ToolCallDelta carrying the name was emitted

    def as_call(self) -> dict[str, Any]:
        args = "".join(self.args)
        return {
            "id": self.id,  # repaired by the loop before the message is stored
            "type": "function",
            "function": {"name": self.name, "arguments": args if args.strip() else "{}"},
        }


class StreamAssembler:
    """Base class: the accumulated answer. Subclasses implement `feed` for their wire."""

    __slots__ = (
        "chunks",
        "complete",
        "ended",
        "finish_reason",
        "model",
        "refusal",
        "request_id",
        "response_id",
        "run_id",
        "slots",
        "step",
        "text",
        "usage",
        "usage_problems",
    )  # fmt: skip

    def __init__(self, run_id: str | None, step: int, request_id: str | None) -> None:
        self.run_id = run_id or ""
        self.step = step
        self.request_id = request_id
        self.text: list[str] = []
        self.refusal: list[str] = []
        self.slots: dict[int, ToolSlot] = {}
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.usage_problems: list[str] = []  # what of the usage reports was not a token count
        self.model: str | None = None
        self.response_id: str | None = None
        self.chunks = 0  # data events understood
        self.complete = False  # the wire's end marker (finish reason, [DONE], message_stop) was seen
        # The wire's LAST event ([DONE], message_stop) was seen: the answer is whole, nothing after
        # it is part of it, and the body is not read further (a server or proxy that then keeps
        # the connection open cost the whole answer to the idle timeout)
        self.ended = False

    def feed(self, event: str, data: str) -> tuple[Any, ...]:  # pragma: no cover - abstract
        raise NotImplementedError

    def feed_all(self, batch: list[tuple[str, str]]) -> tuple[list[Any], Failure | None]:
        """The deltas of the events one network read brought, in order, and the `Failure` met on
        the way, if any (returned, not raised: the deltas before it still go out first)."""
        out: list[Any] = []
        try:
            for event, data in batch:
                got = self.feed(event, data)
                if got:
                    out += got
                if self.ended:
                    break  # events after the last one are not part of the answer
        except Failure as failure:
            return out, failure
        return out, None

    # --- helpers for subclasses -------------------------------------------------------------

    def parse(self, data: str) -> Any:
        try:
            return parse_short(data) if len(data) <= SHORT else _json.loads(data)
        except _json.DepthError as e:  # (only a long text can be this deep)
            raise self.not_json(data, too_deep(e)) from None
        except ValueError:
            raise self.not_json(data) from None

    def not_json(self, data: str, what: str = "not JSON") -> Failure:
        if what == "not JSON":  # (the error path only) JSON the parser refused for a lone surrogate?
            try:
                _json.loads(data)
            except _json.SurrogateError as e:
                what = lone_surrogate(e.problem)
            except ValueError:
                pass
        return Failure(
            APIResponseError(
                f"the stream carried an event whose data is {what}; this is a router or proxy fault, "
                "retry later or report it with the request id",
                body=data[:2000],
                request_id=self.request_id,
            ),
            retryable=True,
        )

    def malformed(self, problem: str, sent: Any) -> Failure:
        """A value of the wrong shape in the stream (`problem`, from `_wire/shapes.py`, shows it):
        a malformed answer, retried while nothing of it has reached the caller."""
        try:
            body = _json.dumps_str(sent)[:2000]
        except (TypeError, ValueError):
            body = repr(sent)[:2000]
        return Failure(
            APIResponseError(
                f"the stream carried {problem}; this is a router or proxy fault, retry later or report it "
                "with the request id",
                body=body,
                request_id=self.request_id,
            ),
            retryable=True,
        )

    def text_delta(self, piece: str) -> TextDelta:
        self.text.append(piece)
        return TextDelta(self.run_id, self.step, piece)

    def tool_delta(self, index: int, slot: ToolSlot, fragment: str) -> ToolCallDelta | None:
        """Record a fragment; the delta to emit (the name goes out once, with the first delta)."""
        if fragment:
            slot.args.append(fragment)
        if not slot.announced:
            if not slot.name:
                return None  # wait for the name before announcing the call
            slot.announced = True
            return ToolCallDelta(self.run_id, self.step, index, slot.name, "".join(slot.args))
        if not fragment:
            return None
        return ToolCallDelta(self.run_id, self.step, index, None, fragment)

    def error(self, err: Any) -> Failure:
        """An error event / error object in the stream → a typed error (retryable if transient)."""
        if isinstance(err, dict):
            kind = err.get("type") or err.get("code")
            message = err.get("message") or kind or "no message"
        else:
            kind, message = None, str(err) if err else "no message"
        retryable = kind is None or str(kind) in _RETRYABLE_TYPES
        return Failure(
            APIResponseError(
                f"the stream was interrupted by an error from the endpoint ({kind or 'unknown type'}): {message}",
                body=_json.dumps_str(err)[:2000] if isinstance(err, dict) else str(err)[:2000],
                request_id=self.request_id,
            ),
            retryable=retryable,
        )

    def answered(self) -> bool:
        """Whether the stream carried an answer at all: a text, a call, a refusal or a finish
        reason. A body without one (no choices, no message) is an error; a stream of nothing
        (`[DONE]` alone, a usage chunk alone) ended the run as if the model had said nothing."""
        return bool(self.text or self.slots or self.refusal) or self.finish_reason is not None

    # --- the end --------------------------------------------------------------------------------

    def result(self) -> ModelTurn:
        """The assembled turn, once the body has ended; a truncated stream is a connection error."""
        if not self.complete:
            what = "before any event" if not self.chunks else "before the answer was complete"
            raise Failure(
                APIConnectionError(
                    f"the stream ended {what} (the connection was closed early); the request is retried "
                    "when nothing had been handed to the caller yet",
                    request_id=self.request_id,
                ),
                retryable=True,
            )
        if not self.answered():
            raise Failure(
                APIResponseError(
                    "the stream ended without an answer (no text, tool call or finish reason): the routed "
                    "model returned nothing; a router or proxy fault, retry later or report it with the request id",
                    request_id=self.request_id,
                ),
                retryable=True,
            )
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self.text) or None}
        if self.slots:
            message["tool_calls"] = [self.slots[i].as_call() for i in sorted(self.slots)]
        if self.refusal:
            message["refusal"] = "".join(self.refusal)
        return ModelTurn(
            message=message,
            usage=self.usage or Usage(requests=1),
            finish_reason=self.finish_reason,
            model=self.model,
            request_id=self.request_id or self.response_id,
            streamed=True,
            usage_problems=tuple(self.usage_problems),
        )

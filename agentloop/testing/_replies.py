"""Scripted replies for `FakeFluxRouter` (the offline demo's `weather_handler` is in `_weather.py`).

A `Reply` is wire-neutral: it holds an OpenAI-format assistant answer (or an error / raw body /
connection drop) and the server renders it for the wire and mode of the request that consumes it
(see `_render.py`). That way one script serves an OpenAI-wire and an Anthropic-wire test alike.

Stream quirks (`quirks=` on `text` / `tool_calls`, composable, applied to streamed requests only):
  "no_done"             no final `data: [DONE]`                                      (OpenAI wire)
  "repeat_ids"          id, type and name repeated in every tool-call delta (OpenRouter) (OpenAI wire)
  "interleave"          tool-call deltas round-robin over indexes (0, 1, 0, 1, ...)  (OpenAI wire)
  "usage_after_finish"  a usage chunk after the finish chunk without include_usage   (OpenAI wire)
  "keepalive"           `: keep-alive` comments and an unknown `event: fluxrouter.status` (both)
  drop_after(n)         close the connection after n SSE events, mid-body            (both)
  stream_error(n, err)  an error event after n SSE events, then a clean end          (both)
Keep-alive noise never counts as one of the n events. Faults apply in the order given.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal, TypedDict

from typing_extensions import Unpack

from agentloop.testing import _codec
from agentloop.testing._checks import fake_signature

__all__ = [
    "DEFAULT_USAGE",
    "STREAM_QUIRKS",
    "DropAfter",
    "Quirk",
    "RawSending",
    "Reply",
    "ScriptedCall",
    "ScriptedThinking",
    "StreamError",
    "call",
    "drop",
    "drop_after",
    "error",
    "raw",
    "redacted_thinking",
    "stream_error",
    "text",
    "thinking",
    "tool_calls",
]

# Named stream quirks (wire-notes.md). The OpenAI-only ones are ignored on the Anthropic wire.
STREAM_QUIRKS = frozenset({"no_done", "repeat_ids", "interleave", "keepalive", "usage_after_finish"})

DEFAULT_USAGE: Mapping[str, int] = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}


@dataclass(frozen=True)
class DropAfter:
    """Stream fault: close the connection abruptly (no terminating chunk) after `chunks` SSE events."""

    chunks: int


@dataclass(frozen=True)
class StreamError:
    """Stream fault: emit an error event after `chunks` SSE events, then end the response.

    `error` is the inner error object; `None` means a wire-typical default (server_error /
    overloaded_error).
    """

    chunks: int
    error: Mapping[str, Any] | None = None


Quirk = str | DropAfter | StreamError


@dataclass(frozen=True)
class ScriptedCall:
    """One tool call of a scripted answer. `arguments`: dict → JSON-encoded, str → sent verbatim,
    None → the `arguments` key is missing. `id=None` → the server assigns `call_<n>`."""

    name: str
    arguments: Mapping[str, Any] | str | None = None
    id: str | None = None


@dataclass(frozen=True)
class ScriptedThinking:
    """One extended-thinking block of a scripted answer (`thinking(...)`, `redacted_thinking(...)`).
    Rendered on the Anthropic wire only, before the text and tool calls; the OpenAI wire has no
    thinking and leaves it out. `signature=None`: the router's own (`fake_signature(thinking)`)."""

    thinking: str = ""
    signature: str | None = None
    data: str | None = None  # set: a redacted_thinking block

    def block(self) -> dict[str, Any]:
        """The content block exactly as the router sends it: what must come back, unchanged."""
        if self.data is not None:
            return {"type": "redacted_thinking", "data": self.data}
        signature = self.signature if self.signature is not None else fake_signature(self.thinking)
        return {"type": "thinking", "thinking": self.thinking, "signature": signature}

    def streamed(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Its `content_block_start` block and `content_block_delta` deltas, as Anthropic streams it:
        the text in pieces, then the signature (a redacted block comes whole in its start)."""
        block = self.block()
        if self.data is not None:
            return block, []
        text, size = self.thinking, max(1, -(-len(self.thinking) // 3))
        deltas = [
            {"type": "thinking_delta", "thinking": text[i : i + size]} for i in range(0, len(text), size)
        ]
        return {"type": "thinking", "thinking": ""}, [
            *deltas,
            {"type": "signature_delta", "signature": block["signature"]},
        ]


@dataclass(frozen=True)
class Reply:
    """One scripted answer. Build it with the constructors below rather than directly."""

    kind: Literal["message", "error", "raw", "drop"]
    content: str | None = None
    tool_calls: tuple[ScriptedCall, ...] = ()
    usage: Mapping[str, Any] | None = None
    finish_reason: str | None = None
    status: int = 200
    error_message: str = ""
    error_type: str = "invalid_request_error"
    error_code: str | int | None = None
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0  # seconds before the response headers (timeout tests)
    chunk_delay: float = 0.0  # seconds before each streamed SSE event / raw body chunk (read-timeout tests)
    quirks: tuple[Quirk, ...] = ()
    repeat: int | None = 1  # raw: the body is sent this many times, one chunk each (None: forever)
    declared_length: int | None = None  # raw: a Content-Length longer than what is sent (a truncated body)
    chunk_size: int | None = (
        None  # raw: the body written in pieces of this many bytes (parser boundary tests)
    )

    thinking: tuple[ScriptedThinking, ...] = ()  # Anthropic wire: blocks before the text and calls

    def with_thinking(self, *blocks: ScriptedThinking) -> Reply:
        """A copy that thinks first: `tool_calls(call(...)).with_thinking(thinking("..."))`."""
        for b in blocks:
            if not isinstance(b, ScriptedThinking):
                raise TypeError(
                    f"with_thinking() takes thinking(...) / redacted_thinking(...) values, not {b!r}"
                )
        return replace(self, thinking=self.thinking + blocks)

    def with_quirks(self, *quirks: Quirk) -> Reply:
        """A copy with more quirks / stream faults appended (they compose)."""
        return replace(self, quirks=self.quirks + _check_quirks(quirks))

    def has_quirk(self, name: str) -> bool:
        return name in self.quirks


def _check_quirks(quirks: Iterable[Quirk]) -> tuple[Quirk, ...]:
    out = tuple(quirks)
    for q in out:
        if isinstance(q, str):
            if q not in STREAM_QUIRKS:
                raise ValueError(f"unknown stream quirk {q!r}; known: {sorted(STREAM_QUIRKS)}")
        elif not isinstance(q, (DropAfter, StreamError)):
            raise TypeError(f"a quirk is a name, drop_after(...) or stream_error(...), not {q!r}")
    return out


def _headers(headers: Mapping[str, Any] | None) -> tuple[tuple[str, str], ...]:
    return tuple((str(k).lower(), str(v)) for k, v in (headers or {}).items())


def call(
    name: str, arguments: Mapping[str, Any] | str | None = None, *, id: str | None = None
) -> ScriptedCall:
    """A tool call for `tool_calls(...)`: `arguments` a dict (sent as its JSON), a str (sent as the
    arguments text exactly, valid JSON or not), or None."""
    if arguments is not None and not isinstance(arguments, str | Mapping):
        # (it failed later, inside the fake router's task, as a TypeError of its renderer)
        raise TypeError(
            f"call({name!r}, ...): arguments are a dict, a str (the arguments text exactly) or None, "
            f"not {type(arguments).__name__}; to script a model sending {arguments!r:.40}, pass "
            "json.dumps(...) of it"
        )
    if isinstance(arguments, Mapping):  # what the router will send: refused here, not in its task
        try:
            _codec.dumps_str(dict(arguments))
        except (TypeError, ValueError) as e:
            raise TypeError(
                f"call({name!r}, ...): the arguments cannot be sent as JSON ({e}); to script a model "
                "sending text that is not standard JSON (NaN, Infinity), pass that text as a str"
            ) from None
    return ScriptedCall(name, arguments, id)


def thinking(text: str, *, signature: str | None = None) -> ScriptedThinking:
    """A thinking block for `Reply.with_thinking`; signed by the router unless `signature` is given."""
    return ScriptedThinking(text, signature)


def redacted_thinking(data: str) -> ScriptedThinking:
    """A redacted_thinking block (opaque `data`) for `Reply.with_thinking`."""
    return ScriptedThinking(data=data)


def text(
    content: str,
    *,
    usage: Mapping[str, Any] | None = None,
    finish_reason: str | None = None,
    delay: float = 0,
    chunk_delay: float = 0,
    quirks: Iterable[Quirk] = (),
) -> Reply:
    """A final text answer (finish_reason "stop" unless overridden)."""
    return Reply(
        "message",
        content=content,
        usage=usage,
        finish_reason=finish_reason,
        delay=delay,
        chunk_delay=chunk_delay,
        quirks=_check_quirks(quirks),
    )


def tool_calls(
    *calls: ScriptedCall,
    content: str | None = None,
    usage: Mapping[str, Any] | None = None,
    finish_reason: str | None = None,
    delay: float = 0,
    chunk_delay: float = 0,
    quirks: Iterable[Quirk] = (),
) -> Reply:
    """An answer that asks for tools (finish_reason "tool_calls" unless overridden)."""
    for c in calls:
        if not isinstance(c, ScriptedCall):
            raise TypeError(f"tool_calls() takes call(...) values, not {c!r}")
    return Reply(
        "message",
        content=content,
        tool_calls=calls,
        usage=usage,
        finish_reason=finish_reason,
        delay=delay,
        chunk_delay=chunk_delay,
        quirks=_check_quirks(quirks),
    )


def error(
    status: int,
    message: str,
    *,
    type: str = "invalid_request_error",
    code: str | int | None = None,
    headers: Mapping[str, Any] | None = None,
    delay: float = 0,
) -> Reply:
    """An HTTP error with a JSON error body in the request's wire style (also for stream requests)."""
    return Reply(
        "error",
        status=status,
        error_message=message,
        error_type=type,
        error_code=code,
        headers=_headers(headers),
        delay=delay,
    )


class RawSending(TypedDict, total=False):
    """How `raw(...)` sends its body (hostile bodies): the keywords after `delay=`, one group."""

    repeat: int | None  # the body sent this many times, one chunk each (None: forever); default 1
    chunk_delay: float  # seconds before each chunk (a slow drip); default 0
    declared_length: int | None  # a Content-Length longer than the body (a truncated response)
    chunk_size: int | None  # the body written this many bytes at a time (parser boundaries)


def raw(
    status: int,
    body: bytes | str,
    *,
    headers: Mapping[str, Any] | None = None,
    content_type: str = "application/json",
    delay: float = 0,
    **sending: Unpack[RawSending],
) -> Reply:
    """A response sent verbatim, whatever the wire: malformed JSON, a 200 carrying an error, ...

    Hostile bodies: `repeat=n` sends `body` n times, one chunk each (`None`: forever, e.g. an
    endless body or a keep-alive-only SSE stream with `content_type="text/event-stream"`), with
    `chunk_delay` seconds before each (a slow drip). `declared_length`: the Content-Length sent,
    longer than the body; the connection closes after the body (a truncated response).
    `chunk_size=n`: the body written n bytes at a time (chunked encoding), so a client's parser
    meets every boundary a network can cut. (These four are the `RawSending` group.)
    """
    data = body.encode() if isinstance(body, str) else bytes(body)
    return Reply(
        "raw",
        status=status,
        body=data,
        content_type=content_type,
        headers=_headers(headers),
        delay=delay,
        **_checked_sending(data, sending),
    )


def _checked_sending(data: bytes, sending: Mapping[str, Any]) -> dict[str, Any]:
    """`raw`'s sending keywords as Reply fields, with their defaults; refuses what cannot be sent."""
    unknown = sorted(set(sending) - set(RawSending.__annotations__))
    if unknown:
        raise TypeError(f"raw() got an unexpected keyword argument {unknown[0]!r}")
    out = {"repeat": 1, "chunk_delay": 0, "declared_length": None, "chunk_size": None, **sending}
    repeat, declared_length, chunk_size = out["repeat"], out["declared_length"], out["chunk_size"]
    if repeat is not None and repeat < 1:
        raise ValueError(f"repeat must be >= 1 or None (forever), got {repeat!r}")
    if chunk_size is not None and (chunk_size < 1 or repeat != 1 or declared_length is not None):
        raise ValueError("chunk_size must be >= 1, and goes with repeat=1 and no declared_length")
    if declared_length is not None and (repeat is None or declared_length <= len(data) * repeat):
        raise ValueError("declared_length must be longer than the body sent (it makes a truncated response)")
    return out


def drop(*, delay: float = 0) -> Reply:
    """Close the connection without answering (the client sees a connection error)."""
    return Reply("drop", delay=delay)


def drop_after(chunks: int) -> DropAfter:
    """Quirk for `text`/`tool_calls`: drop the connection after `chunks` SSE events (streams only)."""
    return DropAfter(chunks)


def stream_error(after_chunks: int, error: Mapping[str, Any] | None = None) -> StreamError:
    """Quirk for `text`/`tool_calls`: an error event after `after_chunks` SSE events (streams only)."""
    return StreamError(after_chunks, error)

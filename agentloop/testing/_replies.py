"""Scripted replies for `FakeFluxRouter`, plus the offline demo's `weather_handler`.

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

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from agentloop.testing import _codec

if TYPE_CHECKING:
    from agentloop.testing._server import RecordedRequest

__all__ = [
    "DEFAULT_USAGE",
    "KNOWN_CITIES",
    "STREAM_QUIRKS",
    "DropAfter",
    "Quirk",
    "Reply",
    "ScriptedCall",
    "StreamError",
    "call",
    "drop",
    "drop_after",
    "error",
    "raw",
    "stream_error",
    "text",
    "tool_calls",
    "weather_handler",
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
    """A tool call for `tool_calls(...)`."""
    return ScriptedCall(name, arguments, id)


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


def raw(
    status: int,
    body: bytes | str,
    *,
    headers: Mapping[str, Any] | None = None,
    content_type: str = "application/json",
    delay: float = 0,
    repeat: int | None = 1,
    chunk_delay: float = 0,
    declared_length: int | None = None,
    chunk_size: int | None = None,
) -> Reply:
    """A response sent verbatim, whatever the wire: malformed JSON, a 200 carrying an error, ...

    Hostile bodies: `repeat=n` sends `body` n times, one chunk each (`None`: forever, e.g. an
    endless body or a keep-alive-only SSE stream with `content_type="text/event-stream"`), with
    `chunk_delay` seconds before each (a slow drip). `declared_length`: the Content-Length sent,
    longer than the body; the connection closes after the body (a truncated response).
    `chunk_size=n`: the body is written n bytes at a time (chunked encoding), so a client's parser
    meets every boundary a network can cut.
    """
    data = body.encode() if isinstance(body, str) else bytes(body)
    if repeat is not None and repeat < 1:
        raise ValueError(f"repeat must be >= 1 or None (forever), got {repeat!r}")
    if chunk_size is not None and (chunk_size < 1 or repeat != 1 or declared_length is not None):
        raise ValueError("chunk_size must be >= 1, and goes with repeat=1 and no declared_length")
    if declared_length is not None and (repeat is None or declared_length <= len(data) * repeat):
        raise ValueError("declared_length must be longer than the body sent (it makes a truncated response)")
    return Reply(
        "raw",
        status=status,
        body=data,
        content_type=content_type,
        headers=_headers(headers),
        delay=delay,
        chunk_delay=chunk_delay,
        repeat=repeat,
        declared_length=declared_length,
        chunk_size=chunk_size,
    )


def drop(*, delay: float = 0) -> Reply:
    """Close the connection without answering (the client sees a connection error)."""
    return Reply("drop", delay=delay)


def drop_after(chunks: int) -> DropAfter:
    """Quirk for `text`/`tool_calls`: drop the connection after `chunks` SSE events (streams only)."""
    return DropAfter(chunks)


def stream_error(after_chunks: int, error: Mapping[str, Any] | None = None) -> StreamError:
    """Quirk for `text`/`tool_calls`: an error event after `after_chunks` SSE events (streams only)."""
    return StreamError(after_chunks, error)


# ---------------------------------------------------------------------------------------------
# The offline demo's model: asks get_weather for each known city, then summarises the results.

KNOWN_CITIES = (
    "Lisbon", "Porto", "Faro", "Madrid", "Barcelona", "Paris", "London", "Berlin", "Rome",
    "Amsterdam", "New York", "San Francisco", "Tokyo", "Sydney", "Cairo",
)  # fmt: skip
_CITY_RE = re.compile(r"\b(" + "|".join(re.escape(c) for c in KNOWN_CITIES) + r")\b", re.IGNORECASE)
_TEMP_KEYS = ("temperature_c", "temp_c", "temperature", "temp", "celsius")
_COND_KEYS = ("conditions", "condition", "summary", "description", "sky", "weather")


def weather_handler(request: RecordedRequest) -> Reply:
    """Deterministic fake model for the demo, on both wires.

    Last message from the user → one parallel `get_weather` call per known city it names (default
    Lisbon). Last message(s) carry tool results → a final text, one "City: 21 °C, clear" line each.
    """
    body = request.json if isinstance(request.json, dict) else {}
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    results = _anthropic_results(messages) if request.wire == "anthropic" else _openai_results(messages)
    if results is not None:
        lines = [_summarise(city, content, is_error) for city, content, is_error in results]
        return text("\n".join(lines) if lines else "I have no weather results to report.")
    last = messages[-1] if messages else {}
    if last.get("role") != "user":
        return text("Ask me about the weather in a city.")
    cities = find_cities(_plain_text(last.get("content"))) or ["Lisbon"]
    return tool_calls(*(call("get_weather", {"city": c}) for c in cities))


def find_cities(s: str) -> list[str]:
    """Known cities named in `s`, in order of first mention, canonical spelling, no repeats."""
    canon = {c.lower(): c for c in KNOWN_CITIES}
    found: list[str] = []
    for m in _CITY_RE.finditer(s):
        city = canon[m.group(1).lower()]
        if city not in found:
            found.append(city)
    return found


def _plain_text(content: Any) -> str:
    """Text of an OpenAI `content` (str or parts) or an Anthropic one (str or blocks)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict)]
        return "\n".join(p for p in parts if isinstance(p, str))
    return ""


def _city_of(arguments: Any) -> str | None:
    if isinstance(arguments, str):
        try:
            arguments = _codec.loads(arguments)
        except ValueError:
            return None
    city = arguments.get("city") if isinstance(arguments, dict) else None
    return city if isinstance(city, str) else None


Result = tuple[str | None, str, bool]  # (city asked for, result text, is_error)


def _openai_results(messages: list[dict[str, Any]]) -> list[Result] | None:
    """Trailing `role: "tool"` messages paired (by id) with the assistant call that asked."""
    i = len(messages)
    while i > 0 and messages[i - 1].get("role") == "tool":
        i -= 1
    if i == len(messages):
        return None
    asked: dict[str, str | None] = {}
    if i > 0:
        for tc in messages[i - 1].get("tool_calls") or []:
            if isinstance(tc, dict):
                asked[str(tc.get("id"))] = _city_of((tc.get("function") or {}).get("arguments"))
    return [
        (asked.get(str(m.get("tool_call_id"))), _plain_text(m.get("content")), False) for m in messages[i:]
    ]


def _anthropic_results(messages: list[dict[str, Any]]) -> list[Result] | None:
    """`tool_result` blocks of the last user message, paired with the previous `tool_use` blocks."""
    if (
        not messages
        or messages[-1].get("role") != "user"
        or not isinstance(messages[-1].get("content"), list)
    ):
        return None
    blocks = [b for b in messages[-1]["content"] if isinstance(b, dict) and b.get("type") == "tool_result"]
    if not blocks:
        return None
    asked: dict[str, str | None] = {}
    for m in messages[:-1]:
        if m.get("role") == "assistant" and isinstance(m.get("content"), list):
            for b in m["content"]:
                if isinstance(b, dict) and b.get("type") == "tool_use":
                    asked[str(b.get("id"))] = _city_of(b.get("input"))
    return [
        (asked.get(str(b.get("tool_use_id"))), _plain_text(b.get("content")), bool(b.get("is_error")))
        for b in blocks
    ]


def _summarise(city: str | None, content: str, is_error: bool) -> str:
    try:
        data = _codec.loads(content)
    except ValueError:
        data = None
    if isinstance(data, dict) and city is None and isinstance(data.get("city"), str):
        city = data["city"]
    label = city or "Unknown city"
    if is_error:
        return f"{label}: unavailable ({content.strip()})"
    if isinstance(data, dict):
        temp = next((data[k] for k in _TEMP_KEYS if data.get(k) is not None), None)
        cond = next((data[k] for k in _COND_KEYS if data.get(k)), None)
        parts = []
        if temp is not None:
            parts.append(f"{temp} °C" if isinstance(temp, (int, float)) else str(temp))
        if cond is not None:
            parts.append(str(cond))
        if parts:
            return f"{label}: {', '.join(parts)}"
    return f"{label}: {content.strip()}"

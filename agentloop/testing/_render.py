"""Render a wire-neutral `Reply` as HTTP for the wire and mode of the request that consumes it.

Pure functions: no I/O, so the server only has to write what comes out (and honour `abort`).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from agentloop.testing import _codec
from agentloop.testing._replies import DEFAULT_USAGE, DropAfter, Reply, ScriptedCall, StreamError

__all__ = ["RenderContext", "Rendered", "render", "render_error", "render_json"]

Wire = Literal["openai", "anthropic"]


@dataclass
class RenderContext:
    wire: Wire | None
    stream: bool
    model: str
    include_usage: bool  # OpenAI `stream_options.include_usage`
    serial: int  # response number: makes ids unique per server
    next_call_id: Callable[[], str]  # the server's `call_<n>` counter
    created: int = field(default_factory=lambda: int(time.time()))


@dataclass
class Rendered:
    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""
    frames: Iterable[bytes] | None = (
        None  # SSE events (or raw chunks), written one chunk each; may be endless
    )
    abort: bool = False  # close the connection after the frames, without the terminating chunk


@dataclass
class _Frame:
    data: bytes
    counts: bool = True  # False for keep-alive noise: stream faults count real events only


def render_json(status: int, obj: Any, headers: Iterable[tuple[str, str]] = ()) -> Rendered:
    return _with_headers(Rendered(status, [("content-type", "application/json")], _codec.dumps(obj)), headers)


def render_error(
    status: int,
    message: str,
    *,
    wire: Wire | None,
    type: str | None = None,
    code: str | int | None = None,
    headers: Iterable[tuple[str, str]] = (),
) -> Rendered:
    """An error body in the wire's style; `type=None` picks the wire's generic server error type."""
    if wire == "anthropic":
        body: dict[str, Any] = {"type": "error", "error": {"type": type or "api_error", "message": message}}
    else:
        body = {"error": {"message": message, "type": type or "server_error", "param": None, "code": code}}
    return render_json(status, body, headers)


def render(reply: Reply, ctx: RenderContext) -> Rendered:
    """Render a non-drop reply. Errors and raw bodies are never streamed (as with real servers)."""
    extra = [("x-request-id", f"req_fake{ctx.serial}"), *reply.headers]
    if reply.kind == "error":
        kind, code = reply.error_type, reply.error_code
        return render_error(
            reply.status, reply.error_message, wire=ctx.wire, type=kind, code=code, headers=extra
        )
    if reply.kind == "raw":
        if reply.chunk_size is not None:
            size, body = reply.chunk_size, reply.body
            pieces = [body[i : i + size] for i in range(0, len(body), size)]
            return _with_headers(
                Rendered(reply.status, [("content-type", reply.content_type)], frames=pieces), extra
            )
        if reply.repeat == 1 and reply.declared_length is None:
            return _with_headers(
                Rendered(reply.status, [("content-type", reply.content_type)], reply.body), extra
            )
        head = [("content-type", reply.content_type)]
        if reply.declared_length is not None:
            head.append(("content-length", str(reply.declared_length)))
        body = reply.body
        chunks = itertools.repeat(body) if reply.repeat is None else itertools.repeat(body, reply.repeat)
        return _with_headers(
            Rendered(reply.status, head, frames=chunks, abort=reply.declared_length is not None), extra
        )
    if reply.kind != "message":
        raise ValueError(f"cannot render a {reply.kind!r} reply")
    calls = [(c.id if c.id is not None else ctx.next_call_id(), c) for c in reply.tool_calls]
    if not ctx.stream:
        obj = (
            _anthropic_message(reply, ctx, calls)
            if ctx.wire == "anthropic"
            else _openai_message(reply, ctx, calls)
        )
        return render_json(200, obj, extra)
    if ctx.wire == "anthropic":
        frames = _anthropic_stream(reply, ctx, calls)
    else:
        frames = _openai_stream(reply, ctx, calls)
    if "keepalive" in reply.quirks:
        frames = _add_noise(frames, ctx.wire)
    frames, abort = _apply_faults(frames, reply, ctx.wire)
    headers = [("content-type", "text/event-stream"), ("cache-control", "no-cache")]
    return _with_headers(Rendered(200, headers, frames=[f.data for f in frames], abort=abort), extra)


def _with_headers(r: Rendered, extra: Iterable[tuple[str, str]]) -> Rendered:
    # Later headers win: a reply's own `headers` can override content-type or x-request-id.
    merged = {k.lower(): v for k, v in [*r.headers, *extra]}
    r.headers = list(merged.items())
    return r


# --- shared helpers ---------------------------------------------------------------------------


def _usage(reply: Reply) -> dict[str, Any]:
    return dict(reply.usage if reply.usage is not None else DEFAULT_USAGE)


def _args_text(arguments: Mapping[str, Any] | str | None) -> str | None:
    if arguments is None or isinstance(arguments, str):
        return arguments
    return _codec.dumps_str(dict(arguments))


def _pieces(s: str, n: int = 3) -> list[str]:
    """Split into at most `n` non-empty fragments, as a model's token stream would."""
    if not s:
        return []
    size = -(-len(s) // n)
    return [s[i : i + size] for i in range(0, len(s), size)]


def _sse(obj: Any, event: str | None = None) -> _Frame:
    head = f"event: {event}\n".encode() if event else b""
    return _Frame(head + b"data: " + _codec.dumps(obj) + b"\n\n")


# --- OpenAI chat completions ------------------------------------------------------------------


def _finish_reason(reply: Reply, calls: list[tuple[str, ScriptedCall]]) -> str:
    return reply.finish_reason or ("tool_calls" if calls else "stop")


def _openai_message(
    reply: Reply, ctx: RenderContext, calls: list[tuple[str, ScriptedCall]]
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.content}
    if calls:
        message["tool_calls"] = []
        for call_id, c in calls:
            fn: dict[str, Any] = {"name": c.name}
            args = _args_text(c.arguments)
            if args is not None:
                fn["arguments"] = args
            message["tool_calls"].append({"id": call_id, "type": "function", "function": fn})
    return {
        "id": f"chatcmpl-fake{ctx.serial}",
        "object": "chat.completion",
        "created": ctx.created,
        "model": ctx.model,
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": _finish_reason(reply, calls)}
        ],
        "usage": _usage(reply),
    }


def _openai_stream(reply: Reply, ctx: RenderContext, calls: list[tuple[str, ScriptedCall]]) -> list[_Frame]:
    base = {
        "id": f"chatcmpl-fake{ctx.serial}",
        "object": "chat.completion.chunk",
        "created": ctx.created,
        "model": ctx.model,
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> _Frame:
        return _sse(
            {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        )

    frames = [chunk({"role": "assistant", "content": "" if reply.content is not None else None})]
    frames += [chunk({"content": piece}) for piece in _pieces(reply.content or "")]
    repeat = "repeat_ids" in reply.quirks
    per_call = [_openai_call_deltas(i, call_id, c, repeat) for i, (call_id, c) in enumerate(calls)]
    if "interleave" in reply.quirks:
        # Round-robin: index 0's fragments arrive after index 1's header, i.e. lower after higher.
        ordered = []
        for k in range(max(map(len, per_call), default=0)):
            ordered += [ds[k] for ds in per_call if k < len(ds)]
    else:
        ordered = [d for ds in per_call for d in ds]
    frames += [chunk({"tool_calls": [d]}) for d in ordered]
    frames.append(chunk({}, _finish_reason(reply, calls)))
    if ctx.include_usage or "usage_after_finish" in reply.quirks:
        frames.append(_sse({**base, "choices": [], "usage": _usage(reply)}))
    if "no_done" not in reply.quirks:
        frames.append(_Frame(b"data: [DONE]\n\n"))
    return frames


def _openai_call_deltas(index: int, call_id: str, c: ScriptedCall, repeat: bool) -> list[dict[str, Any]]:
    args = _args_text(c.arguments)
    head_fn: dict[str, Any] = {"name": c.name}
    if args is not None:
        head_fn["arguments"] = ""
    deltas: list[dict[str, Any]] = [{"index": index, "id": call_id, "type": "function", "function": head_fn}]
    for frag in _pieces(args or ""):
        if repeat:  # OpenRouter style: id and name again in every delta
            deltas.append(
                {
                    "index": index,
                    "id": call_id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": frag},
                }
            )
        else:
            deltas.append({"index": index, "function": {"arguments": frag}})
    return deltas


# --- Anthropic Messages -----------------------------------------------------------------------

_STOP_REASONS = {
    "stop": "end_turn",
    "tool_calls": "tool_use",
    "length": "max_tokens",
    "function_call": "tool_use",
}
_MISSING = object()


def _stop_reason(reply: Reply, calls: list[tuple[str, ScriptedCall]]) -> str:
    if reply.finish_reason is not None:
        return _STOP_REASONS.get(reply.finish_reason, reply.finish_reason)
    return "tool_use" if calls else "end_turn"


def _anthropic_usage(reply: Reply) -> dict[str, Any]:
    u = _usage(reply)
    out = {
        "input_tokens": u.get("prompt_tokens", u.get("input_tokens", 0)),
        "output_tokens": u.get("completion_tokens", u.get("output_tokens", 0)),
    }
    for key in ("cache_read_input_tokens", "cache_creation_input_tokens"):  # prompt caching, when scripted
        if key in u:
            out[key] = u[key]
    return out


def _anthropic_input(arguments: Mapping[str, Any] | str | None) -> Any:
    """`input` of a tool_use block. An invalid JSON string is kept as a string on purpose: the
    only way to send a broken tool_use over a non-streamed Anthropic reply (lenient-parser tests)."""
    if arguments is None:
        return _MISSING
    if not isinstance(arguments, str):
        return dict(arguments)
    if not arguments.strip():
        return {}
    try:
        return _codec.loads(arguments)
    except ValueError:
        return arguments


def _anthropic_message(
    reply: Reply, ctx: RenderContext, calls: list[tuple[str, ScriptedCall]]
) -> dict[str, Any]:
    content: list[dict[str, Any]] = [b.block() for b in reply.thinking]  # thinking first, as Anthropic
    if reply.content:
        content.append({"type": "text", "text": reply.content})
    for call_id, c in calls:
        block: dict[str, Any] = {"type": "tool_use", "id": call_id, "name": c.name}
        value = _anthropic_input(c.arguments)
        if value is not _MISSING:
            block["input"] = value
        content.append(block)
    return {
        "id": f"msg_fake{ctx.serial}",
        "type": "message",
        "role": "assistant",
        "model": ctx.model,
        "content": content,
        "stop_reason": _stop_reason(reply, calls),
        "stop_sequence": None,
        "usage": _anthropic_usage(reply),
    }


def _anthropic_stream(
    reply: Reply, ctx: RenderContext, calls: list[tuple[str, ScriptedCall]]
) -> list[_Frame]:
    usage = _anthropic_usage(reply)

    def ev(kind: str, **payload: Any) -> _Frame:
        return _sse({"type": kind, **payload}, event=kind)

    start: dict[str, Any] = {
        "id": f"msg_fake{ctx.serial}",
        "type": "message",
        "role": "assistant",
        "model": ctx.model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {**{k: v for k, v in usage.items() if k != "output_tokens"}, "output_tokens": 1},
    }
    frames = [ev("message_start", message=start)]
    blocks: list[tuple[dict[str, Any], list[dict[str, Any]]]] = [b.streamed() for b in reply.thinking]
    if reply.content:
        blocks.append(
            (
                {"type": "text", "text": ""},
                [{"type": "text_delta", "text": p} for p in _pieces(reply.content)],
            )
        )
    for call_id, c in calls:
        args = _args_text(c.arguments) or ""
        deltas = [{"type": "input_json_delta", "partial_json": p} for p in _pieces(args)]
        blocks.append(({"type": "tool_use", "id": call_id, "name": c.name, "input": {}}, deltas))
    for index, (block, deltas) in enumerate(blocks):
        frames.append(ev("content_block_start", index=index, content_block=block))
        if index == 0:
            frames.append(ev("ping"))  # real servers ping right after the first block opens
        frames += [ev("content_block_delta", index=index, delta=d) for d in deltas]
        frames.append(ev("content_block_stop", index=index))
    if not blocks:
        frames.append(ev("ping"))
    stop = {"stop_reason": _stop_reason(reply, calls), "stop_sequence": None}
    frames.append(ev("message_delta", delta=stop, usage={"output_tokens": usage["output_tokens"]}))
    frames.append(ev("message_stop"))
    return frames


# --- quirks that apply to both wires ----------------------------------------------------------


def _add_noise(frames: list[_Frame], wire: Wire | None) -> list[_Frame]:
    """`: keep-alive` comments (first, then every 3 events) and one unknown `event:` after the first."""
    if wire == "anthropic":
        unknown = _sse({"type": "fluxrouter.status", "status": "routed"}, event="fluxrouter.status")
    else:
        unknown = _sse({"status": "routed"}, event="fluxrouter.status")
    unknown.counts = False
    out = [_Frame(b": keep-alive\n\n", counts=False)]
    for i, f in enumerate(frames):
        out.append(f)
        if i == 0:
            out.append(unknown)
        elif i % 3 == 0:
            out.append(_Frame(b": keep-alive\n\n", counts=False))
    return out


def _cut(frames: list[_Frame], n: int) -> list[_Frame]:
    """The frames up to (and including) the n-th counted event."""
    if n <= 0:
        return []
    seen = 0
    for i, f in enumerate(frames):
        seen += f.counts
        if seen == n:
            return frames[: i + 1]
    return frames


def _apply_faults(frames: list[_Frame], reply: Reply, wire: Wire | None) -> tuple[list[_Frame], bool]:
    abort = False
    for q in reply.quirks:  # in the order given, so an error event can be followed by a drop
        if isinstance(q, StreamError):
            frames = [*_cut(frames, q.chunks), _error_frame(q.error, wire)]
        elif isinstance(q, DropAfter):
            frames = _cut(frames, q.chunks)
            abort = True
    return frames, abort


def _error_frame(err: Mapping[str, Any] | None, wire: Wire | None) -> _Frame:
    if wire == "anthropic":
        inner = dict(err) if err is not None else {"type": "overloaded_error", "message": "Overloaded"}
        return _sse({"type": "error", "error": inner}, event="error")
    default = {"message": "FakeFluxRouter: injected mid-stream error", "type": "server_error", "param": None}
    inner = dict(err) if err is not None else {**default, "code": None}
    return _sse({"error": inner})

"""The OpenAI chat-completions wire: request bodies out, canonical `ModelTurn`s in.

The canonical conversation *is* this wire's format, so encoding is a dict literal and one JSON
dump, with no per-request reflection. Decoding is lenient where providers differ (see
shared wire-notes): content null / missing / list of parts, arguments as string / object /
null / missing, a missing `type`, a legacy `function_call`, any `finish_reason`. What cannot be
understood becomes an `APIResponseError`, never a `KeyError`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .. import _json
from .._events import ToolCallDelta
from .._exceptions import APIResponseError, ConversationError
from .._model import ModelRequest
from .._retry import Failure
from .._types import ModelTurn
from .._usage import at_least, openai_usage
from .assembler import NO_EVENTS, SHORT, StreamAssembler, ToolSlot, parse_short
from .body import load_body, preview
from .shapes import call_problem, index_problem, shown, value_problem
from .thinking import without_thinking

__all__ = ["OpenAIWire", "OpenAIStream"]


class OpenAIWire:
    name = "openai"
    path = "/chat/completions"

    @staticmethod
    def url(base_url: str) -> str:
        return base_url + "/chat/completions"

    @staticmethod
    def assembler(run_id: str | None, step: int, request_id: str | None) -> OpenAIStream:
        return OpenAIStream(run_id, step, request_id)

    @staticmethod
    def auth_headers(api_key: str) -> dict[str, str]:
        return {"authorization": f"Bearer {api_key}"}

    @staticmethod
    def encode(request: ModelRequest, *, stream: bool = False) -> bytes:
        # Anthropic's thinking blocks, kept on the canonical message, never go out here: OpenAI
        # answers 400 to a message property it does not know (`without_thinking`: one scan).
        body: dict[str, Any] = {"model": request.model, "messages": without_thinking(request.messages)}
        if request.tools:  # some providers reject an empty tools array (and tool_choice without tools)
            body["tools"] = request.tools
            if request.tool_choice is not None:
                body["tool_choice"] = request.tool_choice
        if request.settings:
            body.update(request.settings)
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return _json.dumps(body)

    @staticmethod
    def decode(content: bytes, *, request_id: str | None = None, status: int = 200) -> ModelTurn:
        data = load_body(content, request_id, status, _arguments_objects)
        return parse_completion(data, request_id=request_id, status=status)


def _arguments_objects(data: Any) -> Iterator[tuple[dict[str, Any], str]]:
    """Where this wire's tool-call arguments are in a completion body: (the function object, key)."""
    choices = data.get("choices") if isinstance(data, dict) else None
    for choice in choices if isinstance(choices, list) else ():
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            continue
        calls = message.get("tool_calls")
        calls = [calls] if isinstance(calls, dict) else calls if isinstance(calls, list) else []
        for fn in [c.get("function") for c in calls if isinstance(c, dict)] + [message.get("function_call")]:
            if isinstance(fn, dict) and "arguments" in fn:
                yield fn, "arguments"


def parse_completion(data: Any, *, request_id: str | None = None, status: int = 200) -> ModelTurn:
    """A decoded chat.completion body (sent with the 2xx `status`) → `ModelTurn`."""
    if not isinstance(data, dict):
        raise APIResponseError(
            f"the endpoint answered {status} with a JSON {type(data).__name__} instead of a completion object",
            body=preview(data),
            request_id=request_id,
        )
    choices = data.get("choices")
    if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
        error = data.get("error")
        if error is not None:  # some routers answer 200 with an error object instead of choices
            message = error.get("message") if isinstance(error, dict) else error
            raise APIResponseError(
                f"the endpoint answered {status} with an error instead of a completion: {message}",
                body=preview(data),
                request_id=request_id,
            )
        raise APIResponseError(
            f"the endpoint answered {status} without any choices; the routed model returned nothing",
            body=preview(data),
            request_id=request_id,
        )
    choice = choices[0]
    raw = choice.get("message")
    if not isinstance(raw, dict):
        raise APIResponseError(
            f"the endpoint answered {status} with a choice that has no message object",
            body=preview(data),
            request_id=request_id,
        )
    problem = value_problem("content", raw.get("content"), str, list, owner="a message")
    problem = problem or _calls_problem(raw.get("tool_calls"), raw.get("function_call"))
    if problem is not None:  # dropped or a nameless call: the model's call lost without a word
        raise APIResponseError(
            f"the endpoint answered {status} with {problem}; this is a router or proxy fault, retry later "
            "or report it with the request id",
            body=preview(data),
            request_id=request_id,
        )
    problems: list[str] = []
    model, rid = data.get("model"), data.get("id")  # any JSON: kept only as text, as a stream's are
    return ModelTurn(
        message=normalize_message(raw),
        usage=openai_usage(data.get("usage"), problems),
        finish_reason=choice.get("finish_reason"),
        model=model if isinstance(model, str) else None,
        request_id=request_id or (rid if isinstance(rid, str) else None),
        usage_problems=tuple(problems),
    )


def _calls_problem(calls: Any, legacy: Any) -> str | None:
    """The first call of `tool_calls` (a list, or one sent bare) or legacy `function_call` of the wrong shape."""
    if not calls:
        calls = None if legacy is None else [{"function": legacy}]
    elif not isinstance(calls, list | dict):  # (dropped, it ended the run as an empty answer)
        return f"`tool_calls` as {shown(calls)}, not a list of calls"
    entries = [calls] if isinstance(calls, dict) else calls or ()
    return next((p for p in map(call_problem, entries) if p is not None), None)


def normalize_message(raw: dict[str, Any]) -> dict[str, Any]:
    """A provider's assistant message → the canonical assistant dict (a new dict, unknown keys dropped)."""
    if not isinstance(raw, dict):
        raise ConversationError(
            f"normalize_message needs an assistant message (a dict), got {type(raw).__name__}: "
            "pass the provider's message object, e.g. choices[0]['message']"
        )
    content = raw.get("content")
    if isinstance(content, list):  # content parts: keep the text
        content = parts_text(content) or None
    elif content is not None and not isinstance(content, str):
        content = str(content)
    message: dict[str, Any] = {"role": "assistant", "content": content}
    calls = raw.get("tool_calls")
    if not calls and isinstance(raw.get("function_call"), dict):  # legacy single function_call
        calls = [{"function": raw["function_call"]}]
    if isinstance(calls, dict):  # one call sent bare, not in a list: dropping it ended the run silently
        calls = [calls]
    if calls and isinstance(calls, list):
        message["tool_calls"] = [normalize_tool_call(c) for c in calls]
    if isinstance(raw.get("refusal"), str):
        message["refusal"] = raw["refusal"]
    return message


def parts_text(parts: list[Any]) -> str:
    """The text of content parts (`{"type": "text", "text": ...}`, as some providers send content,
    whole or streamed); a part without text (a "thinking" part, a text that is not a str) adds none."""
    return "".join(t for p in parts if isinstance(p, dict) and isinstance(t := p.get("text"), str))


def normalize_tool_call(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raw = {}
    fn = raw.get("function")
    if not isinstance(fn, dict):
        fn = {}
    name = fn.get("name")
    args = fn.get("arguments")
    if args is None or args == "":
        args = "{}"  # replayable: some providers reject "" on the next turn
    elif not isinstance(args, str):
        try:
            args = _json.dumps_str(args)  # an already-parsed object: re-encode so the message replays
        except TypeError:
            args = str(args)
    cid = raw.get("id")
    return {
        "id": cid if isinstance(cid, str) else "",  # repaired by the loop before it is stored
        "type": "function",
        "function": {"name": name if isinstance(name, str) else "", "arguments": args},
    }


class OpenAIStream(StreamAssembler):
    """`chat.completion.chunk` events → deltas and a `ModelTurn` (see `_stream.py`)."""

    # `_by_id`, `_top`: each index-less fragment's slot by its id, the highest slot (a scan of the
    # slots was quadratic: 870 KiB of such calls held the event loop 7 s). `_choice`: the first
    # choice streamed, the only one read (another's text was mixed into the answer).
    __slots__ = ("_by_id", "_choice", "_top")

    def __init__(self, run_id: str | None, step: int, request_id: str | None) -> None:
        super().__init__(run_id, step, request_id)
        self._by_id: dict[str, int] | None = None  # made at the first index-less fragment with an id
        self._top: int | None = None  # the highest slot index (None: no slot yet)
        self._choice: Any = ...  # (none seen yet)

    def feed_all(self, batch: list[tuple[str, str]]) -> tuple[list[Any], Failure | None]:
        # Hot: once per network read of every streamed answer; a plain data event (nearly all of
        # them) goes straight to `chunk`, one call per event fewer than through `feed`.
        out: list[Any] = []
        try:
            for event, data in batch:
                if event == "message" and data[:1] == "{" and len(data) <= SHORT:
                    try:  # `parse`, inline
                        obj = parse_short(data)
                    except ValueError:
                        raise self.not_json(data) from None
                    got = self.chunk(obj)
                else:
                    got = self.feed(event, data)
                    if self.ended:
                        break  # [DONE]: what follows it is not part of the answer
                if got:
                    out += got
        except Failure as failure:
            return out, failure
        return out, None

    def feed(self, event: str, data: str) -> tuple[Any, ...]:
        if event != "message" and event:
            if event == "error":
                obj = self.parse(data) if data.strip() else None
                raise self.error(obj.get("error", obj) if isinstance(obj, dict) else obj)
            return NO_EVENTS  # a router's own events (`event: status`...)
        if not data:
            return NO_EVENTS
        if data == "[DONE]":
            self.complete = self.ended = True
            return NO_EVENTS
        return self.chunk(self.parse(data))

    def chunk(self, chunk: Any) -> tuple[Any, ...]:
        """One parsed `chat.completion.chunk` → its deltas."""
        # Checks ordered so a usual chunk (one delta, no usage) takes the fewest steps; every
        # shape is still checked before use (`type(x) is dict`: the JSON parser makes exact
        # dicts, lists, strs and ints).
        if type(chunk) is not dict:
            return NO_EVENTS
        get = chunk.get
        if get("error") is not None:  # a JSON error object mid-stream
            raise self.error(chunk["error"])
        self.chunks += 1
        if self.response_id is None:
            self._identify(chunk)
        usage = get("usage")
        if usage is not None:  # usually a last chunk with no choices; a later report never lowers it
            self.usage = at_least(self.usage, openai_usage(usage, self.usage_problems))
        choices = get("choices")
        if not choices or type(choices) is not list:
            return NO_EVENTS
        choice = choices[0]
        if type(choice) is not dict:
            return NO_EVENTS
        if choice.get("index") not in (self._choice, None) and (choice := self._own_choice(choices)) is None:
            return NO_EVENTS
        finish = choice.get("finish_reason")
        if finish:
            self.finish_reason = finish
            self.complete = True
        delta = choice.get("delta")
        if not delta or type(delta) is not dict:
            return NO_EVENTS
        calls = delta.get("tool_calls")
        if calls and len(delta) == 1 and type(calls) is list and len(calls) == 1:
            ev = self._tool(calls[0])  # the usual tool-call chunk: one fragment of one call, nothing else
            return (ev,) if ev is not None else NO_EVENTS
        return self._delta(delta)

    def _own_choice(self, choices: list[Any]) -> dict[str, Any] | None:
        """The answer's choice in a chunk: the first with an index (any), or none: never another."""
        if self._choice is ...:
            self._choice = choices[0].get("index")
            return choices[0]  # type: ignore[no-any-return]
        return next((c for c in choices if type(c) is dict and c.get("index") == self._choice), None)

    def _identify(self, chunk: dict[str, Any]) -> None:
        rid, model = chunk.get("id"), chunk.get("model")
        self.response_id = rid if isinstance(rid, str) else None
        self.model = model if isinstance(model, str) else None

    def _delta(self, delta: dict[str, Any]) -> tuple[Any, ...]:
        get = delta.get
        content = get("content")
        calls = get("tool_calls")
        if calls and not content and type(calls) is list and len(calls) == 1 and "refusal" not in delta:
            ev = self._tool(calls[0])  # one fragment of one call (with a role, say)
            return (ev,) if ev is not None else NO_EVENTS
        out: list[Any] = []
        if content and isinstance(content, str):
            out.append(self.text_delta(content))
        elif content and isinstance(content, list) and (text := parts_text(content)):
            out.append(self.text_delta(text))  # content parts, as a whole answer may have them
        elif content and type(content) is not list:  # (dropped, the run ended with the text lost)
            raise self.malformed(f"a delta whose `content` is {shown(content)}, not a string", content)
        if isinstance(get("refusal"), str):
            self.refusal.append(delta["refusal"])
        if not calls and get("function_call") is not None:  # legacy single function_call
            calls = [{"index": 0, "function": delta["function_call"]}]
        if calls:
            if type(calls) is dict:  # one call sent bare, as a whole answer may (`normalize_message`)
                calls = [calls]
            elif type(calls) is not list:  # dropped, it ended the run as an answer without calls
                raise self.malformed(f"`tool_calls` as {shown(calls)}, not a list of calls", calls)
            for tc in calls:
                ev = self._tool(tc)
                if ev is not None:
                    out.append(ev)
        return tuple(out)

    def _tool(self, tc: Any) -> Any:
        if type(tc) is not dict:  # dropped, it lost the model's call without a word
            raise self.malformed(f"a tool call that is {shown(tc)}, not an object", tc)
        get = tc.get
        index = get("index")
        if len(tc) == 2 and type(index) is int:  # the usual: {"index": i, "function": {"arguments": "..."}}
            slot = self.slots.get(index)  # (only a checked index has a slot)
            fn = get("function")
            if slot is not None and slot.announced and type(fn) is dict and len(fn) == 1:
                args = fn.get("arguments")
                if type(args) is str:  # a later fragment of an announced call (its id and name are taken)
                    if not args:
                        return None
                    slot.args.append(args)
                    return ToolCallDelta(self.run_id, self.step, index, None, args)
        problem = call_problem(tc) or index_problem(index)
        if problem is not None:  # (dropped, a fragment of the wrong shape lost the model's call)
            raise self.malformed(problem, tc)
        if index is None:
            index = self._place(tc)
        slot = self.slots.get(index)
        if slot is None:
            slot = self.slots[index] = ToolSlot()
            self._top = index if self._top is None or index > self._top else self._top
        if not slot.id:
            cid = get("id")
            if cid and type(cid) is str:
                slot.id = cid  # taken once: routers that repeat it do not change it
                if self._by_id is not None:
                    self._by_id.setdefault(cid, index)
        fn = get("function")
        fragment = ""
        if type(fn) is dict:
            if not slot.name:
                name = fn.get("name")
                if name and type(name) is str:
                    slot.name = name  # taken once, never concatenated
            args = fn.get("arguments")
            if type(args) is str:
                fragment = args
            elif args is not None:  # an already-parsed object (`call_problem` let nothing else by)
                try:
                    fragment = _json.dumps_str(args)
                except (TypeError, ValueError):  # (a float the parser made infinite)
                    fragment = str(args)
        return self.tool_delta(index, slot, fragment)

    def _place(self, tc: dict[str, Any]) -> int:
        """The slot of a fragment without an index (some OpenAI-compatible servers): a new id
        opens a call, else it continues the last one."""
        cid = tc.get("id") if isinstance(tc.get("id"), str) else ""
        if cid:
            by_id = self._by_id
            if by_id is None:  # the slots opened by index so far, once
                by_id = self._by_id = {}
                for i, s in self.slots.items():
                    if s.id:
                        by_id.setdefault(s.id, i)
            known = by_id.get(cid)
            if known is not None:
                return known
        top = self._top
        if top is None:
            return 0
        return top + 1 if cid else top

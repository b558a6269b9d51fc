"""History policies: what of a long conversation is sent with each model request.

`Agent(history=History(...))` processes the conversation before every model request. The run's
own conversation (what `RunResult.messages` holds and the journal records) is never changed:
only the copy sent to the model is. In order:

1. `keep_last=N`: keep the last N turns. A turn is a user message, or an assistant message
   together with all its tool results, so a tool call is never separated from its results.
2. `max_tokens=T`: keep as many recent turns as fit in T prompt tokens. Tokens are estimated
   (about 4 characters a token) and calibrated against the prompt tokens the router reports
   for the previous request of the run, so the estimate tracks the real tokenizer.
3. `keep_tool_results=K`: the results of all but the last K tool steps are replaced by a
   short note (`tool_result_note`): the calls stay, the bulky outputs go.
4. `processor`: your own (sync or async) function `(ctx, messages) -> messages`, e.g. to
   summarise what was dropped. It gets a copy it may change.

Always kept: the leading system / developer messages and the first user message (the task),
even when nothing else fits. Whatever a processor returns is repaired before it is sent, so the
wire never sees an orphan tool result, an assistant tool call without its result, or a history
that does not start with a user message.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .._context import RunContext
from .._exceptions import ConfigurationError

__all__ = ["History", "HistoryProcessor", "HistoryState", "repair_history"]

HistoryProcessor = Callable[
    [RunContext[Any], list[dict[str, Any]]], "list[dict[str, Any]] | Awaitable[list[dict[str, Any]]]"
]
_OMITTED = "(Earlier messages of this conversation were omitted to fit the context window.)"


@dataclass(frozen=True)
class History:
    """How much of the conversation each model request carries (see the module docstring)."""

    keep_last: int | None = None
    max_tokens: int | None = None
    keep_tool_results: int | None = None
    processor: HistoryProcessor | None = None
    tool_result_note: str = "[tool result removed from the context to save space]"

    def __post_init__(self) -> None:
        for name in ("keep_last", "max_tokens", "keep_tool_results"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise ConfigurationError(f"History({name}=...) must be a positive int or None, got {v!r}")
        if self.processor is not None and not callable(self.processor):
            raise ConfigurationError(
                f"History(processor=...) must be a function (ctx, messages) -> messages, got {self.processor!r}"
            )

    def start(self) -> HistoryState:
        return HistoryState(self)


def estimate(message: dict[str, Any]) -> int:
    """Rough tokens of one message: ~4 characters a token, plus a little per message."""
    n = 4
    content = message.get("content")
    if isinstance(content, str):
        n += len(content) // 4
    elif isinstance(content, list):
        n += sum(len(str(p.get("text", ""))) // 4 + 1 for p in content if isinstance(p, dict))
    for c in message.get("tool_calls") or ():
        fn = c.get("function") or {}
        n += 8 + (len(str(fn.get("name", ""))) + len(str(fn.get("arguments", "")))) // 4
    return n


class HistoryState:
    """A policy applied to one run: caches message sizes and the tokenizer calibration."""

    __slots__ = ("head", "policy", "scale", "sent_estimate", "sizes")

    def __init__(self, policy: History) -> None:
        self.policy = policy
        self.sizes: list[int] = []  # estimate of run.messages[i], filled as the conversation grows
        self.scale = 1.0  # reported prompt tokens / estimated tokens of the last request
        self.sent_estimate = 0
        self.head: int | None = None  # run.messages[:head] is always sent

    def observe(self, prompt_tokens: int) -> None:
        """Calibrate against what the router counted for the request just sent."""
        if prompt_tokens > 0 and self.sent_estimate > 0:
            self.scale = prompt_tokens / self.sent_estimate

    async def process(self, messages: list[dict[str, Any]], ctx: RunContext[Any]) -> list[dict[str, Any]]:
        p = self.policy
        sizes = self.sizes
        for m in messages[len(sizes) :]:
            sizes.append(estimate(m))
        if self.head is None:
            self.head = _head(messages)
        head = self.head
        cut = self._cut(messages, head)
        out = messages[:head] + messages[cut:] if cut > head else list(messages)
        exact = p.processor is not None or p.keep_tool_results is not None
        if p.keep_tool_results is not None:
            out = _drop_tool_results(out, head, p.keep_tool_results, p.tool_result_note)
        if p.processor is not None:
            result = p.processor(ctx, _copied(out))
            if inspect.isawaitable(result):
                result = await result
            if not isinstance(result, list) or not result:
                raise ConfigurationError(
                    "the history processor must return a non-empty list of chat-format messages"
                )
            out = result
        out = repair_history(out)
        if exact:
            self.sent_estimate = sum(estimate(m) for m in out)
        else:  # from the cached sizes: O(messages sent), not O(conversation)
            self.sent_estimate = sum(sizes[:head]) + sum(sizes[cut:]) if cut > head else sum(sizes)
        return out

    def _cut(self, messages: list[dict[str, Any]], head: int) -> int:
        """Index of the oldest message still sent after the head (walks back from the end only)."""
        p = self.policy
        if p.keep_last is None and p.max_tokens is None:
            return head
        budget = None if p.max_tokens is None else p.max_tokens / self.scale - sum(self.sizes[:head])
        turns, used, i, start = 0, 0, len(messages), len(messages)
        while i > head:
            i -= 1
            used += self.sizes[i]
            if messages[i].get("role") in ("user", "assistant", "system", "developer"):  # a turn starts here
                if (p.keep_last is not None and turns >= p.keep_last) or (
                    budget is not None and used > budget and turns > 0
                ):
                    break
                turns += 1
                start = i
        else:
            return head
        return start


def _head(messages: list[dict[str, Any]]) -> int:
    """Leading system/developer messages and the first user message: never dropped."""
    i = 0
    while i < len(messages) and messages[i].get("role") in ("system", "developer"):
        i += 1
    if i < len(messages) and messages[i].get("role") == "user":
        i += 1
    return i


def _drop_tool_results(out: list[dict[str, Any]], head: int, keep: int, note: str) -> list[dict[str, Any]]:
    steps, boundary = 0, None
    for i in range(len(out) - 1, head - 1, -1):  # where the last `keep` tool steps begin
        m = out[i]
        if m.get("role") == "assistant" and m.get("tool_calls"):
            steps += 1
            if steps == keep:
                boundary = i
                break
    if boundary is None:
        return out
    return [
        {**m, "content": note} if idx < boundary and m.get("role") == "tool" else m
        for idx, m in enumerate(out)
    ]


def repair_history(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A history both wires accept: each tool result answers a call of the assistant message
    right before its run of tool messages; unanswered calls are removed from their message
    (and a message left empty is dropped); the first message after the system ones is a user one."""
    out: list[dict[str, Any]] = []
    open_calls: dict[str, dict[str, Any]] = {}  # call id -> call, of the last assistant message
    answered: set[str] = set()
    for m in messages:
        if not isinstance(m, dict):
            raise ConfigurationError(
                f"the history processor returned {type(m).__name__} where a message dict was expected"
            )
        role = m.get("role")
        if role == "tool":
            cid = m.get("tool_call_id")
            if cid in open_calls and cid not in answered:
                answered.add(cid)
                out.append(m)
            continue  # an orphan result: dropped
        _close(out, open_calls, answered)
        if role == "assistant" and m.get("tool_calls"):
            open_calls = {c.get("id"): c for c in m["tool_calls"]}
            answered = set()
        out.append(m)
    _close(out, open_calls, answered)
    first = next((i for i, m in enumerate(out) if m.get("role") not in ("system", "developer")), len(out))
    if first == len(out) or out[first].get("role") != "user":
        out.insert(first, {"role": "user", "content": _OMITTED})
    return out


def _close(out: list[dict[str, Any]], open_calls: dict[str, Any], answered: set[str]) -> None:
    """The assistant message of `open_calls` keeps only its answered calls."""
    if not open_calls or len(answered) == len(open_calls):
        open_calls.clear()
        return
    for j in range(len(out) - 1, -1, -1):
        m = out[j]
        if m.get("role") == "assistant" and m.get("tool_calls"):
            kept = [c for c in m["tool_calls"] if c.get("id") in answered]
            if kept:
                out[j] = {**m, "tool_calls": kept}
            elif m.get("content"):
                out[j] = {k: v for k, v in m.items() if k != "tool_calls"}
            else:
                del out[j]
            break
    open_calls.clear()


def _copied(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages a processor may change in place, nested parts included, without touching the run's
    own conversation (a shallow list copy shared the dicts: an edit reached the run and the journal)."""
    return [_copy(m) for m in messages]


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value

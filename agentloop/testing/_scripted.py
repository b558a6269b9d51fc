"""`ScriptedModel`: the `Model` interface in memory, for fast tests of an agent's own logic.

It plays the same `Reply` values as `FakeFluxRouter` (text, tool_calls, error), or asks a
handler, without HTTP. Use the fake router when the transport matters (retries, wire formats,
streaming); use this when only the loop and the tools do.
"""

from __future__ import annotations

import inspect
import itertools
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from agentloop import (
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    InternalServerError,
    ModelTurn,
    RateLimitError,
    Usage,
    normalize_message,
)
from agentloop.abc import Emit, ModelRequest
from agentloop.testing import _codec
from agentloop.testing._replies import Reply

__all__ = ["ScriptedModel"]

ScriptHandler = Callable[[ModelRequest], "Reply | ModelTurn | Awaitable[Reply | ModelTurn]"]

_STATUS_ERRORS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: AuthenticationError,
    422: BadRequestError,
    429: RateLimitError,
}


class ScriptedModel:
    """Answers each request with the next scripted `Reply` (or the handler's answer).

    `requests` keeps a snapshot of every request: the model id, a copy of the messages as they
    were at that moment, the tools and the tool_choice.
    """

    def __init__(self, script: Iterable[Reply] | ScriptHandler = ()) -> None:
        self._handler: ScriptHandler | None = script if callable(script) else None
        self._script: deque[Reply] = deque() if callable(script) else deque(script)
        self.requests: list[dict[str, Any]] = []
        self._ids = itertools.count(1)

    def add(self, *replies: Reply) -> None:
        self._script.extend(replies)

    async def request(self, request: ModelRequest, emit: Emit | None = None) -> ModelTurn:
        self.requests.append(
            {
                "model": request.model,
                "messages": [dict(m) for m in request.messages],
                "tools": request.tools,
                "tool_choice": request.tool_choice,
            }
        )
        if self._handler is not None:
            answer = self._handler(request)
            if inspect.isawaitable(answer):
                answer = await answer
        elif self._script:
            answer = self._script.popleft()
        else:
            raise AssertionError(f"ScriptedModel: script exhausted after {len(self.requests) - 1} replies")
        return answer if isinstance(answer, ModelTurn) else self._turn(answer)

    def _turn(self, reply: Reply) -> ModelTurn:
        if reply.kind == "error":
            cls = _STATUS_ERRORS.get(
                reply.status, InternalServerError if reply.status >= 500 else APIStatusError
            )
            raise cls(f"scripted error {reply.status}: {reply.error_message}", status_code=reply.status)
        if reply.kind != "message":
            raise ValueError(f"ScriptedModel cannot play a {reply.kind!r} reply; use FakeFluxRouter for it")
        raw: dict[str, Any] = {"role": "assistant", "content": reply.content}
        if reply.tool_calls:
            calls = []
            for c in reply.tool_calls:
                fn: dict[str, Any] = {"name": c.name}
                if c.arguments is not None:
                    fn["arguments"] = (
                        c.arguments if isinstance(c.arguments, str) else _codec.dumps_str(c.arguments)
                    )
                calls.append({"id": c.id if c.id is not None else f"call_{next(self._ids)}", "function": fn})
            raw["tool_calls"] = calls
        finish = reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")
        message = normalize_message(raw)
        if reply.thinking:  # as the Anthropic wire decodes them
            message["thinking_blocks"] = [b.block() for b in reply.thinking]
        problems: list[str] = []  # a count that is not one: reported as FluxClient reports it
        usage = Usage.from_openai(reply.usage or {"prompt_tokens": 10, "completion_tokens": 5}, problems)
        return ModelTurn(message, usage, finish, usage_problems=tuple(problems))

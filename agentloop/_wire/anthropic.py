"""The Anthropic Messages wire: canonical (OpenAI chat) messages out, canonical `ModelTurn`s in.

The conversation stays in OpenAI chat format; this adapter translates at the edge, per request:

- `system` / `developer` messages are lifted into the top-level `system` string;
- an assistant message's `tool_calls` become `tool_use` blocks (`input` = the parsed arguments,
  `{}` when they are not a JSON object: the model already got an "invalid arguments" tool result);
- consecutive `tool` messages become ONE user message of `tool_result` blocks, and a user message
  that follows them joins it (results first, then text), as the wire requires;
- tools become `{"name", "description", "input_schema"}` (converted once per tool list);
- `tool_choice` "auto" / "required" / "none" / a forced function → auto / any / none / tool;
- `max_tokens` is required: the agent's setting, else the client's default.

`is_error` on a `tool_result`: the canonical tool message carries no status. The adapter sets it
for the ids in `ModelRequest.tool_errors` when the request has that attribute (ids of the calls
whose outcome was not "ok"); otherwise every result goes out with `is_error: false`, and the
model reads the failure from the result text, which always says what went wrong.

Answers are decoded in `anthropic_response.py` (whole messages and streams): text blocks joined,
`tool_use` blocks as `tool_calls`, thinking blocks kept on the message and sent back unchanged,
first or, when the answer interleaved them, in their place (`thinking_layout`, `thinking.py`). Thinking settings pass through `model_settings` as they are:
`{"thinking": {"type": "enabled", "budget_tokens": N}}`.
"""

from __future__ import annotations

from typing import Any

from .. import _json
from .._model import ModelRequest
from .._types import ModelTurn
from .anthropic_request import InputMemo, encode_messages, tool_choice, tool_definition
from .anthropic_response import AnthropicStream, parse_message, tool_inputs
from .body import load_body

__all__ = ["AnthropicWire", "AnthropicStream", "encode_messages", "ANTHROPIC_VERSION", "DEFAULT_MAX_TOKENS"]

ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096


class AnthropicWire:
    name = "anthropic"

    __slots__ = ("_inputs", "_tools_in", "_tools_out", "max_tokens")

    def __init__(self, *, max_tokens: int = DEFAULT_MAX_TOKENS) -> None:
        self.max_tokens = max_tokens
        self._inputs = InputMemo()
        self._tools_in: list[dict[str, Any]] | None = None  # the last tool list converted ...
        self._tools_out: list[dict[str, Any]] = []  # ... and its conversion (tool lists are immutable)

    @staticmethod
    def url(base_url: str) -> str:
        return base_url + ("/messages" if base_url.endswith("/v1") else "/v1/messages")

    @staticmethod
    def auth_headers(api_key: str) -> dict[str, str]:
        return {"x-api-key": api_key, "anthropic-version": ANTHROPIC_VERSION}

    @staticmethod
    def assembler(run_id: str | None, step: int, request_id: str | None) -> AnthropicStream:
        return AnthropicStream(run_id, step, request_id)

    def encode(self, request: ModelRequest, *, stream: bool = False) -> bytes:
        return _json.dumps(self.body(request, stream=stream))

    def body(self, request: ModelRequest, *, stream: bool = False) -> dict[str, Any]:
        system, messages = encode_messages(
            request.messages, getattr(request, "tool_errors", None), self._inputs
        )
        settings = dict(request.settings)
        max_tokens = settings.pop("max_tokens", None) or settings.pop("max_completion_tokens", None)
        settings.pop("max_completion_tokens", None)
        body: dict[str, Any] = {"model": request.model, "max_tokens": max_tokens or self.max_tokens}
        if system:
            body["system"] = system
        body["messages"] = messages
        parallel = settings.pop("parallel_tool_calls", None)
        if request.tools:
            body["tools"] = self._tools(request.tools)
            choice = tool_choice(request.tool_choice)
            if parallel is False:
                choice = {**(choice or {"type": "auto"}), "disable_parallel_tool_use": True}
            if choice is not None:
                body["tool_choice"] = choice
        stop = settings.pop("stop", None)
        if stop is not None:
            body["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
        user = settings.pop("user", None)
        if isinstance(user, str):
            body["metadata"] = {"user_id": user}
        body.update(settings)  # temperature, top_p, top_k, thinking, ...: sent as they are
        if stream:
            body["stream"] = True
        return body

    def _tools(self, tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if tools is not self._tools_in:
            self._tools_out = [tool_definition(t) for t in tools]
            self._tools_in = tools
        return self._tools_out

    @staticmethod
    def decode(content: bytes, *, request_id: str | None = None, status: int = 200) -> ModelTurn:
        data = load_body(content, request_id, status, tool_inputs)
        return parse_message(data, request_id=request_id, status=status)

"""What `FakeFluxRouter` refuses before its script answers, as the real providers would: a
request without its key (`auth_refusal`), and rules of the request body (`refusal`).

Each check returns the error response (status, message, error type) or None. They mirror rules a
provider enforces and the fake would otherwise accept, so a client that breaks them fails its
tests instead of production:

- Anthropic's extended thinking: with `thinking` enabled, the assistant turn whose `tool_use`
  blocks the last message's `tool_result` blocks answer must start with its thinking blocks, sent
  back unchanged (the fake signs the thinking it sends, `fake_signature`, and checks the
  signature of every thinking block that comes back); an assistant message holding thinking
  starts with it; `max_tokens` is more than `budget_tokens`.
- Anthropic's text blocks: an empty one anywhere, or a message whose only text is whitespace.
- OpenAI: a message property it does not know (`thinking_blocks`) is refused.

And its own misuse, `OTHER_TASK`: closed in another task than the one that opened it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Container
from typing import Any

__all__ = ["OTHER_TASK", "Refusal", "auth_refusal", "fake_signature", "refusal"]

# pytest-asyncio runs an async fixture's setup and its teardown in two tasks; the router's task
# group can only be closed by the task that opened it (anyio's raw error said just that).
OTHER_TASK = (
    "FakeFluxRouter was closed in another task than the one that opened it, as an async fixture of "
    "pytest-asyncio does (setup and teardown run in different tasks); its server is stopped now. Use "
    "agentloop's `fake_router` / `flux_client` fixtures in tests marked @pytest.mark.anyio, or open the "
    "router inside the test: `async with FakeFluxRouter(...) as router:`."
)

Refusal = tuple[int, str, str, str | None]  # status, message, error type, error code
_KINDS = frozenset({"thinking", "redacted_thinking"})
_DOCS = "https://docs.claude.com/en/docs/build-with-claude/extended-thinking"


def fake_signature(thinking: str) -> str:
    """The signature the fake router gives a thinking block it sends (unless scripted): derived
    from the text, so any change to it, or to the signature, is caught when it comes back."""
    return "fakesig-" + hashlib.sha256(thinking.encode("utf-8", "surrogatepass")).hexdigest()[:40]


def auth_refusal(credentials: dict[str, str], wire: str, api_key: str | None) -> Refusal | None:
    """A request without the router's key (when it has one), in the wire's own words."""
    if api_key is None:
        return None
    if wire == "anthropic":
        if credentials.get("x-api-key") == api_key:
            return None
        return 401, "invalid x-api-key", "authentication_error", None
    if credentials.get("authorization") == f"Bearer {api_key}":
        return None
    message = "Incorrect API key provided. You must pass it as `Authorization: Bearer <key>`."
    return 401, message, "invalid_request_error", "invalid_api_key"


def refusal(wire: str | None, body: Any, issued: Container[tuple[str, str]]) -> Refusal | None:
    """The 400 the provider of `wire` would answer to `body`, or None. `issued`: the (thinking,
    signature) pairs scripted with a signature of their own that this router has sent."""
    messages = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(messages, list):
        return None
    if wire == "openai":
        for n, m in enumerate(messages):
            if isinstance(m, dict) and "thinking_blocks" in m:
                message = f"Additional properties are not allowed ('thinking_blocks' was unexpected) - 'messages.{n}'"
                return 400, message, "invalid_request_error", None
        return None
    if wire != "anthropic":
        return None
    problem = (
        _text_problem(messages) or _blocks_problem(messages, issued) or _thinking_problem(body, messages)
    )
    return (400, problem, "invalid_request_error", None) if problem else None


def _text_problem(messages: list[Any]) -> str | None:
    """Anthropic's 400s for text blocks: empty anywhere; blank when the message has no other text."""
    for m in messages:
        content = m.get("content") if isinstance(m, dict) else None
        blocks = [content] if isinstance(content, str) else content if isinstance(content, list) else []
        texts = [b if isinstance(b, str) else b.get("text") for b in blocks
                 if isinstance(b, str) or (isinstance(b, dict) and b.get("type") == "text")]  # fmt: skip
        if any(t == "" for t in texts):
            return "messages: text content blocks must be non-empty"
        if texts and all(isinstance(t, str) and t.isspace() for t in texts):
            return "messages: text content blocks must contain non-whitespace text"
    return None


def _blocks_problem(messages: list[Any], issued: Container[tuple[str, str]]) -> str | None:
    for n, m in enumerate(messages):
        content = m.get("content") if isinstance(m, dict) and m.get("role") == "assistant" else None
        if not isinstance(content, list):
            continue
        kinds = [b.get("type") if isinstance(b, dict) else None for b in content]
        if _KINDS.intersection(kinds) and kinds[0] not in _KINDS:
            return (
                f"messages.{n}.content.0: If an assistant message contains any thinking blocks, the first "
                f"block must be thinking or redacted_thinking. Found {kinds[0]}."
            )
        for k, b in enumerate(content):
            problem = _block_problem(b, issued) if kinds[k] in _KINDS else None
            if problem:
                return f"messages.{n}.content.{k}{problem}"
    return None


def _block_problem(b: dict[str, Any], issued: Container[tuple[str, str]]) -> str | None:
    if b["type"] == "redacted_thinking":
        return None if isinstance(b.get("data"), str) else ".data: Field required"
    text, signature = b.get("thinking"), b.get("signature")
    if not isinstance(text, str):
        return ".thinking: Field required"
    if not isinstance(signature, str):
        return ".signature: Field required"
    if signature != fake_signature(text) and (text, signature) not in issued:
        return ": Invalid `signature` in `thinking` block"
    return None


def _thinking_problem(body: dict[str, Any], messages: list[Any]) -> str | None:
    thinking = body.get("thinking")
    if not isinstance(thinking, dict) or thinking.get("type") not in ("enabled", "adaptive"):
        return None
    budget, max_tokens = thinking.get("budget_tokens"), body.get("max_tokens")
    if isinstance(budget, int) and isinstance(max_tokens, int) and max_tokens <= budget:
        return (
            "`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our documentation at "
            + _DOCS
        )
    last = messages[-1] if messages else None
    results = last.get("content") if isinstance(last, dict) and last.get("role") == "user" else None
    if not isinstance(results, list) or not any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in results
    ):
        return None  # not inside a tool loop: no thinking is required back
    n = len(messages) - 2
    turn = messages[n] if n >= 0 and isinstance(messages[n], dict) else {}
    content = turn.get("content")
    first = content[0] if isinstance(content, list) and content else None
    found = first.get("type") if isinstance(first, dict) else None
    if turn.get("role") != "assistant" or found in _KINDS:
        return None
    return (
        f"messages.{n}.content.0.type: Expected `thinking` or `redacted_thinking`, but found `{found}`. When "
        "`thinking` is enabled, a final `assistant` message must start with a thinking block (preceeding the "
        "lastmost set of `tool_use` and `tool_result` blocks). We recommend you include thinking blocks from "
        "previous turns. To avoid this requirement, disable `thinking`. Please consult our documentation at "
        + _DOCS
    )

"""A chat service's core: store each conversation as JSON, continue it later, keep requests small.

- `result.all_messages()` → `messages_to_json(...)` is what the service stores; the next turn
  is `agent.run(prompt, messages=messages_from_json(stored))`. `result.new_messages()` is what
  this turn added (for an append-only log).
- `History(keep_last=4)`: however long the chat grows, each request carries the instructions,
  the first question and the last 4 turns (the new question included); the stored conversation
  keeps everything.
- Per-run overrides: one turn asks a different model with other settings.
- `result.usage`: requests and tokens, split by the model that answered.

Runs offline against the built-in fake FluxRouter unless FLUX_API_KEY is set.

    python examples/chat_store.py
"""

from __future__ import annotations

import os
from contextlib import AsyncExitStack

import anyio

from agentloop import Agent, FluxClient, History, messages_from_json, messages_to_json

QUESTIONS = [
    "Hi, I'm Ana.",
    "What is 2 + 2?",
    "And times 3?",
    "Name a prime.",
    "Another one?",
    "What's my name?",
]


async def main() -> dict[str, object]:
    store: dict[str, str] = {}  # chat id -> conversation JSON: your database
    async with AsyncExitStack() as stack:
        if os.environ.get("FLUX_API_KEY"):
            client = await stack.enter_async_context(FluxClient())
        else:
            from agentloop.testing import FakeFluxRouter, text

            answers = ["Hello Ana!", "4.", "12.", "7.", "11.", "You are Ana."]
            router = await stack.enter_async_context(FakeFluxRouter([text(a) for a in answers]))
            client = await stack.enter_async_context(FluxClient(base_url=router.base_url, api_key="offline"))
        agent = Agent(
            client=client, instructions="You are a friendly assistant.", history=History(keep_last=4)
        )
        sent: list[int] = []
        for i, question in enumerate(QUESTIONS):
            history = messages_from_json(store["chat-1"]) if "chat-1" in store else None
            overrides = {"model": "flux-pinned-fast", "model_settings": {"temperature": 0}} if i == 1 else {}
            result = await agent.run(question, messages=history, **overrides)  # type: ignore[arg-type]
            store["chat-1"] = messages_to_json(result.all_messages())
            added = result.new_messages()
            print(
                f"> {question}\n< {result.output}   (+{len(added)} messages, {result.usage.requests} request)"
            )
            if not os.environ.get("FLUX_API_KEY"):
                sent.append(len(router.requests[-1].json["messages"]))
        stored = messages_from_json(store["chat-1"])
        print(f"stored: {len(stored)} messages; sent per request: {sent}")
        return {"stored": len(stored), "sent": sent, "last": result.output}


if __name__ == "__main__":
    anyio.run(main)

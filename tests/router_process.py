"""A FakeFluxRouter in a process of its own, for tests whose code under test starts its own event
loop (Agent.run_sync). Prints {"url": ..., "anthropic_url": ...} once listening; serves until its
stdin is closed. Every request gets the answer "hello <n>"."""

from __future__ import annotations

import json
import sys

import anyio

from agentloop.testing import FakeFluxRouter, text


async def main() -> None:
    count = 0

    def handler(request: object) -> object:
        nonlocal count
        count += 1
        return text(f"hello {count}")

    async with FakeFluxRouter(handler) as router:
        print(json.dumps({"url": router.base_url, "anthropic_url": router.anthropic_url}), flush=True)
        await anyio.to_thread.run_sync(sys.stdin.read)  # until the test closes our stdin


anyio.run(main)

"""The seed's weather example with agentloop: two tool calls in parallel, one loop.

Runs offline against the built-in fake FluxRouter unless FLUX_API_KEY is set, in which case it
asks the real FluxRouter (or $FLUX_BASE_URL).

    python examples/weather.py "What's the weather in Lisbon and Paris?"   # the prompt is optional
"""

from __future__ import annotations

import os
import sys
from contextlib import AsyncExitStack

import anyio

from agentloop import Agent, FluxClient, ToolRegistry

tools = ToolRegistry()


@tools.tool
async def get_weather(city: str) -> dict:
    """Get the current weather for a city.

    Args:
        city: City name
    """
    return {"city": city, "temp_c": 21, "sky": "clear"}  # your real function here


async def main(prompt: str) -> str:
    async with AsyncExitStack() as stack:
        if os.environ.get("FLUX_API_KEY"):
            client = await stack.enter_async_context(FluxClient())
        else:
            from agentloop.testing import FakeFluxRouter, weather_handler

            router = await stack.enter_async_context(FakeFluxRouter(weather_handler))
            client = await stack.enter_async_context(FluxClient(base_url=router.base_url, api_key="offline"))
        agent = Agent(client=client, tools=tools, model="flux-auto", max_steps=10)
        result = await agent.run(prompt)
        for record in result.tool_calls:
            print(f"tool {record.name}({record.raw_arguments}) -> {record.status}: {record.content}")
        print(result.output)
        return result.output or ""


if __name__ == "__main__":
    anyio.run(main, sys.argv[1] if len(sys.argv) > 1 else "What's the weather in Lisbon and Paris?")

"""Agents as tools and handoffs: a front-desk agent that asks a research agent (as a tool) and
hands billing questions to a billing agent (a handoff).

- `research.as_tool(...)`: the research agent runs as one tool call of the front desk's run. Its
  events appear in the front desk's stream with `parent_call_id` set (printed indented below),
  and its requests and tokens count in the front desk's usage and limits.
- `handoffs=[billing]`: the front desk's model may call `transfer_to_billing`; the same run then
  continues with the billing agent's instructions and tools. `result.agent_name` says who
  finished.

Runs offline against the built-in fake FluxRouter (on the OpenAI or the Anthropic wire) unless
FLUX_API_KEY is set, in which case it asks the real FluxRouter.

    python examples/agent_team.py               # the OpenAI wire
    python examples/agent_team.py anthropic     # the Anthropic wire
"""

from __future__ import annotations

import os
import sys
from contextlib import AsyncExitStack
from typing import Any

import anyio

from agentloop import (
    Agent,
    FluxClient,
    RunFinished,
    RunLimits,
    ToolCallFinished,
    ToolCallStarted,
    ToolRegistry,
)

research_tools = ToolRegistry()


@research_tools.tool
async def search(query: str) -> str:
    """Search the tea encyclopedia.

    Args:
        query: what to look up.
    """
    return {"oolong": "Oolong is a partly oxidised tea from Fujian and Taiwan."}.get(query, "nothing found")


billing_tools = ToolRegistry()


@billing_tools.tool
async def refund(order: str) -> str:
    """Refund an order in full.

    Args:
        order: the order number, e.g. "A-17".
    """
    return f"order {order} refunded"


def offline_script() -> list[Any]:
    from agentloop.testing import call, text, tool_calls

    return [
        tool_calls(call("research", {"input": "What is oolong?"})),  # front desk -> research agent
        tool_calls(call("search", {"query": "oolong"})),  # the research agent's own tool
        text("Oolong is a partly oxidised tea from Fujian and Taiwan."),  # research answers
        tool_calls(call("transfer_to_billing", {})),  # front desk hands the refund over
        tool_calls(call("refund", {"order": "A-17"})),  # billing's tool
        text("Oolong is a partly oxidised tea; your order A-17 is refunded."),
    ]


async def main(wire: str = "openai") -> Any:
    async with AsyncExitStack() as stack:
        if os.environ.get("FLUX_API_KEY"):
            client = await stack.enter_async_context(FluxClient())
        else:
            from agentloop.testing import FakeFluxRouter

            router = await stack.enter_async_context(FakeFluxRouter(offline_script()))
            url = router.base_url if wire == "openai" else router.anthropic_url
            client = await stack.enter_async_context(FluxClient(base_url=url, api_key="offline"))
        research = Agent(client=client, name="research", tools=research_tools,
                         instructions="Answer questions about tea with the search tool.")  # fmt: skip
        billing = Agent(client=client, name="billing", tools=billing_tools,
                        instructions="You handle refunds. Refund the order the customer names.")  # fmt: skip
        desk_tools = ToolRegistry()
        desk_tools.register(research.as_tool(description="Ask the research agent a question about tea."))
        desk = Agent(
            client=client,
            name="front_desk",
            tools=desk_tools,
            handoffs=[billing],
            instructions="Answer tea questions with the research tool; hand refunds to billing.",
            limits=RunLimits(max_steps=8),
        )  # max_steps: 8 model requests in all, nested ones included
        result = None
        async with desk.stream("What is oolong? Also, please refund my order A-17.") as events:
            async for event in events:
                indent = "    " if event.parent_call_id else ""
                if isinstance(event, ToolCallStarted):
                    print(f"{indent}{event.run_id[:22]} calls {event.name}")
                elif isinstance(event, ToolCallFinished):
                    print(f"{indent}{event.run_id[:22]} {event.record.name} -> {event.record.status}")
                elif isinstance(event, RunFinished) and event.parent_call_id is None:
                    result = event.result
        assert result is not None
        print(f"{result.agent_name} answered: {result.output}")
        print(f"{result.usage.requests} requests, {result.usage.total_tokens} tokens (nested run included)")
        return result


if __name__ == "__main__":
    anyio.run(main, sys.argv[1] if len(sys.argv) > 1 else "openai")

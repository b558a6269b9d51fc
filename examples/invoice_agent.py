"""Typed output and typed context: an agent that reads an order and answers with an `Invoice`.

- `output_type=Invoice`: `result.output` is a validated `Invoice` (a dataclass), not text. The
  first answer below is deliberately wrong (a string total): agentloop feeds the error back by
  its JSON path and the model corrects it.
- `RunContext[Shop]`: the `price_of` tool gets the run's `deps` (the shop's price list, a live
  object that is never in the tool's schema), the instructions are a function of the same
  context.

Runs offline against the built-in fake FluxRouter (on the OpenAI or the Anthropic wire) unless
FLUX_API_KEY is set, in which case it asks the real FluxRouter.

    python examples/invoice_agent.py               # the OpenAI wire
    python examples/invoice_agent.py anthropic     # the Anthropic wire
"""

from __future__ import annotations

import os
import sys
from contextlib import AsyncExitStack
from dataclasses import dataclass

import anyio

from agentloop import Agent, FluxClient, RunContext, ToolRegistry


@dataclass
class Line:
    item: str
    quantity: int
    unit_price: float


@dataclass
class Invoice:
    customer: str
    lines: list[Line]
    total: float


@dataclass
class Shop:
    name: str
    prices: dict[str, float]  # stands for a database connection


tools = ToolRegistry()


@tools.tool
async def price_of(ctx: RunContext[Shop], item: str) -> float | str:
    """The unit price of an item in the shop.

    Args:
        item: the item's name, e.g. "tea".
    """
    return ctx.deps.prices.get(item, f"{item!r} is not sold at {ctx.deps.name}")


def instructions(ctx: RunContext[Shop]) -> str:
    return f"You write invoices for {ctx.deps.name}. Look up every price; never guess one."


def offline_script() -> list:
    from agentloop.testing import call, tool_calls

    good = {"customer": "Ana", "lines": [{"item": "tea", "quantity": 2, "unit_price": 3.5},
                                         {"item": "scone", "quantity": 1, "unit_price": 2.0}], "total": 9.0}  # fmt: skip
    return [
        tool_calls(call("price_of", {"item": "tea"}), call("price_of", {"item": "scone"})),
        tool_calls(call("final_result", {**good, "total": "nine"})),  # wrong: fed back, then fixed
        tool_calls(call("final_result", good)),
    ]


async def main(wire: str = "openai") -> Invoice:
    shop = Shop("The Tea Room", {"tea": 3.5, "scone": 2.0})
    async with AsyncExitStack() as stack:
        if os.environ.get("FLUX_API_KEY"):
            client = await stack.enter_async_context(FluxClient())
        else:
            from agentloop.testing import FakeFluxRouter

            router = await stack.enter_async_context(FakeFluxRouter(offline_script()))
            url = router.base_url if wire == "openai" else router.anthropic_url
            client = await stack.enter_async_context(FluxClient(base_url=url, api_key="offline"))
        agent = Agent[Shop, Invoice](
            client=client,
            tools=tools,
            instructions=instructions,
            deps_type=Shop,
            output_type=Invoice,
            output_retries=2,
        )
        result = await agent.run("Invoice for Ana: 2 tea and 1 scone.", deps=shop)
        invoice = result.output
        assert invoice is not None
        for r in result.tool_calls:
            print(f"tool {r.name} -> {r.status}")
        print(f"{invoice.customer}: {len(invoice.lines)} lines, total {invoice.total:.2f}")
        print(f"{result.usage.requests} requests, {result.usage.total_tokens} tokens")
        return invoice


if __name__ == "__main__":
    anyio.run(main, sys.argv[1] if len(sys.argv) > 1 else "openai")

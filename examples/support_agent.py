"""A realistic multi-tool agent: an order-support assistant with a knowledge base, an order
database (a blocking call, run in a worker thread), and a refund tool with a validated schema.

Offline it runs against the fake FluxRouter with a scripted model that behaves like a real one:
it looks things up in parallel, makes a mistake in its arguments, reads the validation error
the runtime fed back, corrects itself, and answers. With FLUX_API_KEY set it uses FluxRouter.

    python examples/support_agent.py
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import AsyncExitStack
from typing import Annotated, Literal

import anyio

from agentloop import Agent, FluxClient, Limits, ToolRegistry

tools = ToolRegistry(limits=Limits(timeout=10))

_DOCS = {
    "refunds": "Refunds are possible within 30 days of delivery, to the original payment method.",
    "shipping": "Standard shipping takes 2-4 business days; express ships next day.",
}


def _db() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:")
    db.execute("create table orders (id text primary key, status text, total real, delivered_days_ago int)")
    db.execute(
        "insert into orders values ('A-1001', 'delivered', 59.90, 12), ('A-1002', 'shipped', 18.00, null)"
    )
    return db


@tools.tool
async def search_docs(topic: Literal["refunds", "shipping"]) -> str:
    """Look up the store's policy on a topic."""
    return _DOCS[topic]


@tools.tool
def get_order(order_id: Annotated[str, "Order id like A-1001"]) -> dict:
    """Fetch an order from the order database."""
    row = (
        _db()
        .execute("select id, status, total, delivered_days_ago from orders where id = ?", (order_id,))
        .fetchone()
    )
    if row is None:
        raise LookupError(f"no order {order_id}")
    return dict(zip(("id", "status", "total", "delivered_days_ago"), row, strict=True))


@tools.tool
async def issue_refund(
    order_id: str, amount: float, reason: Literal["damaged", "not_as_described", "changed_mind"]
) -> dict:
    """Refund (part of) an order.

    Args:
        order_id: The order to refund
        amount: Amount in EUR, at most the order total
        reason: Why the customer wants a refund
    """
    return {"refund_id": "R-77", "order_id": order_id, "amount": amount, "status": "issued"}


def scripted_model(request):
    """What a capable model does with this conversation (used offline)."""
    from agentloop.testing import call, text, tool_calls

    messages = request.json["messages"]
    tool_results = [m for m in messages if m["role"] == "tool"]
    if not tool_results:
        return tool_calls(
            call("search_docs", {"topic": "refunds"}), call("get_order", {"order_id": "A-1001"})
        )
    if len(tool_results) == 2:  # a mistake: reason is not one of the allowed values
        return tool_calls(call("issue_refund", {"order_id": "A-1001", "amount": 59.9, "reason": "broken"}))
    if "Invalid arguments" in tool_results[-1]["content"]:
        return tool_calls(call("issue_refund", {"order_id": "A-1001", "amount": 59.9, "reason": "damaged"}))
    return text(
        "Your order A-1001 was delivered 12 days ago, within the 30-day window: "
        "refund R-77 of 59.90 EUR is issued to your original payment method."
    )


async def main() -> str:
    async with AsyncExitStack() as stack:
        if os.environ.get("FLUX_API_KEY"):
            client = await stack.enter_async_context(FluxClient())
        else:
            from agentloop.testing import FakeFluxRouter

            router = await stack.enter_async_context(FakeFluxRouter(scripted_model))
            client = await stack.enter_async_context(FluxClient(base_url=router.base_url, api_key="offline"))
        agent = Agent(
            client=client,
            tools=tools,
            model="flux-pinned-gpt-5",
            instructions="You are a support agent. Check the policy and the order before refunding.",
            max_steps=8,
        )
        result = await agent.run("My order A-1001 arrived damaged. Can I get my money back?")
        for r in result.tool_calls:
            print(f"step {r.step}: {r.name}({r.raw_arguments}) -> {r.status}")
        print(result.output)
        return result.output or ""


if __name__ == "__main__":
    anyio.run(main)

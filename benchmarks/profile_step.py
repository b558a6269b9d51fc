"""Where agentloop's CPU per step goes: R agent runs in this process, profiled, against `_server.py`.

    .venv/bin/python benchmarks/profile_step.py --mode seq  --runs 300     # (a) C=1, not streamed
    .venv/bin/python benchmarks/profile_step.py --mode conc --runs 1000    # (b) C=200
    .venv/bin/python benchmarks/profile_step.py --mode sseq --runs 300     # (d) C=1, streamed
    .venv/bin/python benchmarks/profile_step.py --mode sseq --plain-server # (d) without SSE: the stream's own cost
    add --cprofile FILE.pstats to save cProfile's data; --top N prints the N costliest functions
    py-spy record -o benchmarks/profiles/seq.svg -- .venv/bin/python benchmarks/profile_step.py --mode seq

Each run is the benchmark's scenario: "go"; the model asks for K=4 tools S=3 times; final "done".
The server runs in its own process so that only the client is measured. cProfile's figures are
inflated by its own per-call cost (roughly 2x on this code); read them as shares and call counts
per step, and the un-profiled `cpu_ms_per_step` line as the absolute figure.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import resource
import subprocess
import sys
import time
from pathlib import Path

import anyio

HERE = Path(__file__).parent
MODES = {"seq": (1, False), "conc": (200, False), "sseq": (1, True), "sconc": (200, True)}


def tools(k: int) -> object:
    from agentloop import ToolRegistry

    registry = ToolRegistry()
    for i in range(k):

        async def work(x: int, label: str) -> str:
            return f"{label}:{x}"

        work.__name__ = work.__qualname__ = f"work_{i}"
        work.__doc__ = f"Benchmark tool {i}."
        registry.register(work)
    return registry


async def drive(
    url: str, runs: int, concurrency: int, stream: bool, steps: int, k: int, prof: cProfile.Profile | None
) -> dict[str, float]:
    from agentloop import Agent, FluxClient, RunFinished

    async with FluxClient(base_url=url + "/v1", api_key="x", max_connections=max(concurrency, 10)) as client:
        agent = Agent(client=client, tools=tools(k), model=f"bench-s{steps}-k{k}", max_steps=steps + 1)  # type: ignore[arg-type]

        async def one() -> None:
            if stream:
                last = None
                async with agent.stream("go") as events:
                    async for event in events:
                        last = event
                assert isinstance(last, RunFinished) and last.result.output == "done", last
            else:
                assert (await agent.run("go")).output == "done"

        for _ in range(5):  # warm-up: imports, pool, caches
            await one()
        sem = anyio.Semaphore(concurrency)

        async def gated() -> None:
            async with sem:
                await one()

        ru0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        if prof:
            prof.enable()
        async with anyio.create_task_group() as tg:
            for _ in range(runs):
                tg.start_soon(gated)
        if prof:
            prof.disable()
        wall, ru1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    n = runs * (steps + 1)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    return {
        "steps": n,
        "wall_s": round(wall, 3),
        "steps_per_s": round(n / wall, 1),
        "cpu_ms_per_step": round(cpu * 1000 / n, 4),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--mode", choices=sorted(MODES), default="seq")
    p.add_argument("--runs", type=int, default=300)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--tools", type=int, default=4)
    p.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    p.add_argument("--cprofile", metavar="FILE", help="profile with cProfile and save its data here")
    p.add_argument(
        "--top", type=int, default=0, help="print the N functions with the most own time, per step"
    )
    p.add_argument(
        "--groups", action="store_true", help="print own time per step grouped by library / agentloop module"
    )
    p.add_argument(
        "--cpu-timer",
        action="store_true",
        help="cProfile counts CPU time (process_time), not wall time: on a loaded machine the wall "
        "time of a syscall includes waiting for a core, and then `socket.send` looks like most of a step",
    )
    p.add_argument(
        "--plain-server",
        action="store_true",
        help="the server answers `stream: true` with a plain body (a streamed run, no SSE): sseq minus this "
        "is what the SSE wire costs, this minus seq what the event stream itself costs",
    )
    args = p.parse_args()
    concurrency, stream = MODES[args.mode]
    server = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "_server.py"),
            "--port",
            "0",
            *(["--plain"] if args.plain_server else []),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        url = json.loads(server.stdout.readline())["url"]  # type: ignore[union-attr]
        timer = time.process_time if args.cpu_timer else time.perf_counter
        prof = cProfile.Profile(timer) if args.cprofile or args.top or args.groups else None
        out = anyio.run(
            drive, url, args.runs, concurrency, stream, args.steps, args.tools, prof, backend=args.backend
        )
    finally:
        server.terminate()
        server.wait()
    print(json.dumps({"mode": args.mode, "backend": args.backend, "profiled": prof is not None, **out}))
    if prof is not None:
        if args.cprofile:
            prof.dump_stats(args.cprofile)
        if args.top:
            per_step(pstats.Stats(prof), out["steps"], args.top)
        if args.groups:
            by_group(pstats.Stats(prof), out["steps"])


def per_step(stats: pstats.Stats, steps: int, top: int) -> None:
    """The `top` functions by own time: µs and calls per step, and their share of the profile."""
    rows = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in rows.values())
    ranked = sorted(rows.items(), key=lambda kv: -kv[1][2])[:top]
    print(f"{'own µs/step':>11} {'cum µs/step':>11} {'%':>5} {'calls/step':>10}  function")
    for (file, line, name), (_cc, nc, tt, ct, _callers) in ranked:
        where = f"{Path(file).parent.name}/{Path(file).name}:{line}" if line else file
        print(
            f"{tt * 1e6 / steps:11.1f} {ct * 1e6 / steps:11.1f} {100 * tt / total:5.1f} {nc / steps:10.2f}  {name} ({where})"
        )


def group_of(file: str, name: str) -> str:
    """agentloop/<module>, or the library a function belongs to, or the kind of built-in."""
    if file == "~":  # a built-in: name the object it works on
        if "socket" in name or "epoll" in name or "select" in name:
            return "syscalls (socket send/recv, epoll)"
        if "orjson" in name or "json" in name:
            return "json (orjson/stdlib)"
        return "builtins (isinstance, dict.get, decode...)"
    parts = Path(file).parts
    for lib in (
        "agentloop",
        "aiohttp",
        "httpx",
        "httpcore",
        "anyio",
        "jsonschema",
        "structlog",
        "multidict",
        "yarl",
        "trio",
        "h11",
        "json",
    ):
        if lib in parts:
            i = parts.index(lib)
            return f"agentloop/{'/'.join(parts[i + 1 :])}" if lib == "agentloop" else lib
    if "asyncio" in parts:
        return "asyncio (event loop, tasks)"
    return f"stdlib/other ({Path(file).name})"


def by_group(stats: pstats.Stats, steps: int) -> None:
    rows = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in rows.values())
    groups: dict[str, float] = {}
    for (file, _line, name), (_cc, _nc, tt, _ct, _callers) in rows.items():
        g = group_of(file, name)
        groups[g] = groups.get(g, 0.0) + tt
    print(f"{'own µs/step':>11} {'%':>5}  group   (total {total * 1e6 / steps:.0f} µs/step under cProfile)")
    for g, tt in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"{tt * 1e6 / steps:11.1f} {100 * tt / total:5.1f}  {g}")


if __name__ == "__main__":
    main()

"""Which HTTP transport should FluxClient use by default? Steps/s of agentloop runs per transport.

Runs the scripted agent runs of the peer harness (kept outside this repository, see README.md:
a user prompt; S steps of K parallel tool calls; a final answer) against that harness's fake
server, once per transport variant and concurrency, each measurement in a fresh process pinned to core 1 (server on core 0). Needs the bench venv
(uvloop, httptools for the server) with agentloop installed:

    /tmp/benchvenv/bin/python benchmarks/bench_transport.py --bench-dir PATH/TO/HARNESS
    /tmp/benchvenv/bin/python benchmarks/bench_transport.py --variants default,aiohttp --conc 200

`--wires` compares the two wires instead (issue #19: Anthropic within 10 % of OpenAI): the same
runs over `wire="openai"` and `wire="anthropic"` against agentloop's own `FakeFluxRouter` in a
child process (it speaks both wires; no harness needed), CPU per step of this process only:

    .venv/bin/python benchmarks/bench_transport.py --wires [--rounds 3] [--backend trio]

Variants: `default` (what FluxClient picks: the lean transport), `lean` (named explicitly), `httpcore` (httpx's own pool as FluxClient sizes it),
`httpcore-100` (keep-alive capped at 100, the pre-0.2 setting), `sharded` (httpcore pools, the least
busy first), `aiohttp` (httpx-aiohttp, asyncio only). `--backend trio` measures on trio.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

VARIANTS = ("default", "lean", "httpcore", "httpcore-100", "sharded", "aiohttp")


def _client(variant: str, url: str, concurrency: int):
    import httpx

    from agentloop import FluxClient, RetryPolicy

    kw = {"base_url": url + "/v1", "api_key": "x", "retry": RetryPolicy(max_retries=0)}
    if variant.startswith("wire-"):  # --wires: the URL is the wire's own base URL
        return FluxClient(base_url=url, api_key="x", wire=variant[5:], retry=RetryPolicy(max_retries=0))
    if variant == "default":
        return FluxClient(**kw)
    if variant == "lean":
        return FluxClient(**kw, transport="lean")
    if variant == "httpcore":
        return FluxClient(**kw, transport="httpcore")
    if variant == "httpcore-100":
        limits = httpx.Limits(max_connections=1000, max_keepalive_connections=100)
        return FluxClient(**kw, http_client=httpx.AsyncClient(limits=limits, timeout=60))
    if variant == "sharded":
        return FluxClient(**kw, transport="sharded")
    if variant == "aiohttp":
        return FluxClient(**kw, transport="aiohttp")
    raise SystemExit(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")


async def _measure(variant: str, url: str, runs: int, concurrency: int, steps: int, tools_k: int) -> dict:
    import anyio

    from agentloop import Agent, ToolRegistry

    registry = ToolRegistry()
    for i in range(tools_k):

        async def work(x: int, label: str) -> str:
            """Work."""
            return f"{label}:{x}"

        registry.register(work, name=f"work_{i}")
    client = _client(variant, url, concurrency)
    async with client:
        agent = Agent(client=client, tools=registry, model=f"bench-s{steps}-k{tools_k}", max_steps=steps + 1)
        for _ in range(3):
            assert (await agent.run("go")).output == "done"
        left = runs
        failures: list[str] = []

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                try:
                    result = await agent.run("go")
                    if result.output != "done":
                        failures.append(repr(result.output))
                except Exception as e:
                    failures.append(repr(e))

        cpu0, t0 = time.process_time(), time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(min(concurrency, runs)):
                tg.start_soon(worker)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    n = runs * (steps + 1)
    return {"variant": variant, "C": concurrency, "R": runs, "wall_s": round(wall, 3), "steps_per_s": round(n / wall),
            "cpu_ms_per_step": round(cpu * 1000 / n, 3), "failures": len(failures), "first_failure": failures[:1]}  # fmt: skip


def _one(args: argparse.Namespace) -> None:
    import anyio

    backend_options = {}
    if args.backend == "asyncio" and args.loop == "uvloop":
        backend_options = {"use_uvloop": True}
    result = anyio.run(
        _measure, args.variant, args.url, args.runs, args.concurrency, args.steps, args.tools,
        backend=args.backend, backend_options=backend_options,
    )  # fmt: skip
    result["backend"] = args.backend
    print(json.dumps(result))


def serve_wires(shape: Any) -> None:
    """A FakeFluxRouter scripted like the harness's server: K calls while the conversation has
    fewer than S assistant turns, then "done", where `shape(request body) -> (S, K)`. Prints its
    URLs; serves until stdin closes. (`bench_first_request.py` serves with it too.)"""
    import anyio
    import anyio.to_thread

    from agentloop.testing import FakeFluxRouter, call, text, tool_calls

    def handler(request: Any) -> Any:
        steps, tools_k = shape(request.json)
        turns = sum(1 for m in request.json["messages"] if m.get("role") == "assistant")
        if turns >= steps:
            return text("done")
        return tool_calls(*(call(f"work_{i}", {"x": i, "label": "abc"}) for i in range(tools_k)))

    async def main() -> None:
        async with FakeFluxRouter(handler) as router:
            print(json.dumps({"openai": router.base_url, "anthropic": router.anthropic_url}), flush=True)
            await anyio.to_thread.run_sync(sys.stdin.read)

    anyio.run(main)


def _wires(args: argparse.Namespace) -> None:
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve-wires"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        urls = json.loads(server.stdout.readline())  # type: ignore[union-attr]
        cpu: dict[str, list[float]] = {"openai": [], "anthropic": []}
        for _round in range(args.rounds):
            for wire in cpu:
                cmd = [sys.executable, __file__, "--one", "--variant", f"wire-{wire}", "--url", urls[wire],
                       "--runs", str(args.runs), "--concurrency", "1", "--backend", args.backend]  # fmt: skip
                row = json.loads(
                    subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()[-1]
                )
                print(json.dumps(row), file=sys.stderr)
                cpu[wire].append(row["cpu_ms_per_step"])
        med = {w: sorted(v)[len(v) // 2] for w, v in cpu.items()}
        print(f"\n| wire ({args.backend}, C=1) | CPU ms/step, each round | median |\n|---|---|---:|")
        for w, v in cpu.items():
            print(f"| {w} | {' / '.join(map(str, v))} | {med[w]} |")
        print(f"\nanthropic / openai: {med['anthropic'] / med['openai']:.2f}x")
    finally:
        server.stdin.close()  # type: ignore[union-attr]
        server.wait()


def _matrix(args: argparse.Namespace) -> None:
    bench = Path(args.bench_dir).resolve()
    pin = shutil.which("taskset") and (os.cpu_count() or 1) > 1
    server_cmd = [sys.executable, str(bench / "fake_server.py"), "--port", "0"]
    server = subprocess.Popen(
        ["taskset", "-c", "0", *server_cmd] if pin else server_cmd, stdout=subprocess.PIPE, text=True
    )
    try:
        url = json.loads(server.stdout.readline())["url"]  # type: ignore[union-attr]
        rows = []
        for _round in range(args.rounds):
            for conc, runs in ((1, 200), (args.conc, args.conc_runs)):
                for variant in args.variants.split(","):
                    cmd = [sys.executable, __file__, "--one", "--variant", variant, "--url", url, "--runs", str(runs),
                           "--concurrency", str(conc), "--backend", args.backend, "--steps", "3", "--tools", "4"]  # fmt: skip
                    proc = subprocess.run(
                        ["taskset", "-c", "1", *cmd] if pin else cmd, capture_output=True, text=True
                    )
                    if proc.returncode != 0:
                        print(f"{variant} C={conc}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
                        continue
                    row = json.loads(proc.stdout.strip().splitlines()[-1])
                    print(json.dumps(row), file=sys.stderr)
                    rows.append(row)
        print(
            f"\n| variant ({args.backend}) | C | steps/s | CPU ms/step | failures |\n|---|---:|---:|---:|---:|"
        )
        for r in rows:
            print(
                f"| {r['variant']} | {r['C']} | {r['steps_per_s']:,} | {r['cpu_ms_per_step']} | {r['failures']} |"
            )
    finally:
        server.terminate()
        server.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--bench-dir",
        help="the peer harness's folder (its fake_server.py and drivers/); required but for --one",
    )
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--backend", default="asyncio", choices=("asyncio", "trio"))
    p.add_argument("--loop", default="asyncio", choices=("asyncio", "uvloop"))
    p.add_argument("--conc", type=int, default=200)
    p.add_argument("--conc-runs", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--wires", action="store_true", help="compare the OpenAI and Anthropic wires (see above)")
    p.add_argument("--serve-wires", action="store_true", help=argparse.SUPPRESS)
    # one measurement (internal)
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--variant", default="default")
    p.add_argument("--url", default="")
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--tools", type=int, default=4)
    args = p.parse_args()
    if args.serve_wires:
        return serve_wires(lambda _body: (args.steps, args.tools))
    if args.wires:
        return _wires(args)
    if not args.one and not args.bench_dir:
        p.error("--bench-dir is required")  # (the measurement children are started without it)
    _one(args) if args.one else _matrix(args)


if __name__ == "__main__":
    main()

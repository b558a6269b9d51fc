"""Is the first model request of a process as fast as the later ones? On asyncio and trio.

Each trial is a fresh interpreter (import caches are per process, which is the point): it
imports agentloop, enters a `FluxClient` (timed: that is where the transport is built), then
times one-step model requests and one agent run with a tool call (schema validation included)
against the stdlib fake server in `_server.py` (started once, in its own process):

- `enter`: `async with FluxClient(...)`: builds the transport (and imports its library); in
  the `warmup` mode also `await client.warmup()` (one connection opened ahead);
- `first request` / `steady request`: `client.request(...)`, the first one vs the median of
  the next 20 (wall); `first CPU` / `steady CPU`: the same, the client thread's CPU time (what
  a busy machine does not blur: the wall time also waits for a core and for the server);
- `first run` / `steady run`: `Agent.run` of 2 model requests and 1 tool call, the first one
  vs the median of the next 20.

    .venv/bin/python benchmarks/bench_first_request.py            # 5 trials per backend
    .venv/bin/python benchmarks/bench_first_request.py --trials 9 --backends asyncio
    .venv/bin/python benchmarks/bench_first_request.py --transports auto,httpcore --modes cold

Medians over trials are printed as a table (milliseconds). On a loaded machine the figures
are noisy; compare first against steady from the same run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
_CHILD = r"""
import json, statistics, sys, time
t0 = time.perf_counter()
import anyio
from agentloop import Agent, FluxClient, ToolRegistry
from agentloop._model import ModelRequest
imported = time.perf_counter() - t0

def work_0(x: int, label: str) -> str:
    return f"{label}{x}"

async def main(url):
    tools = ToolRegistry()
    tools.register(work_0)
    out = {"import": imported}
    t = time.perf_counter()
    async with FluxClient(base_url=url + "/v1", api_key="bench-key", transport=sys.argv[3]) as client:
        if sys.argv[4] == "warmup":
            await client.warmup()
        out["enter"] = time.perf_counter() - t
        req = ModelRequest(model="bench-s0-k0", messages=[{"role": "user", "content": "hi"}], tools=[], settings={})
        times, cpu = [], []
        for _ in range(21):
            t, c = time.perf_counter(), time.thread_time()
            await client.request(req)
            times.append(time.perf_counter() - t)
            cpu.append(time.thread_time() - c)
        out["first request"], out["steady request"] = times[0], statistics.median(times[1:])
        out["first CPU"], out["steady CPU"] = cpu[0], statistics.median(cpu[1:])
        agent = Agent(client=client, tools=tools, model="bench-s1-k1")
        times = []
        for _ in range(21):
            t = time.perf_counter()
            await agent.run("go")
            times.append(time.perf_counter() - t)
        out["first run"], out["steady run"] = times[0], statistics.median(times[1:])
    print(json.dumps(out))

anyio.run(main, sys.argv[1], backend=sys.argv[2])
"""
COLUMNS = (
    "import",
    "enter",
    "first request",
    "steady request",
    "first CPU",
    "steady CPU",
    "first run",
    "steady run",
)


def _trial(url: str, backend: str, transport: str, mode: str) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, url, backend, transport, mode],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise SystemExit(f"trial failed on {backend}:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--trials", type=int, default=5)
    p.add_argument("--backends", default="asyncio,trio")
    p.add_argument("--transports", default="auto", help="comma-separated FluxClient(transport=...)")
    p.add_argument("--modes", default="cold,warmup", help="cold, warmup (client.warmup() in enter)")
    args = p.parse_args()
    server = subprocess.Popen(
        [sys.executable, str(HERE / "_server.py"), "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    try:
        url = json.loads(server.stdout.readline())["url"]  # type: ignore[union-attr]
        print("| backend | transport | mode | " + " | ".join(COLUMNS) + " | first / steady: wall / CPU |")
        print("|---|---|---|" + "---:|" * (len(COLUMNS) + 1))
        rows = [
            (b, tr, m)
            for b in args.backends.split(",")
            for tr in args.transports.split(",")
            for m in args.modes.split(",")
        ]
        results: dict[tuple[str, str, str], list[dict[str, float]]] = {row: [] for row in rows}
        for _ in range(args.trials):  # interleaved, so the machine's load hits every row alike
            for row in rows:
                results[row].append(_trial(url, *row))
        for row, trials in results.items():
            med = {c: statistics.median(t[c] for t in trials) for c in COLUMNS}
            cells = [f"{med[c] * 1000:.2f}" for c in COLUMNS]
            ratio = med["first request"] / med["steady request"]
            cpu = med["first CPU"] / med["steady CPU"]
            print(
                f"| {' | '.join(row)} | " + " | ".join(cells) + f" | {ratio:.1f}x / {cpu:.1f}x |", flush=True
            )
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    t = time.perf_counter()
    main()
    print(f"\n(ms, medians of trials; {time.perf_counter() - t:.0f} s)")

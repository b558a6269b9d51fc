"""Is the first model request of a process as fast as the later ones? On asyncio and trio.

Each trial is a fresh interpreter (import caches are per process, which is the point): it
imports agentloop, enters a `FluxClient` (timed: that is where the transport is built), then
times one-step model requests and one agent run with a tool call (schema validation included)
against the stdlib fake server in `_server.py` (started once, in its own process):

- `enter`: `async with FluxClient(...)`: builds the transport (and imports its library); in
  the `warmup` mode also `await client.warmup()` (one connection opened ahead, and the request
  path rehearsed on canned bytes: `agentloop/_http/rehearsal.py`);
- `first request` / `steady request`: `client.request(...)`, the first one vs the median of
  the 21st to the 41st (wall); `first CPU` / `steady CPU`: the same, the client thread's CPU
  time (what a busy machine does not blur: the wall time also waits for a core and for the
  server); `2nd-9th CPU`: the median of the 2nd to the 9th, the requests CPython runs before it
  has quickened their code (a steady state taken from the 2nd on counted them and read low);
- `first run` / `steady run`: `Agent.run` of 2 model requests and 1 tool call, the first one
  vs the median of the next 20.

    .venv/bin/python benchmarks/bench_first_request.py            # 5 trials per backend
    .venv/bin/python benchmarks/bench_first_request.py --trials 9 --backends asyncio
    .venv/bin/python benchmarks/bench_first_request.py --transports auto,httpcore --modes cold
    .venv/bin/python benchmarks/bench_first_request.py --paths /tmp/base,.   # checkouts side by side

Medians over trials are printed as a table (milliseconds); the last column is also the median
of each process's own first / steady CPU ratio (robust to a trial that ran at another load).
`--paths`: each checkout goes first on the children's `PYTHONPATH`, its rows interleaved with the
others trial by trial. On a loaded machine the figures are noisy; compare first against steady
from the same run.
"""

from __future__ import annotations

import argparse
import json
import os
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
        for _ in range(41):
            t, c = time.perf_counter(), time.thread_time()
            await client.request(req)
            times.append(time.perf_counter() - t)
            cpu.append(time.thread_time() - c)
        # Steady: the last 20 (CPython 3.11 quickens a function at its 8th call: the 2nd to the
        # ~10th request of a cold process are still slower, and counting them lowered "steady").
        out["first request"], out["steady request"] = times[0], statistics.median(times[21:])
        out["first CPU"], out["steady CPU"] = cpu[0], statistics.median(cpu[21:])
        out["2nd-9th CPU"] = statistics.median(cpu[1:9])
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
    "2nd-9th CPU",
    "steady CPU",
    "first run",
    "steady run",
)


def _trial(url: str, path: str, backend: str, transport: str, mode: str) -> dict[str, float]:
    env = dict(os.environ)
    if path:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.path.abspath(path), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, url, backend, transport, mode],
        capture_output=True,
        text=True,
        check=False,
        env=env,
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
    p.add_argument("--paths", default="", help="comma-separated checkouts to compare (PYTHONPATH)")
    args = p.parse_args()
    server = subprocess.Popen(
        [sys.executable, str(HERE / "_server.py"), "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    try:
        url = json.loads(server.stdout.readline())["url"]  # type: ignore[union-attr]
        print(
            "| checkout | backend | transport | mode | "
            + " | ".join(COLUMNS)
            + " | first / steady: wall / CPU (per process) |"
        )
        print("|---|---|---|---|" + "---:|" * (len(COLUMNS) + 1))
        rows = [
            (path, b, tr, m)
            for path in args.paths.split(",")
            for b in args.backends.split(",")
            for tr in args.transports.split(",")
            for m in args.modes.split(",")
        ]
        results: dict[tuple[str, str, str, str], list[dict[str, float]]] = {row: [] for row in rows}
        for _ in range(args.trials):  # interleaved, so the machine's load hits every row alike
            for row in rows:
                results[row].append(_trial(url, *row))
        for row, trials in results.items():
            med = {c: statistics.median(t[c] for t in trials) for c in COLUMNS}
            cells = [f"{med[c] * 1000:.2f}" for c in COLUMNS]
            ratio = med["first request"] / med["steady request"]
            cpu = med["first CPU"] / med["steady CPU"]
            own = statistics.median(t["first CPU"] / t["steady CPU"] for t in trials)
            label = " | ".join((row[0] or "installed", *row[1:]))
            print(
                f"| {label} | " + " | ".join(cells) + f" | {ratio:.1f}x / {cpu:.1f}x ({own:.1f}x) |",
                flush=True,
            )
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    t = time.perf_counter()
    main()
    print(f"\n(ms, medians of trials; {time.perf_counter() - t:.0f} s)")

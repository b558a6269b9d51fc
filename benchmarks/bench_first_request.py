"""Is the first model request of a process as fast as the later ones? On asyncio and trio.

What it measures (issue #19: "first request of a process within 2x of the steady state"): each
trial is a fresh interpreter (import caches, CPython's quickened code and the process's heap
are per process, which is the point). It imports agentloop, enters a `FluxClient` (timed: that
is where the transport is built) and, in the `warmup` mode, `await client.warmup()` (in the
`agent` mode also `await agent.warmup()`, which rehearses the run path); then it
sends 41 one-step model requests, one after the other, to a `FakeFluxRouter` in its own process
(started once; it speaks both wires and streams), and one agent run with a tool call 21 times.

- `first CPU` / `steady CPU`: the client thread's CPU time (`time.thread_time`: what a busy
  machine does not blur; the wall time also waits for a core and for the server) of the first
  request against the median of the 21st-41st; `2nd-9th CPU`: the median of the 2nd to the 9th
  (CPython quickens a function at its 8th call). The request is built before `warmup()`, so
  nothing of the bench's runs between the two.
- `first / steady (per process)`: the median over trials of each process's own ratio (robust to
  a trial that ran at another load); the target's figure. The wall ratio is printed too.
- `--gap MS`: sleep MS before *every* request, the first included. Back to back (the default),
  "steady" is a request whose code and data the previous request left in the CPU's caches; a
  request after an idle gap (a server waiting for its next user) finds them evicted by the other
  processes and costs several times more CPU (measured: ~4x after 20 ms at load ~8), first or
  not. With a gap, first and steady meet the same caches and the ratio is the process's own
  first-time cost; without, it also counts what only back-to-back requests enjoy.
- `first run` / `steady run` (wall, then the thread's CPU): `Agent.run` (`Agent.stream` with
  `--streams stream`) of 2 model requests and 1 tool call, the first one vs the median of the
  next 20; the last column is the per-process CPU ratio of the runs.

    .venv/bin/python benchmarks/bench_first_request.py                      # 15 trials, both backends
    .venv/bin/python benchmarks/bench_first_request.py --wires openai,anthropic --streams plain,stream
    .venv/bin/python benchmarks/bench_first_request.py --transports auto,httpcore --modes cold,warmup
    .venv/bin/python benchmarks/bench_first_request.py --paths /tmp/base,.   # checkouts side by side
    .venv/bin/python benchmarks/bench_first_request.py --gap 20
    .venv/bin/python benchmarks/bench_first_request.py --servers fake,stdlib   # a slower / faster server

Rows are interleaved trial by trial (the machine's load hits every row alike). On a loaded
machine a 15-trial median of the per-process ratio moves by ~0.5x from one run to the next:
compare rows of the same run, and repeat.
"""

from __future__ import annotations

import argparse
import itertools
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
url, backend, transport, mode, wire, stream, gap = sys.argv[1:8]
gap = float(gap) / 1000

def work_0(x: int, label: str) -> str:
    return f"{label}{x}"

async def emit(event):
    pass

async def streamed(agent):
    async with agent.stream("go") as events:
        async for _ in events:
            pass

async def main():
    tools = ToolRegistry()
    tools.register(work_0)
    out = {"import": imported}
    req = ModelRequest(model="bench-s0-k0", messages=[{"role": "user", "content": "hi"}], tools=[], settings={})
    sink = emit if stream == "stream" else None
    t, c = time.perf_counter(), time.thread_time()
    async with FluxClient(base_url=url, api_key="bench-key", transport=transport, wire=wire) as client:
        agent = Agent(client=client, tools=tools, model="bench-s1-k1")
        if mode in ("warmup", "agent"):
            await client.warmup()
        if mode == "agent":
            await agent.warmup()
        out["enter"], out["enter CPU"] = time.perf_counter() - t, time.thread_time() - c
        times, cpu = [], []
        for _ in range(41):
            if gap:
                await anyio.sleep(gap)
            t, c = time.perf_counter(), time.thread_time()
            await client.request(req, sink)
            times.append(time.perf_counter() - t)
            cpu.append(time.thread_time() - c)
        out["first request"], out["steady request"] = times[0], statistics.median(times[21:])
        out["first CPU"], out["steady CPU"] = cpu[0], statistics.median(cpu[21:])
        out["2nd-9th CPU"] = statistics.median(cpu[1:9])
        times, cpu = [], []
        for _ in range(21):
            t, c = time.perf_counter(), time.thread_time()
            await (streamed(agent) if stream == "stream" else agent.run("go"))
            times.append(time.perf_counter() - t)
            cpu.append(time.thread_time() - c)
        out["first run"], out["steady run"] = times[0], statistics.median(times[1:])
        out["first run CPU"], out["steady run CPU"] = cpu[0], statistics.median(cpu[1:])
    print(json.dumps(out))

anyio.run(main, backend=backend)
"""
COLUMNS = (
    "import",
    "enter",
    "enter CPU",
    "first request",
    "steady request",
    "first CPU",
    "2nd-9th CPU",
    "steady CPU",
    "first run",
    "steady run",
    "first run CPU",
    "steady run CPU",
)


def _serve() -> None:
    """A FakeFluxRouter scripted like `_server.py`: for a model `bench-s<S>-k<K>`, K calls of
    `work_<i>` while the conversation has fewer than S assistant turns, then "done". Prints its
    URLs; serves until stdin closes."""
    from bench_transport import serve_wires  # this script's folder is first on sys.path

    serve_wires(lambda body: tuple(int(part[1:]) for part in body["model"].split("-")[1:3]))


def _trial(urls: dict[str, str], row: tuple[str, ...], gap: float) -> dict[str, float]:
    server, path, backend, transport, mode, wire, stream = row
    env = dict(os.environ)
    if path:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.path.abspath(path), env.get("PYTHONPATH")]))
    args = [urls[f"{server}:{wire}"], backend, transport, mode, wire, stream, str(gap)]
    # -P: without it `python -c` puts the working directory first on sys.path, so every
    # `--paths` row imported the checkout the bench was started from, not its own.
    done = subprocess.run(
        [sys.executable, "-P", "-c", _CHILD, *args], capture_output=True, text=True, check=False, env=env
    )
    if done.returncode:
        raise SystemExit(f"trial failed on {row}:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _print(row: tuple[str, ...], trials: list[dict[str, float]]) -> None:
    med = {c: statistics.median(t[c] for t in trials) for c in COLUMNS}
    cells = [f"{med[c] * 1000:.2f}" for c in COLUMNS]
    wall = statistics.median(t["first request"] / t["steady request"] for t in trials)
    own = [t["first CPU"] / t["steady CPU"] for t in trials]
    q = statistics.quantiles(own, n=4) if len(own) > 1 else [own[0]] * 3
    run = statistics.median(t["first run CPU"] / t["steady run CPU"] for t in trials)
    label = " | ".join((row[0], row[1] or "installed", *row[2:]))
    print(
        f"| {label} | "
        + " | ".join(cells)
        + f" | {wall:.1f}x | **{q[1]:.2f}x** ({q[0]:.2f}-{q[2]:.2f}) | {run:.2f}x |",
        flush=True,
    )


def _start(names: list[str]) -> tuple[list[subprocess.Popen[str]], dict[str, str]]:
    """The servers, and their URL per "server:wire": `fake` (a FakeFluxRouter, both wires) and
    `stdlib` (`_server.py`: OpenAI only, hand-parsed, answers in ~0.1 ms: the client idles less
    between its send and the answer, which makes a back-to-back request cheaper)."""
    servers, urls = [], {}
    if "fake" in names:
        fake = subprocess.Popen(
            [sys.executable, __file__, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        servers.append(fake)
        urls.update({f"fake:{w}": u for w, u in json.loads(fake.stdout.readline()).items()})  # type: ignore[union-attr]
    if "stdlib" in names:
        stdlib = subprocess.Popen(
            [sys.executable, str(HERE / "_server.py"), "--port", "0"], stdout=subprocess.PIPE, text=True
        )
        servers.append(stdlib)
        urls["stdlib:openai"] = json.loads(stdlib.stdout.readline())["url"] + "/v1"  # type: ignore[union-attr]
    return servers, urls


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--trials", type=int, default=15)
    p.add_argument("--backends", default="asyncio,trio")
    p.add_argument("--transports", default="auto", help="comma-separated FluxClient(transport=...)")
    p.add_argument(
        "--modes",
        default="warmup",
        help="cold, warmup (client.warmup() after entering), agent (and agent.warmup())",
    )
    p.add_argument("--wires", default="openai", help="openai, anthropic")
    p.add_argument("--streams", default="plain", help="plain, stream (client.request with an emit)")
    p.add_argument("--paths", default="", help="comma-separated checkouts to compare (PYTHONPATH)")
    p.add_argument("--gap", type=float, default=0.0, help="ms of idle before every request")
    p.add_argument(
        "--servers", default="fake", help="fake (FakeFluxRouter), stdlib (_server.py, OpenAI only)"
    )
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        return _serve()
    servers, urls = _start(args.servers.split(","))
    try:
        print(
            "| server | checkout | backend | transport | mode | wire | stream | "
            + " | ".join(COLUMNS)
            + " | first / steady wall | **first / steady CPU** (quartiles), per process | run: first / steady CPU |"
        )
        print("|---|---|---|---|---|---|---|" + "---:|" * (len(COLUMNS) + 3))
        opts = (
            args.servers,
            args.paths,
            args.backends,
            args.transports,
            args.modes,
            args.wires,
            args.streams,
        )
        rows = [r for r in itertools.product(*(o.split(",") for o in opts)) if f"{r[0]}:{r[5]}" in urls]
        results: dict[tuple[str, ...], list[dict[str, float]]] = {row: [] for row in rows}
        for _ in range(args.trials):  # interleaved, so the machine's load hits every row alike
            for row in rows:
                results[row].append(_trial(urls, row, args.gap))
        for row, trials in results.items():
            _print(row, trials)
    finally:
        for server in servers:
            if server.stdin is not None:
                server.stdin.close()
            server.terminate()
            server.wait()
    with open("/proc/loadavg") as f:
        print(f"\nload average: {f.read().split()[:3]}")


if __name__ == "__main__":
    t = time.perf_counter()
    main()
    print(f"(ms, medians of trials; {time.perf_counter() - t:.0f} s)")

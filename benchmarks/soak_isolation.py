"""Cross-run isolation, the long version of tests/test_isolation_runs.py.

One process, one shared FluxClient per transport and backend, round after round of many runs at
once against the hostile server of tests/test_isolation_server.py (a raw-socket server in a thread
of its own): each round is a random mix (seeded) of healthy runs and hostile ones (stalls,
slowloris bodies, garbage, huge bodies, resets, wrong lengths, endless chunked and SSE streams,
hostile tool calls), plain and streamed. After every round it checks:

- every healthy run finished with its own right answer; every hostile run ended with a typed
  AgentloopError (or its bad call was fed back and it finished), no API key in any error;
- healthy runs right after it, on the same client, all work (no poisoned connection);
- the client's event loop has the tasks it had, and no thread but the worker caches' is new;

and it samples RSS after every round: the growth from the end of the second round (the first two
set the peak the allocator keeps) to the last must stay under `--rss-mb`. RSS includes the server
thread's memory (it is the same process). `--trace` records what tracemalloc sees after each round
and bounds that instead. Measured: the traced memory is flat (6.4 MB +- 0.1 over 40 rounds of 48
runs, lean/asyncio); RSS creeps a few MB over 25 rounds with glibc's default (dynamic) mmap
threshold, the 4 MB hostile bodies landing in the heap, and is flat from round 2 with
MALLOC_MMAP_THRESHOLD_=131072: the allocator's, not a leak.

    .venv/bin/python benchmarks/soak_isolation.py                          # 30 rounds of 40 runs, every transport
    .venv/bin/python benchmarks/soak_isolation.py --rounds 200 --runs 100 --transports lean --json

Known bugs are left out of the mix (each has a strict xfail in tests/test_isolation_runs.py):
`short_length` on the httpx transports, `many_calls` streamed. `--with-known-bugs` puts them back.
Figures measured on a busy shared machine are noisy: the wall time says little.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import sys
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from test_isolation_server import (
    HTTP_KINDS,
    MODEL_KINDS,
    ON_BACKENDS,
    STREAM_KINDS,
    client_for,
    make_agent,
    play_round,
    problems,
    serving,
    task_count,
)

KNOWN_BUGS = {"httpcore": {"short_length"}, "sharded": {"short_length"}}
GUARD = 300  # seconds a round may take before it counts as hung


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def own_threads() -> set[threading.Thread]:
    return {
        t
        for t in threading.enumerate()
        if not type(t).__module__.startswith("anyio.") and not t.name.startswith("Trio thread")
    }


def plan_for(rng: random.Random, transport: str, runs: int, known_bugs: bool) -> list[tuple[str, str]]:
    kinds = [
        k
        for k in HTTP_KINDS + STREAM_KINDS + MODEL_KINDS
        if known_bugs or k not in KNOWN_BUGS.get(transport, ())
    ]
    plan = []
    for _ in range(runs):
        kind = "healthy" if rng.random() < 0.4 else rng.choice(kinds)
        mode = rng.choice(["run", "stream"])
        if (kind, mode) == ("many_calls", "stream") and not known_bugs:
            mode = "run"
        plan.append((kind, mode))
    return plan


async def soak_one(url: str, transport: str, args: argparse.Namespace, rng: random.Random) -> dict[str, Any]:
    found: list[str] = []
    rss: list[float] = []
    traced: list[float] = []  # MB the Python allocator holds (--trace), this thread's and the server's
    hostile = healthy = 0
    async with client_for(url, transport, max_connections=args.max_connections) as client:
        agent = make_agent(client)
        found += problems(await play_round(agent, [("healthy", "run")]))
        tasks, threads = task_count(), own_threads()
        for n in range(args.rounds):
            plan = plan_for(rng, transport, args.runs, args.with_known_bugs)
            with anyio.fail_after(GUARD):
                outcomes = await play_round(agent, plan)
                found += [f"round {n}: {p}" for p in problems(outcomes)]
                after = await play_round(agent, [("healthy", m) for m in ("run", "stream") for _ in range(4)])
                found += [f"round {n}, after: {p}" for p in problems(after)]
            healthy += sum(k == "healthy" for k, _ in plan) + len(after)
            hostile += sum(k != "healthy" for k, _ in plan)
            if task_count() != tasks:
                found.append(f"round {n}: {task_count() - tasks} task(s) left behind")
            if own_threads() != threads:
                found.append(f"round {n}: threads {sorted(t.name for t in own_threads() ^ threads)}")
            gc.collect()
            rss.append(round(rss_mb(), 1))
            if tracemalloc.is_tracing():
                traced.append(round(tracemalloc.get_traced_memory()[0] / 1e6, 2))
    # from the second round on: the first two set the peak the allocator keeps. Not under --trace:
    # tracemalloc's own bookkeeping grows RSS then (the traced figure is checked instead).
    growth = rss[-1] - rss[min(1, len(rss) - 1)] if rss else 0.0
    if growth > args.rss_mb and not tracemalloc.is_tracing():
        found.append(f"RSS grew {growth:.1f} MB after the second round (bound {args.rss_mb} MB)")
    if len(traced) > 1 and traced[-1] - traced[0] > args.rss_mb:
        found.append(f"traced memory grew {traced[-1] - traced[0]:.1f} MB after the first round")
    return {
        "healthy_runs": healthy,
        "hostile_runs": hostile,
        "rss_mb": rss,
        "traced_mb": traced,
        "problems": found,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--runs", type=int, default=40, help="runs at once per round")
    parser.add_argument("--transports", default=",".join(sorted({t for t, _ in ON_BACKENDS})))
    parser.add_argument("--backends", default="asyncio,trio")
    parser.add_argument("--max-connections", type=int, default=1000)
    parser.add_argument("--rss-mb", type=float, default=20.0, help="bound on RSS growth after round 1")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--with-known-bugs", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--trace", action="store_true", help="tracemalloc: Python memory after each round")
    args = parser.parse_args()
    report: dict[str, Any] = {}
    if args.trace:
        tracemalloc.start()
    with serving() as server:
        for transport, backend in ON_BACKENDS:
            if transport not in args.transports.split(",") or backend not in args.backends.split(","):
                continue
            rng = random.Random(f"{args.seed}-{transport}-{backend}")
            start = time.perf_counter()
            result = anyio.run(soak_one, server.url, transport, args, rng, backend=backend)
            result["wall_s"] = round(time.perf_counter() - start, 1)
            report[f"{transport}/{backend}"] = result
            if not args.json:
                rss = result["rss_mb"]
                print(
                    f"{transport:9} {backend:8} {result['healthy_runs']:6} healthy {result['hostile_runs']:6} hostile "
                    f"{result['wall_s']:7.1f} s  RSS {rss[0]:.1f} -> {rss[-1]:.1f} MB  problems: {len(result['problems'])}"
                )
                print(f"    RSS MB by round: {rss}")
                if result["traced_mb"]:
                    print(f"    traced MB by round: {result['traced_mb']}")
                for p in result["problems"][:20]:
                    print("   ", p)
    if args.json:
        print(json.dumps(report, indent=1))
    return 1 if any(r["problems"] for r in report.values()) else 0


if __name__ == "__main__":
    sys.exit(main())

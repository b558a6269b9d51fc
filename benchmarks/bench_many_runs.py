"""Many concurrent runs waiting on a slow model: memory per run and the event loop's lag.

Issue #19's target: 100,000 runs waiting on a slow model in one process, <= 25 KB per run, and
the event loop still answering within 10 ms.

The model is in-process (`HeldModel`, the public `agentloop.Model` interface), so what is
measured is the runtime's own state per run, not sockets: its first answer asks for one tool
call (answered at once), so every run has done a full step (conversation of 4 messages, one
tool record) when it reaches its second model request, which waits on one shared event until
all N runs wait there. Then:

- *KB per run*: (RSS with all N waiting - RSS after one warm-up run) / N;
- *loop lag*: a ticker task sleeps 1 ms again and again and records how late it wakes; the
  worst and the 99th percentile while all N wait (`--hold-s` seconds), and the worst while they
  are being started (in batches of `--batch`, with a checkpoint between batches);
- *GC pauses*: every collection of Python's cyclic garbage collector stops the loop; `gc.callbacks`
  time each one. Reported: the longest while the runs were started (the heap grows, so the full
  collections come more and more rarely but each walks every live object), and one full
  `gc.collect()` with all N waiting: the pause a full collection costs at that size, which a
  long-lived process with runs finishing and starting meets again whenever the objects created
  since the last one reach a quarter of the old ones;
- the event is set, every run must end with "done": the drain time and the result are checked.

`--model http` measures the same through a real `FluxClient` against `_server.py` (in its own
process) answering after `--latency-s`: every run waits on its first model request, over a pool
of `--max-connections` (FluxClient's default 1000; the rest of the runs queue for a connection:
one process cannot hold 100,000 sockets to one server port: ~28,000 ephemeral ports, and the
fd limit). The runs are then cancelled (timed) instead of released.

`--model none` is the floor: the caller's N tasks started the same way, waiting on the same
event, with no agent run at all (what keeping N anyio tasks alive costs anyway).

`--trace` adds where the memory is (slower; use 10,000): tracemalloc's allocations still alive
while all wait, per source line (top `--top`), per file, and the objects per run by type
(`gc.get_objects()` before and while waiting).

    .venv/bin/python benchmarks/bench_many_runs.py --runs 10000 100000
    .venv/bin/python benchmarks/bench_many_runs.py --runs 10000 --trace
    .venv/bin/python benchmarks/bench_many_runs.py --runs 100000 --backend trio

Each N is measured in a fresh process (RSS does not shrink back between measurements).
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
import tracemalloc
import types
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel

from agentloop import Agent, ModelRequest, ModelTurn, RunLimits, ToolRegistry, Usage


class HeldModel:
    """Step 0: one tool call. Step 1: wait for `release`, then the final answer "done"."""

    def __init__(self) -> None:
        self.release = anyio.Event()
        self.waiting = 0
        self.all_waiting = anyio.Event()
        self.expected = 0

    async def request(self, request: ModelRequest, emit: Any = None) -> ModelTurn:
        usage = Usage(requests=1, prompt_tokens=10, completion_tokens=5, total_tokens=15)
        if request.messages[-1]["role"] == "user":
            call = {"id": "call_1", "type": "function", "function": {"name": "work", "arguments": '{"x": 1}'}}
            message = {"role": "assistant", "content": None, "tool_calls": [call]}
            return ModelTurn(message, usage, "tool_calls", model="held")
        self.waiting += 1
        if self.waiting == self.expected:
            self.all_waiting.set()
        await self.release.wait()
        return ModelTurn({"role": "assistant", "content": "done"}, usage, "stop", model="held")


async def work(x: int) -> int:
    """A tool answered at once."""
    return x + 1


class CountingClient:
    """A FluxClient that counts the requests started (to know when all N runs wait)."""

    def __init__(self, client: Any) -> None:
        self.client, self.started = client, 0

    async def request(self, request: ModelRequest, emit: Any = None) -> ModelTurn:
        self.started += 1
        turn: ModelTurn = await self.client.request(request, emit)
        return turn


class ChurnModel:
    """`--churn`: step 0 one tool call; step 1 answers after `latency` seconds (the first `n`
    answers after a uniform 0..latency, so the runs end at an even rate from the start). Each
    of the N workers runs one run after another: ~N / latency runs end and start per second
    while N stay alive, what a long-running worker process does."""

    def __init__(self, latency: float, n: int) -> None:
        self.latency, self.staggered = latency, n
        self.rng = random.Random(19)

    async def request(self, request: ModelRequest, emit: Any = None) -> ModelTurn:
        usage = Usage(requests=1, prompt_tokens=10, completion_tokens=5, total_tokens=15)
        if request.messages[-1]["role"] == "user":
            call = {"id": "call_1", "type": "function", "function": {"name": "work", "arguments": '{"x": 1}'}}
            message = {"role": "assistant", "content": None, "tool_calls": [call]}
            return ModelTurn(message, usage, "tool_calls", model="churn")
        delay = self.latency
        if self.staggered > 0:
            self.staggered -= 1
            delay = self.rng.uniform(0, self.latency)
        await anyio.sleep(delay)
        return ModelTurn({"role": "assistant", "content": "done"}, usage, "stop", model="churn")


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class GCPauses:
    """The duration of every cyclic-GC collection, by generation (`gc.callbacks`)."""

    def __init__(self) -> None:
        self.pauses: list[tuple[int, float]] = []
        self.cpu: list[float] = []  # the CPU time of each pause (the wall time counts the load too)
        self.collected = 0  # cyclic garbage found (objects)
        self._t = self._cpu = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t, self._cpu = time.perf_counter(), time.process_time()
        else:
            self.pauses.append((info["generation"], time.perf_counter() - self._t))
            self.cpu.append(time.process_time() - self._cpu)
            self.collected += info["collected"]

    def take(self) -> dict[str, Any]:
        pauses, self.pauses, self.cpu = self.pauses, [], []
        full = [d for g, d in pauses if g == 2]
        return {
            "collections": len(pauses),
            "full": len(full),
            "max_ms": round(max((d for _, d in pauses), default=0) * 1000, 1),
            "full_total_s": round(sum(full), 2),
        }


class Ticker:
    """How late a 1 ms sleep wakes up: the event loop's responsiveness."""

    def __init__(self) -> None:
        self.lags: list[float] = []

    async def run(self) -> None:
        while True:
            t = time.perf_counter()
            await anyio.sleep(0.001)
            self.lags.append(time.perf_counter() - t - 0.001)

    def take(self) -> list[float]:
        lags, self.lags = self.lags, []
        return lags


def _kind(o: object) -> str:
    """An object's type, and for code objects (coroutines, functions, methods, generators) whose."""
    t = type(o)
    if t is types.CoroutineType:
        return f"coroutine {o.cr_code.co_qualname}"  # type: ignore[attr-defined]
    if t is types.AsyncGeneratorType:
        return f"async_generator {o.ag_code.co_qualname}"  # type: ignore[attr-defined]
    if t is types.GeneratorType:
        return f"generator {o.gi_code.co_qualname}"  # type: ignore[attr-defined]
    if t is types.MethodType:
        return f"method {getattr(o.__func__, '__qualname__', '?')}"  # type: ignore[attr-defined]
    if t is types.FunctionType:
        return f"function {o.__qualname__}"  # type: ignore[attr-defined]
    return f"{t.__module__}.{t.__qualname__}" if t.__module__ != "builtins" else t.__qualname__


_GENERIC = {"set", "list", "tuple", "dict", "cell", "_contextvars.Context", "collections.deque"}
_GENERIC |= {"weakref.ReferenceType", "builtin_function_or_method", "_asyncio.FutureIter"}


def _objects_by_type() -> collections.Counter[str]:
    """The objects the cyclic GC tracks (the ones a full collection walks), by `_kind`; a generic
    container (set, tuple, cell, Context...) also by the kind of one object that refers to it."""
    objects = gc.get_objects()
    kinds = {id(o): _kind(o) for o in objects}
    owner: dict[int, str] = {}
    for o in objects:
        k = kinds[id(o)]
        if k in _GENERIC:
            continue
        for r in gc.get_referents(o):
            rk = kinds.get(id(r))
            if rk in _GENERIC and id(r) not in owner:
                owner[id(r)] = k
    del objects
    return collections.Counter(k + (f" ← {owner[i]}" if i in owner else "") for i, k in kinds.items())


def _tracked() -> int:
    """How many objects the cyclic GC tracks: what one full collection walks."""
    return len(gc.get_objects())


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    tools = ToolRegistry()
    tools.register(work)
    if args.churn:
        churn_model = ChurnModel(0.001, 0)
        agent = Agent(client=churn_model, tools=tools, model="churn")
        assert (await agent.run("go")).output == "done"
        churn_model.latency, churn_model.staggered = args.churn, args.n
        return await churn(args, agent, churn_model)
    if args.model in ("held", "none"):
        model = HeldModel()
        agent = Agent(client=model, tools=tools, model="held")
        model.expected, model.release = 1, anyio.Event()
        model.release.set()
        warm = await agent.run("go")  # imports, caches, first-call costs
        assert warm.output == "done", warm.output
        model.waiting, model.expected, model.release, model.all_waiting = (
            0,
            args.n,
            anyio.Event(),
            anyio.Event(),
        )
        return await hold(args, agent, model)
    from agentloop import FluxClient

    async with FluxClient(
        base_url=args.url, api_key="bench-key", max_connections=args.max_connections
    ) as flux:
        counting = CountingClient(flux)
        warm = await Agent(client=counting, tools=tools, model="bench-s0-k0").run("go")
        assert warm.output == "done", warm.output
        counting.started = 0
        slow = Agent(client=counting, tools=tools, model=f"bench-s0-k0-l{int(args.latency_s * 1000)}")
        return await hold(args, slow, counting)


async def all_started(model: Any, n: int) -> None:
    if isinstance(model, HeldModel):
        await model.all_waiting.wait()
        return
    while model.started < n:  # noqa: ASYNC110  (a counter in the model, no event to wait on)
        await anyio.sleep(0.05)
    await anyio.sleep(1.0)  # the last requests reach the pool or the socket


async def hold(args: argparse.Namespace, agent: Agent, model: Any) -> dict[str, Any]:
    n = args.n
    gc.collect()
    base, before = rss_mb(), (_objects_by_type() if args.trace or args.objects else None)
    tracked0 = _tracked()
    if args.trace:
        tracemalloc.start(args.frames)
        snap0 = tracemalloc.take_snapshot()
    outputs: list[Any] = []
    ticker, pauses = Ticker(), GCPauses()

    async def one() -> None:
        if args.model == "none":  # the floor: a task of the caller's, waiting, and no run at all
            model.waiting += 1
            if model.waiting == n:
                model.all_waiting.set()
            await model.release.wait()
            outputs.append("done")
            return
        outputs.append((await agent.run(prompt, limits=limits)).output)

    prompt = "go" + " x" * (args.prompt_bytes // 2)  # a longer conversation: the request body grows with it
    limits = RunLimits(timeout=args.run_timeout) if args.run_timeout else None  # the run's own deadline
    out: dict[str, Any] = {"runs": n, "backend": args.backend, "model": args.model}
    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker.run)
        t0 = time.perf_counter()
        async with anyio.create_task_group() as runs:
            for i in range(n):
                runs.start_soon(one)
                if args.freeze_every and i % args.freeze_every == args.freeze_every - 1:
                    gc.freeze()  # the runs started so far leave the collector's walks
                if i % args.batch == args.batch - 1:
                    await (
                        anyio.lowlevel.checkpoint()
                    )  # let the ticker and the started runs move between batches
            await all_started(model, n)
            out["start_s"] = time.perf_counter() - t0
            start_lags, out["gc_start"] = ticker.take(), pauses.take()
            t, cpu = time.perf_counter(), time.process_time()
            gc.collect()
            out["full_gc_ms"] = round((time.perf_counter() - t) * 1000, 1)
            out["full_gc_cpu_ms"] = round(
                (time.process_time() - cpu) * 1000, 1
            )  # the load inflates the wall time
            out["gc_objects"] = _tracked()
            out["tracked_per_run"] = round((out["gc_objects"] - tracked0) / n, 1)
            if args.freeze:  # the operator's opt-in (docs/scaling.md): the waiting runs leave the GC's walks
                t = time.perf_counter()
                gc.freeze()
                out["freeze_ms"] = round((time.perf_counter() - t) * 1000, 1)
                t, cpu = time.perf_counter(), time.process_time()
                gc.collect()
                out["frozen_full_gc_ms"] = round((time.perf_counter() - t) * 1000, 1)
                out["frozen_full_gc_cpu_ms"] = round((time.process_time() - cpu) * 1000, 1)
            await anyio.sleep(0.01)
            ticker.take(), pauses.take()  # the tick the collection above made late
            await anyio.sleep(args.hold_s)  # all wait: the loop must stay responsive
            hold_lags, out["gc_hold"] = ticker.take(), pauses.take()
            out["rss_base_mb"], out["rss_waiting_mb"] = round(base, 1), round(rss_mb(), 1)
            out["kb_per_run"] = round((out["rss_waiting_mb"] - base) * 1024 / n, 2)
            if args.trace:
                out["trace"] = trace_report(snap0, tracemalloc.take_snapshot(), n, args.top)
                tracemalloc.stop()
            if args.trace or args.objects:
                after = _objects_by_type()
                assert before is not None
                per_run = {
                    k: round((after[k] - before[k]) / n, 2) for k in after if after[k] - before[k] >= n / 5
                }
                out["objects_per_run"] = dict(sorted(per_run.items(), key=lambda kv: -kv[1]))
            t1 = time.perf_counter()
            if isinstance(model, HeldModel):
                model.release.set()
            else:
                runs.cancel_scope.cancel()  # the model answers much later: cancelling all is the end
        out["drain_s"] = round(time.perf_counter() - t1, 2)
        tg.cancel_scope.cancel()
    if isinstance(model, HeldModel):
        assert len(outputs) == n and set(outputs) == {"done"}, (len(outputs), set(outputs))
    else:
        assert outputs == [], outputs[:3]
    # The runs are over: what a full collection still finds is cyclic garbage they left (with
    # --freeze, what gc.freeze() kept alive until gc.unfreeze()).
    if args.freeze or args.freeze_every:
        gc.unfreeze()
    out["cyclic_garbage_per_run"] = round(gc.collect() / n, 2)
    out["start_s"] = round(out["start_s"], 2)
    out["lag_start_max_ms"] = round(max(start_lags, default=0) * 1000, 1)
    out["lag_hold_max_ms"] = round(max(hold_lags, default=0) * 1000, 2)
    out["lag_hold_p99_ms"] = (
        round(statistics.quantiles(hold_lags, n=100)[98] * 1000, 2) if len(hold_lags) > 2 else None
    )
    out["ticks_hold"] = len(hold_lags)
    return out


async def churn(args: argparse.Namespace, agent: Agent, model: ChurnModel) -> dict[str, Any]:
    """N workers each running runs back to back (`ChurnModel`): the loop's lag and the GC's
    collections while ~N / latency runs end and start per second, over `--churn-s` seconds
    once all N run (no forced collection: what the collector does on its own)."""
    n, done, stop = args.n, [0], anyio.Event()
    ticker, pauses = Ticker(), GCPauses()
    limits = RunLimits(timeout=args.run_timeout) if args.run_timeout else None

    async def worker() -> None:
        while not stop.is_set():
            result = await agent.run("go", limits=limits)
            assert result.output == "done", result.output
            done[0] += 1
            if args.freeze_every and done[0] % args.freeze_every == 0:
                gc.freeze()  # the operator's recipe (docs/scaling.md): the live runs leave the walks

    gc.collect()
    base = rss_mb()
    recipe = f", gc.freeze() every {args.freeze_every:,} runs" if args.freeze_every else ""
    recipe += f", gc.set_threshold{tuple(args.gc_threshold)}" if args.gc_threshold else ""
    out: dict[str, Any] = {"runs": n, "backend": args.backend, "model": f"churn {args.churn:g} s{recipe}"}
    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker.run)
        t0 = time.perf_counter()
        async with anyio.create_task_group() as runs:
            for i in range(n):
                runs.start_soon(worker)
                if args.freeze_every and i % args.freeze_every == args.freeze_every - 1:
                    gc.freeze()
                if i % args.batch == args.batch - 1:
                    await anyio.lowlevel.checkpoint()
            while model.staggered > 0:  # noqa: ASYNC110  (until every worker's first run waits on its model)
                await anyio.sleep(0.05)
            await anyio.sleep(args.settle_s)  # the heap's growth over: the window sees the steady churn
            out["start_s"] = round(time.perf_counter() - t0, 2)
            start_lags, out["gc_start"] = ticker.take(), pauses.take()
            done0, cpu0, t1 = done[0], time.process_time(), time.perf_counter()
            pauses.collected = 0
            await anyio.sleep(args.churn_s)
            lags, gcs = ticker.take(), list(zip(pauses.pauses, pauses.cpu, strict=True))
            out["cyclic_garbage_per_run_ended"] = round(pauses.collected / max(1, done[0] - done0), 2)
            out["gc_churn"] = pauses.take()
            wall = time.perf_counter() - t1
            out["churn_runs_per_s"] = round((done[0] - done0) / wall, 1)
            out["churn_cpu_share"] = round((time.process_time() - cpu0) / wall, 2)
            out["rss_mb"], out["kb_per_run"] = round(rss_mb(), 1), round((rss_mb() - base) * 1024 / n, 2)
            out["tracked_per_run"] = round(_tracked() / n, 1)
            stop.set()
            runs.cancel_scope.cancel()
        tg.cancel_scope.cancel()
    if args.freeze_every:
        gc.unfreeze()
    out["gen2_ms"] = [round(d * 1000, 1) for (g, d), _ in gcs if g == 2]
    out["gen2_cpu_ms"] = [round(c * 1000, 1) for (g, _), c in gcs if g == 2]
    out["gen1_max_ms"] = round(max((d for (g, d), _ in gcs if g == 1), default=0) * 1000, 1)
    out["gen1_max_cpu_ms"] = round(max((c for (g, _), c in gcs if g == 1), default=0) * 1000, 1)
    out["gen01_over_10ms_cpu"] = sum(1 for (g, _), c in gcs if g < 2 and c > 0.010)
    out["loadavg"] = os.getloadavg()[0]
    out["lag_start_max_ms"] = round(max(start_lags, default=0) * 1000, 1)
    out["lag_max_ms"] = round(max(lags, default=0) * 1000, 2)
    out["lag_p99_ms"] = round(statistics.quantiles(lags, n=100)[98] * 1000, 2) if len(lags) > 2 else None
    out["lag_p999_ms"] = round(statistics.quantiles(lags, n=1000)[998] * 1000, 2) if len(lags) > 2 else None
    out["lags_over_10ms"] = sum(1 for x in lags if x > 0.010)
    out["ticks"] = len(lags)
    return out


def trace_report(snap0: Any, snap1: Any, n: int, top: int) -> dict[str, Any]:
    """Allocations alive while all wait that were not before: per line and per file, bytes per run."""
    diff = snap1.compare_to(snap0, "traceback")
    lines = []
    for stat in diff[:top]:
        frames = [f"{_short(f.filename)}:{f.lineno}" for f in stat.traceback]
        lines.append(
            {
                "bytes_per_run": round(stat.size_diff / n),
                "count_per_run": round(stat.count_diff / n, 2),
                "where": frames,
            }
        )
    per_file = collections.Counter()
    for stat in snap1.compare_to(snap0, "filename"):
        per_file[_short(stat.traceback[0].filename)] += stat.size_diff
    total = sum(s.size_diff for s in diff)
    return {
        "traced_bytes_per_run": round(total / n),
        "top_lines": lines,
        "per_file": {k: round(v / n) for k, v in per_file.most_common(top) if v > 0},
    }


def _short(path: str) -> str:
    for marker in ("/agentloop/", "/site-packages/", "/lib/python3"):
        if marker in path:
            return (
                path.split(marker, 1)[1]
                if marker != "/agentloop/"
                else "agentloop/" + path.split(marker, 1)[1]
            )
    return path


def child(args: argparse.Namespace) -> None:
    if args.gc_threshold:
        gc.set_threshold(*args.gc_threshold)
    if args.model != "http" or args.churn:
        print(json.dumps(anyio.run(measure, args, backend=args.backend)))
        return
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # one socket per connection of the pool
    server = subprocess.Popen(
        [sys.executable, str(Path(__file__).parent / "_server.py")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        args.url = json.loads(server.stdout.readline())["url"] + "/v1"
        print(json.dumps(anyio.run(measure, args, backend=args.backend)))
    finally:
        server.terminate()
        server.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    ap.add_argument(
        "--model",
        choices=["held", "http", "none"],
        default="held",
        help="in-process model, FluxClient over HTTP, or none (the caller's waiting tasks alone: the floor)",
    )
    ap.add_argument(
        "--latency-s", type=float, default=300.0, help="the HTTP model's answer delay (--model http)"
    )
    ap.add_argument("--max-connections", type=int, default=1000, help="FluxClient's pool (--model http)")
    ap.add_argument("--batch", type=int, default=100, help="runs started between two checkpoints")
    ap.add_argument(
        "--hold-s", type=float, default=2.0, help="seconds all runs wait while the ticker measures"
    )
    ap.add_argument(
        "--prompt-bytes",
        type=int,
        default=0,
        help="this many bytes more in each run's prompt (a larger request body)",
    )
    ap.add_argument(
        "--freeze-every",
        type=int,
        default=0,
        help="call gc.freeze() after every this many runs started (with --freeze: the opt-in while a wave starts)",
    )
    ap.add_argument(
        "--run-timeout", type=float, default=0.0, help="RunLimits(timeout=...) for every run (0: none)"
    )
    ap.add_argument(
        "--churn",
        type=float,
        default=0.0,
        help="churn mode: N workers run runs back to back, each model answer after this many seconds",
    )
    ap.add_argument("--churn-s", type=float, default=30.0, help="seconds measured in churn mode")
    ap.add_argument(
        "--settle-s", type=float, default=5.0, help="churn mode: seconds between all started and the window"
    )
    ap.add_argument(
        "--gc-threshold", type=int, nargs="+", help="gc.set_threshold(...) first (the operator's)"
    )
    ap.add_argument("--trace", action="store_true", help="tracemalloc + objects per run (slow)")
    ap.add_argument(
        "--objects",
        action="store_true",
        help="the GC-tracked objects per run by type and code (no tracemalloc)",
    )
    ap.add_argument(
        "--freeze",
        action="store_true",
        help="call gc.freeze() once all runs wait (the operator's opt-in of docs/scaling.md) and time a full GC then",
    )
    ap.add_argument("--frames", type=int, default=1, help="traceback depth of tracemalloc (with --trace)")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--json", action="store_true", help="print the raw JSON lines only")
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)  # one measurement, in this process
    args = ap.parse_args()
    if args.n:
        child(args)
        return
    results = []
    for n in args.runs:
        cmd = [sys.executable, __file__, "--n", str(n), *_passed(args)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode:
            sys.exit(f"N={n} failed:\n{done.stderr[-3000:]}")
        results.append(json.loads(done.stdout))
        if args.json:
            print(done.stdout.strip())
    if not args.json:
        render(results)


def _passed(args: argparse.Namespace) -> list[str]:
    out = [
        "--backend",
        args.backend,
        "--batch",
        str(args.batch),
        "--hold-s",
        str(args.hold_s),
        "--model",
        args.model,
    ]
    out += ["--latency-s", str(args.latency_s), "--max-connections", str(args.max_connections)]
    out += ["--frames", str(args.frames), "--top", str(args.top)]
    flags = [f"--{f}" for f in ("trace", "objects", "freeze") if getattr(args, f)]
    flags += ["--freeze-every", str(args.freeze_every), "--prompt-bytes", str(args.prompt_bytes)]
    flags += [
        "--run-timeout",
        str(args.run_timeout),
        "--churn",
        str(args.churn),
        "--churn-s",
        str(args.churn_s),
    ]
    if args.gc_threshold:
        flags += ["--gc-threshold", *map(str, args.gc_threshold)]
    return out + flags


def render(results: list[dict[str, Any]]) -> None:
    load = os.getloadavg()
    print(f"Python {sys.version.split()[0]}, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}\n")
    if "churn_runs_per_s" in results[0]:
        _render_churn(results)
        return
    print(
        "| runs | backend | model | RSS before MB | RSS all waiting MB | KB per run | GC-tracked objects per run "
        "| loop lag while all wait: max / p99 ms | one full GC with all waiting: wall (CPU) ms | start s "
        "| worst lag while starting ms | full GCs while starting: count, longest ms | drain s | cyclic garbage per run |"
    )
    print("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        g = r["gc_start"]
        print(
            f"| {r['runs']:,} | {r['backend']} | {r['model']} | {r['rss_base_mb']} | {r['rss_waiting_mb']} | **{r['kb_per_run']}** "
            f"| {r['tracked_per_run']} | {r['lag_hold_max_ms']} / {r['lag_hold_p99_ms']} | {r['full_gc_ms']} ({r['full_gc_cpu_ms']}) "
            f"| {r['start_s']} | {r['lag_start_max_ms']} | {g['full']}, {g['max_ms']} | {r['drain_s']} | {r['cyclic_garbage_per_run']} |"
        )
    for r in results:
        if "freeze_ms" in r:
            print(
                f"\nN={r['runs']:,}, gc.freeze() once all wait: the call {r['freeze_ms']} ms, then one full GC "
                f"{r['frozen_full_gc_ms']} ms ({r['frozen_full_gc_cpu_ms']} CPU); loop lag while all wait "
                f"{r['lag_hold_max_ms']} / {r['lag_hold_p99_ms']} ms (max / p99)"
            )
    for r in results:
        if "trace" in r:
            _render_trace(r)
        if "objects_per_run" in r:
            print(f"\nN={r['runs']:,}: GC-tracked objects per waiting run, by type (and code)\n")
            print("| object | per run |\n|---|---:|")
            for k, v in r["objects_per_run"].items():
                print(f"| {k} | {v} |")


def _render_churn(results: list[dict[str, Any]]) -> None:
    print(
        "| runs alive | backend | model | runs ended per s | CPU share | KB per run | tracked objects per run "
        "| full GCs (gen 2) while churning: CPU ms each | longest young GC: CPU (wall) ms "
        "| loop lag max / p99.9 / p99 ms | ticks > 10 ms |"
    )
    print("|---:|---|---|---:|---:|---:|---:|---|---:|---:|---:|")
    for r in results:
        gen2 = ", ".join(f"{d:,}" for d in r["gen2_cpu_ms"]) or "none"
        print(
            f"| {r['runs']:,} | {r['backend']} | {r['model']} | {r['churn_runs_per_s']} | {r['churn_cpu_share']} "
            f"| {r['kb_per_run']} | {r['tracked_per_run']} | {len(r['gen2_ms'])}: {gen2} "
            f"| {r['gen1_max_cpu_ms']} ({r['gen1_max_ms']}) "
            f"| {r['lag_max_ms']} / {r['lag_p999_ms']} / {r['lag_p99_ms']} | {r['lags_over_10ms']} of {r['ticks']} |"
        )


def _render_trace(r: dict[str, Any]) -> None:
    t = r["trace"]
    print(f"\nN={r['runs']:,}: tracemalloc sees {t['traced_bytes_per_run']:,} B per run still allocated\n")
    print(
        "| bytes / run | allocations / run | where (the last 3 frames; the allocation is the last) |\n|---:|---:|---|"
    )
    for line in t["top_lines"]:
        print(f"| {line['bytes_per_run']:,} | {line['count_per_run']} | {' ← '.join(line['where'])} |")
    print("\n| file | bytes / run |\n|---|---:|")
    for f, b in t["per_file"].items():
        print(f"| {f} | {b:,} |")


if __name__ == "__main__":
    main()

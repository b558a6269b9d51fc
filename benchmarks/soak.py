"""Long-running worker hygiene: many agent runs in one process must leave nothing behind.

One process runs `--sequential` agent runs back to back and `--concurrent` runs at once (in
`--batches` batches) against the fake FluxRouter, through a TCP proxy that is restarted between
the phases (every pooled connection dies, the port comes back): the client's pool must recover.
It samples RSS, open fds (sockets apart), tasks, threads and child processes, and reports the
RSS curve. Checks (exact, no thresholds on timing or RSS):

- after warm-up, the sequential phase ends with exactly the fds, tasks and children it had;
- non-socket fds and children never change; sockets stay within the pool's bound (one leaked
  socket per run would exceed it);
- once client, proxy and router are closed, fds, tasks and children are exactly the baseline.

    .venv/bin/python benchmarks/soak.py                       # 10,000 back to back, 1,000 at once
    .venv/bin/python benchmarks/soak.py --sequential 1000 --concurrent 200 --json

Each run: two model requests, two parallel tool calls (one inline, one in a worker thread).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import sniffio

from agentloop import Agent, FluxClient, ToolRegistry
from agentloop.testing import FakeFluxRouter, call, text, tool_calls


def make_tools() -> ToolRegistry:
    tools = ToolRegistry()

    @tools.tool
    async def get_weather(city: str) -> dict:
        """Get the weather for a city."""
        return {"city": city, "temp_c": 21}

    @tools.tool
    def local_time(city: str) -> str:
        """The local time in a city (a sync tool: runs in a worker thread)."""
        return f"12:00 in {city}"

    return tools


def handler(request: Any) -> Any:
    messages = request.json.get("messages") or []
    if messages and messages[-1].get("role") == "tool":
        return text("Lisbon: 21 °C, 12:00")
    return tool_calls(call("get_weather", {"city": "Lisbon"}), call("local_time", {"city": "Lisbon"}))


# --- process state ---------------------------------------------------------------------------------


@dataclass
class Sample:
    label: str
    runs: int
    rss_mb: float
    fds: int
    sockets: int
    tasks: int
    threads: int
    children: list[int] = field(default_factory=list)

    @property
    def other_fds(self) -> int:
        return self.fds - self.sockets


def _fds() -> tuple[int, int]:
    total = sockets = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # the fd of the listdir itself, closed meanwhile
            continue
        total += 1
        sockets += target.startswith("socket:")
    return total, sockets


def _children() -> list[int]:
    pids: list[int] = []
    for tid in os.listdir("/proc/self/task"):
        try:
            pids += [int(p) for p in Path(f"/proc/self/task/{tid}/children").read_text().split()]
        except OSError:
            continue
    return sorted(pids)


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _tasks() -> int:
    if sniffio.current_async_library() == "asyncio":
        import asyncio

        return len(asyncio.all_tasks())
    import trio

    def count(task: Any) -> int:
        return 1 + sum(count(t) for n in task.child_nurseries for t in n.child_tasks)

    return count(trio.lowlevel.current_root_task())


def sample(label: str, runs: int) -> Sample:
    gc.collect()
    fds, sockets = _fds()
    return Sample(label, runs, round(_rss_mb(), 1), fds, sockets, _tasks(), len(os.listdir("/proc/self/task")), _children())


# --- a restartable TCP proxy: "the server restarts" from the client's point of view ----------------


class Proxy:
    """Forwards 127.0.0.1:port to the router. `restart()` drops every connection and rebinds the port."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._tg: anyio.abc.TaskGroup | None = None
        self._scope: anyio.CancelScope | None = None
        self._stopped: anyio.Event | None = None

    async def __aenter__(self) -> Proxy:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        await self._start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self._tg is not None
        self._tg.cancel_scope.cancel()
        await self._tg.__aexit__(None, None, None)

    async def _start(self) -> None:
        assert self._tg is not None
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=self.port)
        self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        await self._tg.start(self._serve, listener)

    async def restart(self) -> None:
        assert self._scope is not None and self._stopped is not None
        self._scope.cancel()
        await self._stopped.wait()
        await self._start()

    async def _serve(self, listener: Any, *, task_status: Any) -> None:
        self._stopped = stopped = anyio.Event()
        try:
            with anyio.CancelScope() as self._scope:
                async with listener, anyio.create_task_group() as tg:
                    task_status.started()
                    await listener.serve(self._pipe, tg)
        finally:
            stopped.set()

    async def _pipe(self, client: anyio.abc.SocketStream) -> None:
        async with client, await anyio.connect_tcp("127.0.0.1", self.target_port) as upstream:
            async with anyio.create_task_group() as tg:

                async def copy(a: Any, b: Any) -> None:
                    try:
                        async for chunk in a:
                            await b.send(chunk)
                    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                        pass
                    finally:
                        tg.cancel_scope.cancel()

                tg.start_soon(copy, client, upstream)
                tg.start_soon(copy, upstream, client)


# --- the soak ----------------------------------------------------------------------------------------


@dataclass
class Report:
    samples: list[Sample]
    sequential: int
    concurrent: int
    batches: int
    restarts: int
    runs_ok: int
    wall_s: float
    problems: list[str]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["rss_curve_mb"] = [(s.runs, s.rss_mb) for s in self.samples]
        return d


async def soak(sequential: int = 10_000, concurrent: int = 1_000, batches: int = 2, every: int = 500) -> Report:
    """Run the soak in the current event loop and return its report (problems empty when clean)."""
    tools = make_tools()
    agent_kwargs = {"tools": tools, "model": "flux-auto", "max_steps": 4}
    started = time.perf_counter()
    samples: list[Sample] = []
    problems: list[str] = []
    ok = 0
    restarts = 0
    baseline = sample("baseline", 0)
    samples.append(baseline)

    async def one(agent: Agent) -> None:
        nonlocal ok
        result = await agent.run("Weather and time in Lisbon?")
        if result.output != "Lisbon: 21 °C, 12:00" or [r.status for r in result.tool_calls] != ["ok", "ok"]:
            problems.append(f"unexpected result: {result.output!r} {[r.status for r in result.tool_calls]}")
        ok += 1

    async with FakeFluxRouter(handler) as router, Proxy(router._port or int(router.url.rsplit(":", 1)[1])) as proxy:
        async with FluxClient(base_url=f"http://127.0.0.1:{proxy.port}/v1", api_key="soak") as client:
            agent = Agent(client=client, **agent_kwargs)
            # sequential: warm up, then every run must leave the process exactly as it was
            warm = min(every, max(sequential // 10, 1))
            for i in range(sequential):
                await one(agent)
                router.requests.clear()  # the fake router records every request; that is not ours to measure
                if i + 1 == warm or (i + 1) % every == 0 or i + 1 == sequential:
                    samples.append(sample("sequential", i + 1))
            after_warm = next((s for s in samples if s.label == "sequential"), None)
            end_seq = samples[-1]
            if after_warm is not None:
                for what in ("fds", "sockets", "tasks", "children"):
                    if getattr(end_seq, what) != getattr(after_warm, what):
                        problems.append(
                            f"sequential: {what} went from {getattr(after_warm, what)} after warm-up to "
                            f"{getattr(end_seq, what)} after {end_seq.runs} runs"
                        )
            # the server restarts: every pooled connection is dead; the pool must recover
            await proxy.restart()
            restarts += 1
            for _ in range(20):
                await one(agent)
            router.requests.clear()
            samples.append(sample("after restart", ok))
            # concurrent batches, with a restart between them
            for b in range(batches):
                async with anyio.create_task_group() as tg:
                    for _ in range(concurrent):
                        tg.start_soon(one, agent)
                router.requests.clear()
                samples.append(sample(f"batch {b + 1}", ok))
                if b + 1 < batches:
                    await proxy.restart()
                    restarts += 1
            # 4 sockets per connection (client, proxy both sides, router); a pool of at most
            # `concurrent` connections plus what the sequential phase kept open, and slack for
            # connections closing while new ones open. A leak of one socket per run exceeds it.
            bound = end_seq.sockets + 5 * concurrent
            for s in samples[1:]:
                if s.other_fds != samples[1].other_fds:
                    problems.append(f"{s.label} at {s.runs} runs: {s.other_fds} non-socket fds, {samples[1].other_fds} after warm-up")
                if s.children != baseline.children:
                    problems.append(f"{s.label} at {s.runs} runs: child processes {s.children}, baseline {baseline.children}")
                if s.sockets > bound:
                    problems.append(f"{s.label} at {s.runs} runs: {s.sockets} sockets, more than the pool's bound {bound}")
    await tools.aclose()
    end = sample("closed", ok)
    samples.append(end)
    for what in ("fds", "sockets", "tasks", "children"):
        if getattr(end, what) != getattr(baseline, what):
            problems.append(f"after closing everything: {what} is {getattr(end, what)}, baseline {getattr(baseline, what)}")
    expected = sequential + 20 + concurrent * batches
    if ok != expected:
        problems.append(f"{ok} runs finished, {expected} expected")
    return Report(samples, sequential, concurrent, batches, restarts, ok, round(time.perf_counter() - started, 2), problems)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sequential", type=int, default=10_000)
    p.add_argument("--concurrent", type=int, default=1_000)
    p.add_argument("--batches", type=int, default=2)
    p.add_argument("--every", type=int, default=500, help="sample every N sequential runs")
    p.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # 1,000 connections need ~4,000 fds
    report = anyio.run(soak, args.sequential, args.concurrent, args.batches, args.every, backend=args.backend)
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
    else:
        print(f"{report.runs_ok} runs in {report.wall_s} s ({args.backend}), {report.restarts} server restarts")
        print(f"{'phase':<14}{'runs':>7}{'RSS MB':>9}{'fds':>6}{'sockets':>9}{'tasks':>7}{'threads':>9}{'children':>9}")
        for s in report.samples:
            print(f"{s.label:<14}{s.runs:>7}{s.rss_mb:>9}{s.fds:>6}{s.sockets:>9}{s.tasks:>7}{s.threads:>9}{len(s.children):>9}")
        print("clean" if not report.problems else "PROBLEMS:\n  " + "\n  ".join(report.problems))
    return 0 if not report.problems else 1


if __name__ == "__main__":
    sys.exit(main())

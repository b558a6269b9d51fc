"""Long-running worker hygiene: many agent runs in one process must leave nothing behind.

One process runs `--sequential` agent runs back to back and `--concurrent` runs at once (in
`--batches` batches) against the fake FluxRouter, through a TCP proxy that is restarted between
the phases (every pooled connection dies, the port comes back): the client's pool must recover.
It samples RSS, open fds (sockets apart), tasks, threads, child processes and their
descendants, and checks:

- after warm-up, the sequential phase ends with exactly the fds, sockets, tasks, threads and
  children it had, and RSS grew by at most `rss_seq_mb` (a leak of ~1 KB a run over 10,000 runs
  exceeds the default);
- non-socket fds (but those of the spares offered to the host), threads outside the worker-thread pool and the child processes (the process
  sandbox's fork server) never change; the fork server's own children stay within its bound
  (running calls, the spares, calls still exiting: max_processes + 6); sockets stay within the pool's bound (one leaked socket per run
  would exceed it); pool threads stay within the pools' bounds;
- each concurrent batch after the first ends with at most `rss_batch_mb` more RSS than the first
  (the first one sets the peak the allocator keeps; the same batch again must reuse it);
- once client, proxy, router and the tools' sandbox are closed, fds, tasks, threads outside the
  pool and child processes are exactly the baseline, and every process ever seen below this one
  is gone.

    .venv/bin/python benchmarks/soak.py                       # 10,000 back to back, 1,000 at once
    .venv/bin/python benchmarks/soak.py --sequential 1000 --concurrent 200 --json
    .venv/bin/python benchmarks/soak.py --mix --duration 300 --backend trio   # errors, cancels, resumes

Each run: two model requests, three parallel tool calls (one inline, one in a worker thread,
one in a fresh child process of the "process" sandbox).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import sniffio

from agentloop import Agent, FluxClient, ToolRegistry
from agentloop.testing import FakeFluxRouter, call, text, tool_calls

sys.path.insert(0, str(Path(__file__).parent))  # soak_tools, importable by the sandbox's children too
import soak_tools


def make_tools(*, process: bool = True) -> ToolRegistry:
    """The soak's tools: an async one (inline), a sync one (a worker thread) and, with `process`, one
    in a fresh child of the "process" sandbox per call. `soak_native.py` leaves that one out: its
    figures are the run loop's, the tools' and the journal's, without a fork server's."""
    tools = ToolRegistry()

    @tools.tool
    async def get_weather(city: str) -> dict:
        """Get the weather for a city."""
        return {"city": city, "temp_c": 21}

    @tools.tool
    def local_time(city: str) -> str:
        """The local time in a city (a sync tool: runs in a worker thread)."""
        return f"12:00 in {city}"

    if process:
        tools.register(soak_tools.word_count, sandbox="process")  # a fresh child process per call
    return tools


CALLS = ["get_weather", "local_time", "word_count"]


def handler(request: Any) -> Any:
    messages = request.json.get("messages") or []
    if messages and messages[-1].get("role") == "tool":
        return text("Lisbon: 21 °C, 12:00")
    return tool_calls(
        call("get_weather", {"city": "Lisbon"}),
        call("local_time", {"city": "Lisbon"}),
        call("word_count", {"text": "Lisbon weather"}),
    )


# --- process state ---------------------------------------------------------------------------------


@dataclass
class Sample:
    label: str
    runs: int
    rss_mb: float
    fds: int
    sockets: int
    tasks: int
    threads: int  # native threads of the process
    pool_threads: int  # ...of which idle worker threads of anyio / trio (they exit after 10 s idle)
    children: list[int] = field(default_factory=list)
    descendants: list[int] = field(default_factory=list)  # below the children (sandboxed calls, spares)

    @property
    def other_fds(self) -> int:
        return self.fds - self.sockets

    @property
    def other_threads(self) -> int:
        return self.threads - self.pool_threads


# anyio's worker threads (its default limiter: 40 at once), trio's thread cache, and asyncio's
# default executor (getaddrinfo; at most min(32, CPUs + 4) threads)
_POOL_THREADS = ("AnyIO worker thread", "Trio thread", "asyncio_", "agentloop tool thread")
MAX_POOL_THREADS = 40 + min(32, (os.cpu_count() or 1) + 4)


def _fds(held: frozenset[int] = frozenset()) -> tuple[int, int]:
    """Open fds and sockets among them, but for `held`: those of the spares the sandbox's fork
    server offered (0-2 at any moment, 2 sockets and 3 memfds each: not a leak)."""
    total = sockets = 0
    for name in os.listdir("/proc/self/fd"):
        if int(name) in held:
            continue
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # the fd of the listdir itself, closed meanwhile
            continue
        total += 1
        sockets += target.startswith("socket:")
    return total, sockets


def _children(pid: int | str = "self") -> list[int]:
    pids: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:  # it exited meanwhile
        return []
    for tid in tids:
        try:
            pids += [int(p) for p in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
        except OSError:
            continue
    return sorted(pids)


def _descendants(pids: list[int]) -> list[int]:
    out: list[int] = []
    todo = [c for p in pids for c in _children(p)]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += _children(pid)
    return sorted(out)


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


def sample(label: str, runs: int, held: frozenset[int] = frozenset()) -> Sample:
    gc.collect()
    fds, sockets = _fds(held)
    pool = sum(t.name.startswith(_POOL_THREADS) for t in threading.enumerate())
    children = _children()
    return Sample(
        label,
        runs,
        round(_rss_mb(), 1),
        fds,
        sockets,
        _tasks(),
        len(os.listdir("/proc/self/task")),
        pool,
        children,
        _descendants(children),
    )


async def _still_running(pids: set[int], grace_s: float = 10.0) -> list[int]:
    """The processes of `pids` that have not exited within `grace_s` (waits on pidfds, not a clock)."""
    left = []
    for pid in sorted(pids):
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        try:
            with anyio.move_on_after(grace_s):
                await anyio.wait_readable(fd)  # readable once the process has exited
                continue
            left.append(pid)
        finally:
            os.close(fd)
    return [pid for pid in left if _alive(pid)]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


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


RSS_SEQ_MB = 8.0
RSS_BATCH_MB = 12.0


async def soak(
    sequential: int = 10_000,
    concurrent: int = 1_000,
    batches: int = 2,
    every: int = 500,
    rss_seq_mb: float = RSS_SEQ_MB,
    rss_batch_mb: float = RSS_BATCH_MB,
) -> Report:
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
    seen: set[int] = set()  # every process ever seen below this one

    def take(label: str) -> Sample:
        s = sample(label, ok, tools.sandbox_for("process").sandbox.offer_fds())
        seen.update(s.children, s.descendants)
        samples.append(s)
        return s

    async def one(agent: Agent) -> None:
        nonlocal ok
        result = await agent.run("Weather and time in Lisbon?")
        if result.output != "Lisbon: 21 °C, 12:00" or [r.status for r in result.tool_calls] != ["ok"] * len(
            CALLS
        ):
            problems.append(
                f"unexpected result: {result.output!r} {[(r.status, r.content) for r in result.tool_calls]}"
            )
        ok += 1

    async with (
        FakeFluxRouter(handler) as router,
        Proxy(router._port or int(router.url.rsplit(":", 1)[1])) as proxy,
    ):
        async with FluxClient(base_url=f"http://127.0.0.1:{proxy.port}/v1", api_key="soak") as client:
            agent = Agent(client=client, **agent_kwargs)
            # sequential: warm up, then every run must leave the process exactly as it was
            warm = min(every, max(sequential // 10, 1))
            for i in range(sequential):
                await one(agent)
                router.requests.clear()  # the fake router records every request; that is not ours to measure
                if i + 1 == warm or (i + 1) % every == 0 or i + 1 == sequential:
                    take("sequential")
            after_warm, end_seq = samples[1], samples[-1]
            for what in ("fds", "sockets", "tasks", "other_threads", "children"):
                if getattr(end_seq, what) != getattr(after_warm, what):
                    problems.append(
                        f"sequential: {what} went from {getattr(after_warm, what)} after warm-up to "
                        f"{getattr(end_seq, what)} after {end_seq.runs} runs"
                    )
            if end_seq.rss_mb - after_warm.rss_mb > rss_seq_mb:
                problems.append(
                    f"sequential: RSS grew from {after_warm.rss_mb} MB after warm-up to {end_seq.rss_mb} MB after "
                    f"{end_seq.runs} runs, more than {rss_seq_mb} MB"
                )
            # the server restarts: every pooled connection is dead; the pool must recover
            await proxy.restart()
            restarts += 1
            for _ in range(20):
                await one(agent)
            router.requests.clear()
            take("after restart")
            # concurrent batches, with a restart between them
            for b in range(batches):
                async with anyio.create_task_group() as tg:
                    for _ in range(concurrent):
                        tg.start_soon(one, agent)
                router.requests.clear()
                take(f"batch {b + 1}")
                if b + 1 < batches:
                    await proxy.restart()
                    restarts += 1
            first = next(s for s in samples if s.label == "batch 1")
            for s in samples:
                if s.label.startswith("batch") and s.rss_mb - first.rss_mb > rss_batch_mb:
                    problems.append(
                        f"{s.label}: RSS {s.rss_mb} MB, more than {rss_batch_mb} MB over batch 1 ({first.rss_mb} MB)"
                    )
            # 4 sockets per connection (client, proxy both sides, router); a pool of at most
            # `concurrent` connections plus what the sequential phase kept open, and slack for
            # connections closing while new ones open. A leak of one socket per run exceeds it.
            bound = end_seq.sockets + 5 * concurrent
            box = tools.sandbox_for("process").sandbox  # the ProcessSandbox behind the executor
            for s in samples[1:]:
                at = f"{s.label} at {s.runs} runs"
                if s.other_fds != after_warm.other_fds:
                    problems.append(
                        f"{at}: {s.other_fds} non-socket fds, {after_warm.other_fds} after warm-up"
                    )
                if s.other_threads != after_warm.other_threads:
                    problems.append(
                        f"{at}: {s.other_threads} threads besides the worker pool, {after_warm.other_threads} after warm-up"
                    )
                if s.pool_threads > MAX_POOL_THREADS:
                    problems.append(
                        f"{at}: {s.pool_threads} pool threads, more than the pools' bound {MAX_POOL_THREADS}"
                    )
                if s.children != after_warm.children or len(s.children) != len(baseline.children) + 1:
                    problems.append(
                        f"{at}: child processes {s.children}, after warm-up {after_warm.children} (baseline + the fork server)"
                    )
                # Calls in flight, two spares offered to the host and two of the fork server's own;
                # a call's killed process may still be exiting (reaped a moment later) as the next
                # one is handed over: a leak grows past any bound, this one holds a busy machine.
                if len(s.descendants) > box.max_processes + 6:
                    problems.append(
                        f"{at}: {len(s.descendants)} processes below the fork server, more than its {box.max_processes} + 6"
                    )
                if s.sockets > bound:
                    problems.append(f"{at}: {s.sockets} sockets, more than the pool's bound {bound}")
    await tools.aclose()
    end = take("closed")
    for what in ("fds", "sockets", "tasks", "other_threads", "children"):
        if getattr(end, what) != getattr(baseline, what):
            problems.append(
                f"after closing everything: {what} is {getattr(end, what)}, baseline {getattr(baseline, what)}"
            )
    left = await _still_running(seen - set(baseline.children) - set(baseline.descendants))
    if left:
        problems.append(
            f"after closing everything: processes {left} (children or their descendants) still run"
        )
    expected = sequential + 20 + concurrent * batches
    if ok != expected:
        problems.append(f"{ok} runs finished, {expected} expected")
    return Report(
        samples,
        sequential,
        concurrent,
        batches,
        restarts,
        ok,
        round(time.perf_counter() - started, 2),
        problems,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sequential", type=int, default=10_000)
    p.add_argument("--concurrent", type=int, default=1_000)
    p.add_argument("--batches", type=int, default=2)
    p.add_argument("--every", type=int, default=500, help="sample every N sequential runs")
    p.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--mix",
        action="store_true",
        help="the mixed workload of soak_mix.py instead (errors, cancellation, ...)",
    )
    p.add_argument("--duration", type=float, default=60.0, help="--mix: seconds to run")
    p.add_argument("--runs", type=int, default=10**9, help="--mix: stop after this many runs")
    p.add_argument("--batch", type=int, default=480, help="--mix: runs per batch (a sample after each)")
    p.add_argument("--concurrency", type=int, default=32, help="--mix: runs at once")
    args = p.parse_args(argv)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # 1,000 connections need ~4,000 fds
    if args.mix:
        return _mix(args)
    report = anyio.run(soak, args.sequential, args.concurrent, args.batches, args.every, backend=args.backend)
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
    else:
        print(
            f"{report.runs_ok} runs in {report.wall_s} s ({args.backend}), {report.restarts} server restarts"
        )
        print(
            f"{'phase':<14}{'runs':>7}{'RSS MB':>9}{'fds':>6}{'sockets':>9}{'tasks':>7}{'threads':>9}{'(pool)':>7}{'children':>9}{'below':>6}"
        )
        for s in report.samples:
            print(
                f"{s.label:<14}{s.runs:>7}{s.rss_mb:>9}{s.fds:>6}{s.sockets:>9}{s.tasks:>7}{s.threads:>9}{s.pool_threads:>7}"
                f"{len(s.children):>9}{len(s.descendants):>6}"
            )
        print("clean" if not report.problems else "PROBLEMS:\n  " + "\n  ".join(report.problems))
    return 0 if not report.problems else 1


def _mix(args: argparse.Namespace) -> int:
    import logging
    import tempfile

    import soak_mix

    logging.disable(logging.WARNING)  # the mix's tool errors and limits log a warning per run
    with tempfile.TemporaryDirectory() as tmp:
        report = anyio.run(
            soak_mix.long_soak,
            Path(tmp) / "runs.db",
            args.duration,
            args.runs,
            args.batch,
            args.concurrency,
            backend=args.backend,
        )
    if args.json:
        print(json.dumps(asdict(report), indent=1))
    else:
        soak_mix.print_report(report, args.backend)
    return 0 if not report.problems else 1


if __name__ == "__main__":
    sys.exit(main())

"""A mixed workload for the lifecycle soak: every way a run can end, in one process.

`Mix` holds what a user's worker holds: a `FakeFluxRouter`, four `FluxClient`s over loopback
(OpenAI and Anthropic wires, streamed and not), one `ToolRegistry` (tools inline, in a worker
thread, in the `"process"` sandbox), a SQLite journal. `await mix.batch(n, concurrency)` runs n
runs, each a scenario of `SCENARIOS` on one of the four clients, and counts the outcomes:

ok            two steps: an inline, a thread and a sandboxed tool, then the answer
429 / 500     the first request is refused (429 with Retry-After 0 / 500), the retry succeeds
500x          every request answers 500: `InternalServerError` after the retries
drop          the first answer's connection drops mid-body (streamed: after two events)
toolerr       an inline and a sandboxed tool raise; the model is told, the run ends normally
tooltimeout   an inline and a sandboxed tool hang past their `Limits.timeout`
deadline      `RunLimits(timeout=...)` ends the run while a sandboxed tool hangs
slowmodel     `RunLimits(timeout=...)` ends the run while the router has not answered
steps         `RunLimits(max_steps=1)` with tools to call: `StepLimitExceeded`
cancel        the caller cancels its scope at the k-th event (k from the run number), then
              `resume(run_id)` from the journal finishes the run
approve       a tool needs approval: the run pauses; `resume(run_id, approvals=...)` finishes it

Used by `benchmarks/soak.py --mix` (long runs) and `tests/test_soak_mix.py` (smoke size).
"""

from __future__ import annotations

import itertools
import os
import sys
from collections import Counter
from collections.abc import Callable
from contextlib import AsyncExitStack
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from agentloop import (
    Agent,
    APIConnectionError,
    FluxClient,
    InternalServerError,
    Limits,
    RetryPolicy,
    RunFinished,
    RunLimits,
    RunPaused,
    SQLiteJournal,
    StepLimitExceeded,
    TimeLimitExceeded,
    ToolRegistry,
)
from agentloop.testing import (
    FakeFluxRouter,
    RecordedRequest,
    Reply,
    call,
    drop,
    drop_after,
    error,
    text,
    tool_calls,
)

sys.path.insert(0, str(Path(__file__).parent))  # soak_tools, importable by the sandbox's children too
import soak_tools

SCENARIOS = (
    "ok",
    "429",
    "500",
    "500x",
    "drop",
    "toolerr",
    "tooltimeout",
    "deadline",
    "slowmodel",
    "steps",
    "cancel",
    "approve",
)
MODES = (("openai", False), ("anthropic", True), ("openai", True), ("anthropic", False))
ANSWER = "done"
# Short enough for a smoke test, long enough that a busy machine does not end a healthy step by it.
TOOL_TIMEOUT = Limits(timeout=0.2)
RUN_TIMEOUT = RunLimits(timeout=0.3)


# The agents' one observer hands each event to the hook its run's caller set: observers are the
# agent's, and a context variable set around `agent.run` reaches every task of that run.
ON_EVENT: ContextVar[Callable[[object], None] | None] = ContextVar("ON_EVENT", default=None)


def observe(event: object) -> None:
    hook = ON_EVENT.get()
    if hook is not None:
        hook(event)


def make_tools() -> ToolRegistry:
    tools = ToolRegistry()

    @tools.tool
    async def get_weather(city: str) -> dict[str, Any]:
        """Get the weather for a city."""
        return {"city": city, "temp_c": 21}

    @tools.tool
    def local_time(city: str) -> str:
        """The local time in a city (a sync tool: runs in a worker thread)."""
        return f"12:00 in {city}"

    @tools.tool
    async def broken(city: str) -> str:
        """An inline tool that raises."""
        raise RuntimeError(f"no data for {city}")

    @tools.tool(limits=TOOL_TIMEOUT)
    async def stuck(city: str) -> str:
        """An inline tool that never returns: its timeout ends the call."""
        await anyio.sleep_forever()
        return city

    @tools.tool(requires_approval=True)
    async def pay(amount: int) -> str:
        """A tool that needs a human's yes."""
        return f"paid {amount}"

    tools.register(soak_tools.word_count, sandbox="process")
    tools.register(soak_tools.refuse, sandbox="process")
    tools.register(soak_tools.hang, sandbox="process", limits=TOOL_TIMEOUT)
    tools.register(soak_tools.hang, name="hang_long", sandbox="process")  # the sandbox's default: 60 s
    return tools


def _first_step(scenario: str) -> Reply:
    if scenario == "toolerr":
        return tool_calls(call("broken", {"city": "Oslo"}), call("refuse", {"text": "x"}))
    if scenario == "tooltimeout":
        return tool_calls(call("stuck", {"city": "Oslo"}), call("hang", {"text": "x"}))
    if scenario == "deadline":
        return tool_calls(call("hang_long", {"text": "x"}))
    if scenario == "approve":
        return tool_calls(call("pay", {"amount": 3}, id="pay1"), call("get_weather", {"city": "Oslo"}))
    return tool_calls(
        call("get_weather", {"city": "Lisbon"}),
        call("local_time", {"city": "Lisbon"}),
        call("word_count", {"text": "Lisbon weather"}),
    )


@dataclass
class Script:
    """The router's handler: the scenario and run number come in the first user message."""

    attempts: Counter[tuple[str, int]] = field(default_factory=Counter)

    # The slow model's answers wait for this; set at the end of each batch (once the runs' deadlines
    # gave up on them), so no server task outlives the batch that started it.
    stalled: anyio.Event = field(default_factory=anyio.Event)

    async def __call__(self, request: RecordedRequest) -> Reply:
        messages = (request.json or {}).get("messages") or []
        user = next(m for m in messages if m.get("role") == "user")
        content = user["content"] if isinstance(user["content"], str) else user["content"][0]["text"]
        scenario, run = content.split()
        step = sum(m.get("role") == "assistant" for m in messages)
        self.attempts[run, step] += 1
        first_try = self.attempts[run, step] == 1
        if step > 0:
            return text(ANSWER)
        if scenario == "500x" or (scenario == "500" and first_try):
            return error(500, "the router is having a moment", type="server_error")
        if scenario == "429" and first_try:
            return error(429, "slow down", type="rate_limit_error", headers={"retry-after": "0"})
        if scenario == "slowmodel":
            await self.stalled.wait()  # the run's deadline comes first
            return text(ANSWER)
        if scenario == "drop" and first_try:
            return _first_step("ok").with_quirks(drop_after(2)) if request.stream else drop()
        return _first_step(scenario)


class Mix:
    """What a worker holds open; `async with Mix(db)` opens it, leaving the block closes it all."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.outcomes: Counter[str] = Counter()
        self.runs = 0
        self._ids = itertools.count()
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> Mix:
        stack = self._stack
        self.script = Script()
        self.router = router = await stack.enter_async_context(FakeFluxRouter(self.script))
        self.tools = make_tools()
        stack.push_async_callback(self.tools.aclose)
        self.journal = SQLiteJournal(self.db)
        stack.callback(self.journal.close)
        retry = RetryPolicy(initial_delay=0, max_delay=0)
        self.agents = []
        for wire, streamed in MODES:
            base = router.anthropic_url if wire == "anthropic" else router.base_url
            client = FluxClient(base_url=base, api_key="soak", stream=streamed, retry=retry)
            await stack.enter_async_context(client)
            self.agents.append(
                (Agent(client=client, tools=self.tools, journal=self.journal, observers=[observe]), streamed)
            )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def batch(self, n: int, concurrency: int = 8) -> None:
        """n runs, at most `concurrency` at once; scenario and client vary with the run number."""
        limiter = anyio.CapacityLimiter(concurrency)

        async def one(i: int) -> None:
            async with limiter:
                await self.one(i)

        async with anyio.create_task_group() as tg:
            for _ in range(n):
                tg.start_soon(one, next(self._ids))
        # what the fake router and the script record of each request is theirs, not the runs'
        self.router.requests.clear()
        self.script.attempts.clear()
        self.script.stalled.set()
        self.script.stalled = anyio.Event()

    async def one(self, i: int) -> None:
        scenario = SCENARIOS[i % len(SCENARIOS)]
        # every 24 runs: each scenario twice, on two of the four clients, and every client; every 48
        # runs: each scenario on each client
        agent, streamed = self.agents[(i // len(SCENARIOS) + 2 * (i % 2)) % len(self.agents)]
        outcome = await _play(agent, streamed, scenario, i)
        self.outcomes[f"{scenario}: {outcome}"] += 1
        self.runs += 1


async def _play(agent: Agent[Any, Any], streamed: bool, scenario: str, i: int) -> str:
    run_id, prompt = f"run-{i}", f"{scenario} {i}"
    limits = {"deadline": RUN_TIMEOUT, "slowmodel": RUN_TIMEOUT, "steps": RunLimits(max_steps=1)}
    try:
        if scenario == "cancel":
            return await _cancel_then_resume(agent, streamed, prompt, run_id, cut=i % 17)
        result = await _run(agent, streamed, prompt, run_id, limits.get(scenario))
        if scenario == "approve":
            assert result.stop_reason == "approval_required", result.stop_reason
            result = await agent.resume(run_id, approvals={"pay1": True})
    except (InternalServerError, APIConnectionError, TimeLimitExceeded, StepLimitExceeded) as e:
        return type(e).__name__
    assert result.output == ANSWER, (scenario, result.output)
    return ",".join(sorted({r.status for r in result.tool_calls}))


async def _run(agent: Agent[Any, Any], streamed: bool, prompt: str, run_id: str, limits: Any) -> Any:
    if not streamed:
        return await agent.run(prompt, run_id=run_id, limits=limits)
    result = None
    async with agent.stream(prompt, run_id=run_id, limits=limits) as events:
        async for event in events:
            if isinstance(event, RunFinished | RunPaused):
                result = event.result
    return result


async def _cancel_then_resume(
    agent: Agent[Any, Any], streamed: bool, prompt: str, run_id: str, cut: int
) -> str:
    """The caller's scope is cancelled at the `cut`-th event; the journal finishes the run."""
    seen = 0
    scope = anyio.CancelScope()

    def count(_event: object) -> None:
        nonlocal seen
        seen += 1
        if seen > cut:
            scope.cancel()

    with scope:
        if streamed:
            async with agent.stream(prompt, run_id=run_id) as events:
                async for event in events:
                    count(event)
        else:
            token = ON_EVENT.set(count)  # the agent's observer hands this run's events to `count`
            try:
                await agent.run(prompt, run_id=run_id)
            finally:
                ON_EVENT.reset(token)
    result = await agent.resume(run_id)
    assert result.output == ANSWER, result.output
    return "cancelled+resumed" if scope.cancelled_caught else "finished before the cut"


# --- the long run: `benchmarks/soak.py --mix` --------------------------------------------------------


@dataclass
class MixReport:
    samples: list[dict[str, Any]]  # one per batch: time, runs, runs/s, RSS, fds, threads, children
    outcomes: dict[str, int]
    runs: int
    wall_s: float
    problems: list[str]


async def long_soak(db: Path, duration_s: float, max_runs: int, batch: int, concurrency: int) -> MixReport:
    """Batches of the mix until `duration_s` or `max_runs`; samples the process after each batch;
    after closing everything, fds, threads outside the worker pool, tasks and children must be
    the baseline's, and every process the sandbox started gone."""
    import gc
    import time

    import soak  # the process probes of the sequential soak
    import soak_native  # SQLite's and glibc's own figures

    problems: list[str] = []
    baseline = soak.sample("baseline", 0)
    samples: list[dict[str, Any]] = []
    seen: set[int] = set()
    started = time.perf_counter()
    async with Mix(db) as mix:
        while mix.runs < max_runs and time.perf_counter() - started < duration_s:
            t0, runs0 = time.perf_counter(), mix.runs
            await mix.batch(min(batch, max_runs - mix.runs), concurrency)
            gc.collect()
            s = soak.sample("batch", mix.runs, mix.tools.sandbox_for("process").sandbox.offer_fds())
            seen.update(s.children, s.descendants)
            samples.append(
                {
                    "t_s": round(time.perf_counter() - started, 1),
                    "runs": mix.runs,
                    "runs_per_s": round((mix.runs - runs0) / (time.perf_counter() - t0), 1),
                    "rss_mb": s.rss_mb,
                    "anon_mb": _status_mb("RssAnon"),  # the heap; RssFile / RssShmem: mapped files
                    "shmem_mb": _status_mb("RssShmem"),  # (SQLite's WAL index is one)
                    **soak_native.native_mb(),  # anon's parts: SQLite's caches, malloc's heap
                    **({"trimmed_mb": soak_native.trimmed_mb()} if os.environ.get("SOAK_TRIM") else {}),
                    "fds": s.fds,
                    "sockets": s.sockets,
                    "tasks": s.tasks,
                    "threads": s.threads,
                    "pool_threads": s.pool_threads,
                    "children": len(s.children),
                    "below": len(s.descendants),
                }
            )
    end = soak.sample("closed", mix.runs)
    for what in ("fds", "sockets", "tasks", "other_threads", "children"):
        if getattr(end, what) != getattr(baseline, what):
            problems.append(
                f"after closing: {what} is {getattr(end, what)}, baseline {getattr(baseline, what)}"
            )
    left = await soak._still_running(seen - set(baseline.children) - set(baseline.descendants))
    if left:
        problems.append(f"after closing: processes {left} still run")
    return MixReport(samples, dict(mix.outcomes), mix.runs, round(time.perf_counter() - started, 1), problems)


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def print_report(report: MixReport, backend: str) -> None:
    rate = report.runs / report.wall_s if report.wall_s else 0.0
    print(f"{report.runs} mixed runs in {report.wall_s} s ({backend}): {rate:.1f} runs/s")
    cols = list(report.samples[0]) if report.samples else []
    print("".join(f"{c:>12}" for c in cols))
    for s in report.samples:
        print("".join(f"{s[c]!s:>12}" for c in cols))
    for outcome, n in sorted(report.outcomes.items()):
        print(f"  {n:>6}  {outcome}")
    print("clean" if not report.problems else "PROBLEMS:\n  " + "\n  ".join(report.problems))

"""`Agent.warmup()`'s rehearsal: runs of a private twin agent, in the process, seen by nobody.

Why: the first agent run of a process runs ~100 functions of the run package (the loop, the
run's state, the recorder, argument checks, dispatch) for the first time, and CPython quickens
a function only at its 8th call: the first run cost 1.5-10 ms of wall against 0.45-0.6 for the
next ones (benchmarks/bench_first_request.py), the request itself already rehearsed by
`FluxClient.warmup()`.

So `rehearse_runs` runs `RUNS` runs (and as many streamed ones) of a twin built by the caller
from the same `Agent` class, with nothing of the user's: its model is `RehearsalModel` (in the
process: no request, no credential, no socket), answering a call of its own `tool` then a text,
decoded by the wire's codec from the wire's sample answers (so the turns are what a real answer
decodes to); its one tool is `tool` below (async), or `threaded_tool` when the user's agent has a
tool that runs in a worker thread (the thread path is warmed, and its worker thread started:
the first such call of a process started it, ~0.5-0.7 ms of CPU); no journal, no observers,
no hooks, no instructions, no output type. The runs' log lines are muted (`quiet_logs`): a
rehearsal is not the application's business. Structured: the runs are awaited in the caller's
task, so cancelling the caller cancels them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .._events import quiet_logs
from .._limits import Limits
from .._model import Emit, ModelRequest
from .._tools.executors import SandboxExecutor
from .._tools.registry import ToolRegistry
from .._types import ModelTurn
from .._wire import WIRES

__all__ = ["RUNS", "RehearsalModel", "rehearsal_tools", "rehearse_runs", "start_sandboxes", "threaded"]

RUNS = 16  # 3.11 quickens a code object at its 8th call; a few more let it specialize


async def tool(x: int) -> int:
    """rehearsal"""
    return x


def threaded_tool(x: int) -> int:
    """rehearsal"""
    return x


def rehearsal_tools(threaded: bool = False) -> ToolRegistry:
    """The twin's one tool, `tool`: async, or (`threaded`: the user's agent has a tool that runs
    in a worker thread) sync, so the rehearsal runs the thread path too (`_tools/threads.py`)
    and starts the worker thread the first real call would start (`Agent.warmup()` says what
    that means)."""
    tools = ToolRegistry()
    tools.register(threaded_tool if threaded else tool, name="tool")
    return tools


class RehearsalModel:
    """A `Model` in the process: a call of `tool` while the last message is not a tool result,
    then the text "done" (the wire's two samples, decoded afresh for every answer)."""

    def __init__(self, wire: object) -> None:
        spec = WIRES.get(wire if isinstance(wire, str) else "openai") or WIRES["openai"]
        if len(spec.samples) < 2:  # a third-party wire without its two samples
            spec = WIRES["openai"]
        self._codec = spec.build(1024)
        self._samples = spec.samples

    async def request(self, request: ModelRequest, emit: Emit | None = None) -> ModelTurn:
        answered = request.messages[-1].get("role") == "tool"
        turn: ModelTurn = self._codec.decode(self._samples[answered], request_id="rehearsal")
        return turn


def threaded(tools: ToolRegistry) -> bool:
    """Whether one of `tools` runs in a worker thread (a sync function's default)."""
    return any(t.sandbox == "thread" for t in tools)


async def start_sandboxes(tools: ToolRegistry) -> None:
    """Start the fork server of each sandbox mode ("process", "isolated") `tools` run in, by one
    call of the rehearsal's own `threaded_tool` in it: the first sandboxed call of a process
    started it (a fresh interpreter booting: 0.1-2.7 s of wall, ~3-4 ms of the host's CPU, on a
    busy 2-core machine) and waited for it. Only the registry's own sandboxes: a caller's
    executor (`sandbox=<a ToolExecutor>`) is the caller's to start. The fork server stays up
    until the registry is closed (`await tools.aclose()` / `async with tools:`), as after a
    first real call. Its outcome is nobody's: a sandbox that cannot run says so at the first
    real call, as before."""
    started: list[SandboxExecutor] = []
    for t in tools:
        box = t.executor
        if isinstance(box, SandboxExecutor) and box not in started:
            started.append(box)
            await box.call(f"{__name__}:threaded_tool", {"x": 1}, Limits(timeout=60))


async def rehearse_runs(twin: Any, stream: Callable[..., Any]) -> None:
    """`RUNS` runs of `twin` (an agent with a `RehearsalModel` and `rehearsal_tools()`), then as
    many consumed through `stream(twin)`, with log lines muted."""
    with quiet_logs():
        for _ in range(RUNS):
            await twin.run("rehearsal")
        for _ in range(RUNS):
            await stream(twin)

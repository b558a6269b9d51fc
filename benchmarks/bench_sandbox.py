"""Per-call overhead of the tool execution modes (not a timed test).

    .venv/bin/python benchmarks/bench_sandbox.py [N]

Calls a trivial tool N times (default 500) per mode on a warm fork server, one call at a time,
and prints the median / p90 wall-clock time per call as a markdown table. "thread" is the
`anyio.to_thread.run_sync` baseline the "thread" mode builds on. "back to back": each call starts
as soon as the previous one returns; "paced": 10 ms apart, as calls between model turns are
(the fork server has then forked its spare children and they have confined themselves).
The machine's load is printed: on a busy machine the medians measure the scheduler.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable

import anyio

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

import sandbox_tools

from agentloop._exceptions import SandboxUnavailableError
from agentloop._sandbox import Limits, ProcessSandbox


async def measure(n: int, once: Callable[[], Awaitable[object]], pause: float = 0.0) -> list[float]:
    for _ in range(20):  # warm up: fork server started, tool imported, caches hot
        await once()
    times = []
    for _ in range(n):
        if pause:
            await anyio.sleep(pause)
        t0 = time.perf_counter()
        await once()
        times.append(time.perf_counter() - t0)
    return times


async def main(n: int) -> None:
    rows: list[tuple[str, ...]] = []

    async def thread_once() -> object:
        return await anyio.to_thread.run_sync(sandbox_tools.trivial)

    def row(mode: str, times: list[float]) -> None:
        p90 = statistics.quantiles(times, n=10)[-1]
        rows.append(
            (mode, f"{statistics.median(times) * 1e3:.2f}", f"{p90 * 1e3:.2f}", f"{min(times) * 1e3:.2f}")
        )

    row("thread", await measure(n, thread_once))
    limits = Limits(timeout=10, memory_mb=256, cpu_s=5)
    for mode, isolated in (("process", False), ("isolated", True)):
        sb = ProcessSandbox(isolated=isolated)
        try:
            sb.check_available()
        except SandboxUnavailableError as exc:
            rows.append((mode, "unavailable", str(exc)[:60], ""))
            continue
        async with sb:

            async def sandbox_once() -> object:
                # B023 does not apply: called only inside this iteration's `async with sb`
                out = await sb.call("sandbox_tools:trivial", {}, limits)  # noqa: B023
                assert out.status == "ok", out
                return out

            row(f"{mode}, back to back", await measure(n, sandbox_once))
            row(f"{mode}, paced", await measure(n, sandbox_once, pause=0.01))

    print(f"Per-call overhead, trivial tool, N={n}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}\n")
    load = os.getloadavg()[0]
    print(f"(1-min load average {load:.2f}: other processes on the machine inflate the figures)\n")
    print("| mode | median ms | p90 ms | min ms |")
    print("| --- | ---: | ---: | ---: |")
    for mode, *cells in rows:
        print(f"| {mode} | {' | '.join(cells)} |")


if __name__ == "__main__":
    anyio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 500)

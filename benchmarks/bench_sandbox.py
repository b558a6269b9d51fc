"""Per-call overhead of the tool execution modes (not a timed test).

    .venv/bin/python benchmarks/bench_sandbox.py [N] [--autogroup-nice -20]

Calls a trivial tool N times (default 500) per mode on a warm fork server, one call at a time,
and prints the median / p90 wall-clock time per call as a markdown table, with the CPU time per
call (less noisy than wall time on a busy machine): the host's, the fork server's and its
children's (the children's is counted as the fork server reaps them). "thread" is the
`anyio.to_thread.run_sync` baseline the "thread" mode builds on. "back to back": each call starts
as soon as the previous one returns; "paced": 10 ms apart, as calls between model turns are
(the fork server has then forked its spare children and they have confined themselves);
"2 scratch sizes" alternates scratch_mb 64 / 128, as two tools with their own limits do.
The machine's load is printed: on a busy machine the medians measure the scheduler.
`--autogroup-nice` (root) puts the benchmark's scheduler autogroups (its own session's and the
fork server's) at that nice level: the nearest a busy machine comes to a quiet one.
"""

from __future__ import annotations

import itertools
import os
import resource
import statistics
import sys
import time
from collections.abc import Awaitable, Callable

import anyio

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

import sandbox_tools

from agentloop._exceptions import SandboxUnavailableError
from agentloop._sandbox import Limits, ProcessSandbox


def _cpu(pid: int | None) -> tuple[float, float, float]:
    """CPU seconds so far: this process, process `pid` (the fork server), and its reaped children."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    if pid is None:
        return me.ru_utime + me.ru_stime, 0.0, 0.0
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    own, children = (int(fields[11]) + int(fields[12])) / tick, (int(fields[13]) + int(fields[14])) / tick
    return me.ru_utime + me.ru_stime, own, children


def _zygote(pid: int, isolated: bool) -> int | None:
    """The fork server's pid: the process started, or ("isolated") bubblewrap's child."""
    if not isolated:
        return pid
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return int(f.read().split()[0])
    except (OSError, IndexError, ValueError):
        return None


async def measure(
    n: int,
    once: Callable[[], Awaitable[object]],
    pause: float = 0.0,
    pid: Callable[[], int | None] = lambda: None,
) -> tuple[list[float], list[float]]:
    """Wall seconds of each call, and CPU seconds per call (host, fork server, children)."""
    for _ in range(20):  # warm up: fork server started, tool imported, caches hot
        await once()
    times = []
    before = _cpu(pid())
    for _ in range(n):
        if pause:
            await anyio.sleep(pause)
        t0 = time.perf_counter()
        await once()
        times.append(time.perf_counter() - t0)
    await anyio.sleep(0.2)  # the last children exit and are reaped
    return times, [(b - a) / n for a, b in zip(before, _cpu(pid()), strict=True)]


def _autogroup_nice(pid: int | None, nice: int | None) -> None:
    if pid is not None and nice is not None:
        with open(f"/proc/{pid}/autogroup", "w") as f:
            f.write(str(nice))


async def main(n: int, nice: int | None) -> None:
    _autogroup_nice(os.getpid(), nice)
    rows: list[tuple[str, ...]] = []

    async def thread_once() -> object:
        return await anyio.to_thread.run_sync(sandbox_tools.trivial)

    def row(mode: str, measured: tuple[list[float], list[float]]) -> None:
        times, cpu = measured
        p90 = statistics.quantiles(times, n=10)[-1]
        ms = [f"{statistics.median(times) * 1e3:.2f}", f"{p90 * 1e3:.2f}", f"{min(times) * 1e3:.2f}"]
        rows.append((mode, *ms, " / ".join(f"{c * 1e3:.2f}" for c in cpu) + f" = {sum(cpu) * 1e3:.2f}"))

    row("thread", await measure(n, thread_once))
    limits = Limits(timeout=10, memory_mb=256, cpu_s=5)
    for mode, isolated in (("process", False), ("isolated", True)):
        sb = ProcessSandbox(isolated=isolated)
        try:
            sb.check_available()
        except SandboxUnavailableError as exc:
            rows.append((mode, "unavailable", str(exc)[:60], "", ""))
            continue
        async with sb:

            async def sandbox_once() -> object:
                # B023 does not apply: called only inside this iteration's `async with sb`
                out = await sb.call("sandbox_tools:trivial", {}, limits)  # noqa: B023
                assert out.status == "ok", out
                return out

            def server_pid() -> int | None:
                server = sb._server  # noqa: B023 - as above
                return None if server is None else _zygote(server.popen.pid, isolated)  # noqa: B023

            await sandbox_once()  # the fork server runs (in a session, an autogroup, of its own)
            _autogroup_nice(server_pid(), nice)
            row(f"{mode}, back to back", await measure(n, sandbox_once, pid=server_pid))
            row(f"{mode}, paced", await measure(n, sandbox_once, pause=0.01, pid=server_pid))
            sizes = itertools.cycle(
                [Limits(timeout=10, memory_mb=256, cpu_s=5, scratch_mb=mb) for mb in (64, 128)]
            )

            async def mixed_once() -> object:  # two tools' limits: scratch sizes alternate
                out = await sb.call("sandbox_tools:trivial", {}, next(sizes))  # noqa: B023 - as above
                assert out.status == "ok", out
                return out

            row(f"{mode}, paced, 2 scratch sizes", await measure(n, mixed_once, pause=0.01, pid=server_pid))

    print(f"Per-call overhead, trivial tool, N={n}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}\n")
    load = os.getloadavg()
    print(
        f"(load average {load[0]:.2f} / {load[1]:.2f}: other processes on the machine inflate the figures)\n"
    )
    print("| mode | median ms | p90 ms | min ms | CPU ms per call: host / fork server / children = total |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for mode, *cells in rows:
        print(f"| {mode} | {' | '.join(cells)} |")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    nice = int(sys.argv[sys.argv.index("--autogroup-nice") + 1]) if "--autogroup-nice" in sys.argv else None
    if nice is not None:
        args = [a for a in args if a != str(nice)]
    anyio.run(main, int(args[0]) if args else 500, nice)

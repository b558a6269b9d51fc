"""Journal overhead per agent step: the same run with and without `SQLiteJournal`.

    .venv/bin/python benchmarks/bench_journal.py [--steps 200] [--repeat 5] [--backend asyncio|trio]

A step here is one model answer (ScriptedModel, in memory) with one instant tool call, so the
difference is what durability costs: 3 commits per step (the model answer, the tool's start,
its outcome), each in an anyio worker thread. Reported: median over `--repeat` runs of
(journaled - plain) / steps, for durability "normal" (survives kill -9) and "full" (fsync per
commit; survives power loss). Target: <= 1.5 ms per step for "normal".
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import anyio

from agentloop import Agent, SQLiteJournal, ToolRegistry
from agentloop._run.limits import RunLimits
from agentloop.testing import ScriptedModel, call, text, tool_calls


def make_agent(steps: int, journal: SQLiteJournal | None) -> Agent:
    tools = ToolRegistry()

    @tools.tool
    async def step(n: int) -> int:
        """One step."""
        return n

    script = [tool_calls(call("step", {"n": i})) for i in range(steps)] + [text("done")]
    limits = RunLimits(max_steps=steps + 1, loop_threshold=None)
    return Agent(client=ScriptedModel(script), tools=tools, journal=journal, limits=limits)


async def timed(steps: int, journal: SQLiteJournal | None, run_id: str) -> float:
    agent = make_agent(steps, journal)
    start = time.perf_counter()
    result = await agent.run("go", run_id=run_id)
    elapsed = time.perf_counter() - start
    assert result.output == "done" and result.steps == steps + 1
    return elapsed


async def bench(steps: int, repeat: int, folder: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    await timed(steps, None, "warmup")
    for durability in ("normal", "full"):
        journal = SQLiteJournal(folder / f"{durability}.db", durability=durability)  # type: ignore[arg-type]
        await timed(5, journal, f"warmup-{durability}")
        overheads = []
        for i in range(repeat):
            plain = await timed(steps, None, f"p{i}")
            durable = await timed(steps, journal, f"{durability}-{i}")
            overheads.append((durable - plain) / (steps + 1))
        journal.close()
        out[durability] = statistics.median(overheads)
    out["plain_step"] = (await timed(steps, None, "plain")) / (steps + 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        r = anyio.run(bench, args.steps, args.repeat, Path(d), backend=args.backend)
    print(f"backend={args.backend} steps={args.steps} repeat={args.repeat}")
    print(f"plain step (no journal):            {r['plain_step'] * 1e3:7.3f} ms")
    print(f"journal overhead, durability=normal: {r['normal'] * 1e3:7.3f} ms/step  (target <= 1.5 ms)")
    print(f"journal overhead, durability=full:   {r['full'] * 1e3:7.3f} ms/step")


if __name__ == "__main__":
    main()

"""A long-running worker: jobs in, durable agent runs, results out; a restart resumes where it stopped.

Jobs come from an anyio memory stream (`serve`) or from a directory of job files (`JobDir`):
`incoming/<id>.json` holds `{"id": ..., "prompt": ...}`; the result goes to `done/<id>.json`
(or `failed/<id>.json`), and only then is the job file removed. Every run is journaled in
SQLite under the job's id, so after a crash (or `kill -9`) the restarted worker finds the job
file still in `incoming/`, and `agent.resume(job_id)` continues the run: model answers already
journaled are not requested again and finished tool calls are not run again. A call that was
in flight is run again only if its tool is `idempotent=True`; otherwise the model is told its
outcome is unknown.

Offline (FLUX_API_KEY unset) the model is the built-in fake FluxRouter with a scripted handler.

    python examples/worker.py                     # a temporary job directory with 3 sample jobs
    python examples/worker.py jobs/               # your job directory (incoming/ done/ failed/)
    python examples/worker.py jobs/ --watch       # ... and keep polling it for new jobs

A job file that is not a JSON object with a "prompt" is reported on stderr, recorded in
`failed/<id>.json` with the reason, and removed; the other jobs run.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import ObjectReceiveStream, ObjectSendStream

from agentloop import (
    Agent,
    AgentloopError,
    FluxClient,
    RunNotFoundError,
    RunResult,
    SQLiteJournal,
    ToolRegistry,
)

tools = ToolRegistry()
_SAFE_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
STOCK = {"A-1": 3, "A-2": 1, "A-3": 5}  # stands in for your inventory system


@tools.tool
async def reserve_stock(order_id: str) -> dict:
    """Reserve the items of an order (a side effect: not idempotent, never run twice)."""
    STOCK[order_id] = STOCK.get(order_id, 0) - 1
    return {"order_id": order_id, "reserved": True, "left": STOCK[order_id]}


@tools.tool(idempotent=True)
async def create_label(order_id: str) -> dict:
    """Create the shipping label (idempotent: safe to run again after a crash)."""
    return {"order_id": order_id, "label": f"LBL-{order_id}"}


def scripted_model(request: Any) -> Any:
    """What a capable model does with a fulfilment job (used offline): reserve, label, report."""
    from agentloop.testing import call, text, tool_calls

    messages = request.json["messages"]
    order = re.search(r"[A-Z]-\d+", next(m["content"] for m in messages if m["role"] == "user")).group(0)
    answered = {m["tool_call_id"] for m in messages if m["role"] == "tool"}
    calls = [c for m in messages if m["role"] == "assistant" for c in m.get("tool_calls") or ()]
    done = {c["function"]["name"] for c in calls if c["id"] in answered}
    if "reserve_stock" not in done:
        return tool_calls(call("reserve_stock", {"order_id": order}))
    if "create_label" not in done:
        return tool_calls(call("create_label", {"order_id": order}))
    return text(f"Order {order}: stock reserved, label LBL-{order} created.")


# --- the worker -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Job:
    id: str  # also the run id in the journal: a job seen again resumes its run
    prompt: str


OnResult = Callable[[Job, "RunResult | BaseException"], Awaitable[None]]


async def process(agent: Agent, job: Job) -> RunResult:
    """Run a job durably: resume its journaled run if there is one, else start it."""
    if agent.journal is not None:
        try:
            return await agent.resume(job.id)  # a finished run is returned as it is
        except RunNotFoundError:
            pass  # a new job
    return await agent.run(job.prompt, run_id=job.id)


async def serve(
    agent: Agent, jobs: ObjectReceiveStream[Job], on_result: OnResult, *, concurrency: int = 4
) -> None:
    """Run jobs from `jobs` until the stream closes, at most `concurrency` at once.

    A job's failure (a limit, the router down) is handed to `on_result` and never stops the
    worker; cancelling `serve` cancels the runs in flight, whose journals keep their progress.
    """
    limiter = anyio.CapacityLimiter(concurrency)

    async def one(job: Job) -> None:
        try:
            try:
                outcome: RunResult | BaseException = await process(agent, job)
            except AgentloopError as e:
                outcome = e
            await on_result(job, outcome)
        finally:
            limiter.release_on_behalf_of(job)

    async with anyio.create_task_group() as tg, jobs:
        async for job in jobs:
            await limiter.acquire_on_behalf_of(job)  # backpressure: read no more jobs than can run
            tg.start_soon(one, job)


class JobDir:
    """A directory as a job queue: `incoming/`, `done/`, `failed/` (one JSON file per job)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        for sub in ("incoming", "done", "failed"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def submit(self, job: Job) -> None:
        if not _SAFE_ID.fullmatch(job.id):  # the id names files: no paths, no surprises
            raise ValueError(f"job ids are letters, digits, '.', '_' and '-'; got {job.id!r}")
        _write_json(self.root / "incoming" / f"{job.id}.json", {"id": job.id, "prompt": job.prompt})

    def pending(self) -> list[Job]:
        """The valid waiting jobs; a job file that is not one is moved aside (see `_reject`)."""
        jobs = []
        for path in sorted((self.root / "incoming").glob("*.json")):
            try:
                prompt = _prompt(path)
            except (ValueError, OSError) as e:  # JSONDecodeError is a ValueError
                self._reject(path, e)
                continue
            jobs.append(Job(path.stem, prompt))  # the file name is the id
        return jobs

    def _reject(self, path: Path, error: BaseException) -> None:
        """One bad job file must not stop the others: report it, record why in `failed/`, remove it."""
        reason = f"{type(error).__name__}: {error}"
        print(f"worker: skipped job file {path.name}: {reason}", file=sys.stderr)
        try:
            raw = path.read_text(encoding="utf-8", errors="replace")[:2000]
        except OSError:
            raw = ""
        data = {"id": path.stem, "error": "InvalidJob", "message": reason, "job_file": raw}
        _write_json(self.root / "failed" / f"{path.stem}.json", data)
        path.unlink(missing_ok=True)

    async def feed(self, send: ObjectSendStream[Job], *, watch: bool = False, poll_s: float = 1.0) -> None:
        """Send the waiting jobs (those left over from a crash included); with `watch`, keep polling."""
        seen: set[str] = set()
        async with send:
            while True:
                for job in self.pending():
                    if job.id not in seen:
                        seen.add(job.id)
                        await send.send(job)
                if not watch:
                    return
                await anyio.sleep(poll_s)  # a directory has no change notification that works everywhere

    async def record(self, job: Job, outcome: RunResult | BaseException) -> None:
        """Write the result (the durable record of the job), then remove the job file."""
        if isinstance(outcome, RunResult):
            data = {
                "id": job.id,
                "output": outcome.output,
                "stop_reason": outcome.stop_reason,
                "steps": outcome.steps,
                "tool_calls": [{"name": r.name, "status": r.status} for r in outcome.tool_calls],
            }
            _write_json(self.root / "done" / f"{job.id}.json", data)
        else:
            data = {"id": job.id, "error": type(outcome).__name__, "message": str(outcome)}
            _write_json(self.root / "failed" / f"{job.id}.json", data)
        (self.root / "incoming" / f"{job.id}.json").unlink(missing_ok=True)


def _prompt(path: Path) -> str:
    data = json.loads(path.read_text(encoding="utf-8"))
    prompt = data.get("prompt") if isinstance(data, dict) else None
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError('a job file is a JSON object with a non-empty "prompt" string')
    return prompt


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1))
    os.replace(tmp, path)  # atomic: a reader (or a restart) never sees half a file


async def run_worker(agent: Agent, job_dir: JobDir, *, watch: bool = False, concurrency: int = 4) -> None:
    send, receive = anyio.create_memory_object_stream[Job](0)
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: job_dir.feed(send, watch=watch))
        await serve(agent, receive, job_dir.record, concurrency=concurrency)


async def main(root: str | None = None, *, watch: bool = False) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        job_dir = JobDir(root or tmp)
        if root is None:
            for order in ("A-1", "A-2", "A-3"):
                job_dir.submit(Job(f"job-{order}", f"Fulfil order {order}."))
        async with AsyncExitStack() as stack:
            if os.environ.get("FLUX_API_KEY"):
                client = await stack.enter_async_context(FluxClient())
            else:
                from agentloop.testing import FakeFluxRouter

                router = await stack.enter_async_context(FakeFluxRouter(scripted_model))
                client = await stack.enter_async_context(
                    FluxClient(base_url=router.base_url, api_key="offline")
                )
            journal = SQLiteJournal(job_dir.root / "runs.db")
            stack.callback(journal.close)
            agent = Agent(client=client, tools=tools, journal=journal, max_steps=6)
            await run_worker(agent, job_dir, watch=watch)
        results = [json.loads(p.read_text()) for p in sorted((job_dir.root / "done").glob("*.json"))]
    for r in results:
        print(f"{r['id']}: {r['output']}")
    return results


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--watch"]
    anyio.run(lambda: main(args[0] if args else None, watch="--watch" in sys.argv))

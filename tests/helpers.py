"""Helpers shared by several test files: one place, so a fix or a change of API lands once.

Everything here goes through the public API (`agentloop.cli.main` is what the `agentloop` command runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any, TextIO

import anyio.abc
import anyio.from_thread
import anyio.lowlevel
import sniffio
from hypothesis import settings

from agentloop import RunResult, ToolRegistry
from agentloop.cli import main as cli_main


def cli(argv: Sequence[str], *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """`agentloop <argv>` in-process, as the user types it; `out` / `err` catch what it prints."""
    with contextlib.ExitStack() as stack:
        if out is not None:
            stack.enter_context(contextlib.redirect_stdout(out))
        if err is not None:
            stack.enter_context(contextlib.redirect_stderr(err))
        return cli_main(list(argv))


def runs_main(argv: Sequence[str], *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """`agentloop runs <argv>`."""
    return cli(["runs", *argv], out=out, err=err)


def ui_main(argv: Sequence[str], *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """`agentloop ui <argv>`."""
    return cli(["ui", *argv], out=out, err=err)


async def all_tasks_blocked() -> None:
    """`anyio.wait_all_tasks_blocked()` without its naps on asyncio: there anyio sleeps 0.1 s each
    time it finds a task not yet waiting (trio's scheduler knows at once), so a test settling a few
    times per step spent seconds asleep (the pool-fairness property: 10 s on asyncio, 1 s on trio).
    The same check (every other task waits on a pending future), polled at each loop iteration."""
    if sniffio.current_async_library() != "asyncio":
        await anyio.wait_all_tasks_blocked()
        return
    await anyio.lowlevel.checkpoint()
    me = asyncio.current_task()
    while not all(_waits(task) for task in asyncio.all_tasks() if task is not me):
        await anyio.lowlevel.checkpoint()  # one turn of the loop: ready tasks run, sockets are read


def _waits(task: asyncio.Task[Any]) -> bool:
    waiter = task._fut_waiter  # type: ignore[attr-defined]  # what anyio reads too
    return waiter is not None and not waiter.done()


def examples(n: int) -> int:
    """A property test's example count: `n`, its smoke size, under the suite's hypothesis profile;
    scaled with the loaded profile's `max_examples` (2,000 under `--hypothesis-profile=fuzz`: 20n)."""
    return n * max(1, settings.default.max_examples // 100)


__all__ = [
    "all_tasks_blocked",
    "assert_valid_conversation",
    "cli",
    "examples",
    "runs",
    "runs_main",
    "step_tools",
    "ui_main",
]

_PF_EXITING = 0x4  # /proc/<pid>/stat flags: the process is in exit()


def runs(pid: int) -> bool:
    """Whether process `pid` may still run an instruction of its own: it exists, is neither a
    zombie nor exiting, and has no SIGKILL pending (SIGKILL cannot be blocked, caught or outlived).
    The sandbox kills every process of a call before it sends the call's outcome; the kernel's
    teardown of the dying processes and their reaping may finish a moment later.

    Exiting is read from the PF_EXITING flag and, where /proc shows kernel stacks (root), from a
    `do_exit` frame: a process that called exit itself (the call's child, right after "done")
    has a moment in the kernel after it committed to exit and before PF_EXITING, in which the
    kernel drops a SIGKILL sent to it (nothing is left pending); it never returns from there."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read().rsplit(")", 1)[1].split()
        with open(f"/proc/{pid}/status") as f:
            status = dict(line.split(":", 1) for line in f if ":" in line)
    except (FileNotFoundError, ProcessLookupError):
        return False
    if stat[0] in ("Z", "X") or int(stat[6]) & _PF_EXITING:
        return False
    pending = int(status["ShdPnd"], 16) | int(status["SigPnd"], 16)
    if pending >> (signal.SIGKILL - 1) & 1:
        return False
    return not _in_do_exit(pid)


def _in_do_exit(pid: int) -> bool:
    """Whether the kernel stack of `pid` is inside do_exit (False where it cannot be read)."""
    try:
        with open(f"/proc/{pid}/stack") as f:
            return any(
                frame.split()[-1].startswith(("do_exit+", "do_group_exit+")) for frame in f if frame.split()
            )
    except OSError:
        return False


def assert_valid_conversation(conversation: RunResult | list[dict[str, Any]]) -> None:
    """Every assistant tool call is answered by exactly one tool message, right after its assistant
    message and in the model's order; no tool message answers nothing. Given a RunResult, its call
    records also have distinct ids."""
    if isinstance(conversation, RunResult):
        assert len({r.id for r in conversation.tool_calls}) == len(conversation.tool_calls)
        conversation = conversation.messages
    messages = conversation
    for i, m in enumerate(messages):
        if m["role"] == "assistant" and m.get("tool_calls"):
            ids = [c["id"] for c in m["tool_calls"]]
            answers = [x.get("tool_call_id") for x in messages[i + 1 : i + 1 + len(ids)]]
            assert answers == ids, (ids, answers)
            after = messages[i + 1 + len(ids) : i + 2 + len(ids)]
            assert not after or after[0]["role"] != "tool", f"a tool message answers nothing: {after[0]}"


def step_tools() -> tuple[ToolRegistry, list[str]]:
    """The tools the step-rule tests drive: `lookup`, `read` (idempotent) and `send` (needs
    approval); the list records, in order, what each actually ran."""
    tools = ToolRegistry()
    ran: list[str] = []

    @tools.tool
    async def lookup(key: str) -> str:
        """Look a key up."""
        ran.append(key)
        return f"value of {key}"

    @tools.tool(idempotent=True)
    async def read(key: str) -> str:
        """Read a key (safe to run twice)."""
        ran.append(f"read {key}")
        return f"read {key}"

    @tools.tool(requires_approval=True)
    async def send(to: str) -> str:
        """Send something (needs a human's yes)."""
        ran.append(f"send {to}")
        return f"sent to {to}"

    return tools, ran


def registry_for(annotation: Any, got: list[Any]) -> ToolRegistry:
    """A registry of one thread tool `f(x: annotation)` that appends every `x` it gets to `got`."""

    def f(x: Any) -> str:
        got.append(x)
        return "ok"

    f.__annotations__ = {"x": annotation}
    tools = ToolRegistry()
    tools.register(f, sandbox="thread")
    return tools


@contextlib.contextmanager
def serving_in_thread(serve: Callable[..., Awaitable[Any]]) -> Iterator[None]:
    """`serve` (a server's `serve(task_status=...)`) running in a thread of its own, on its own
    asyncio loop, for the duration of the block (so its writes are not paced by the client's)."""
    with anyio.from_thread.start_blocking_portal("asyncio") as portal:
        future, _ = portal.start_task(serve)
        try:
            yield
        finally:
            future.cancel()


class LoopbackServer:
    """A TCP server on 127.0.0.1 (a free port) whose every connection `_connection` handles; `url`
    is its `/v1` root once `serve` has started (run it with `serving_in_thread(server.serve)`)."""

    url = ""

    async def serve(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        self.url = f"http://127.0.0.1:{listener.extra(anyio.abc.SocketAttribute.local_port)}/v1"
        task_status.started()
        await listener.serve(self._connection)

    async def _connection(self, stream: anyio.abc.SocketStream) -> None:
        raise NotImplementedError


@contextlib.asynccontextmanager
async def journaled_client(
    script: Any, wire: str, db: str | os.PathLike[str]
) -> AsyncIterator[tuple[Any, Any]]:
    """A `FluxClient` on `wire` ("openai" / "anthropic") against a `FakeFluxRouter(script)`, and
    a `SQLiteJournal` at `db`, closed after."""
    from agentloop import FluxClient, SQLiteJournal  # FluxClient imports httpx: only when used
    from agentloop.testing import FakeFluxRouter

    journal = SQLiteJournal(db)
    try:
        async with FakeFluxRouter(script) as router:
            base = router.anthropic_url if wire == "anthropic" else router.base_url
            async with FluxClient(base_url=base, api_key="k") as client:
                yield client, journal
    finally:
        journal.close()

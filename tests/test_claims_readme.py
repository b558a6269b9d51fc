"""README / docs claims ("never", "always", ...) that had no test trying to make them false.

Each test names the sentence it attacks. Through the public API, with hostile input where there
is any; the model is a ScriptedModel (no HTTP needed for these claims) or the fake router.
"""

from __future__ import annotations

import ast
import copy
import logging
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentloop import Agent, RunContext, SQLiteJournal, ToolRegistry
from agentloop.testing import ScriptedModel, call, text, tool_calls

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parent.parent


async def test_a_thread_tool_never_blocks_the_event_loop() -> None:
    # README: "`"thread"` | a `def` in a worker thread: never blocks the loop". The thread tool
    # waits for an event only its inline sibling of the same step can set: if the blocking wait
    # held the loop, the sibling could never run and the wait would end unset.
    released = threading.Event()
    tools = ToolRegistry()

    @tools.tool
    def blocking() -> bool:
        return released.wait(timeout=60)

    @tools.tool
    async def releaser() -> str:
        released.set()
        return "set"

    model = ScriptedModel([tool_calls(call("blocking", {}), call("releaser", {})), text("done")])
    result = await Agent(client=model, tools=tools).run("go")
    assert [(r.name, r.status, r.content) for r in result.tool_calls] == [
        ("blocking", "ok", "true"),
        ("releaser", "ok", "set"),
    ]


def test_sandboxed_tool_error_is_never_raised_by_agentloop() -> None:
    # README's error tree: "SandboxedToolError  never raised: what format_tool_error gets".
    raised = []
    for path in (ROOT / "agentloop").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) and node.exc is not None:
                target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
                if isinstance(target, ast.Name) and target.id == "SandboxedToolError":
                    raised.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert raised == []


def _logging_state() -> tuple[Any, ...]:
    root, own = logging.getLogger(), logging.getLogger("agentloop")
    import structlog

    return (
        list(root.handlers),
        root.level,
        list(own.handlers),
        own.level,
        own.propagate,
        own.disabled,
        structlog.is_configured(),
    )


async def test_agentloop_never_configures_logging_itself() -> None:
    # README: "agentloop logs with structlog and never configures logging itself". A run that
    # logs (a raising tool is logged at WARNING) leaves the stdlib and structlog set-up as it was.
    before = _logging_state()
    tools = ToolRegistry()

    @tools.tool
    def broken() -> None:
        raise ValueError("boom")

    model = ScriptedModel([tool_calls(call("broken", {})), text("done")])
    result = await Agent(client=model, tools=tools).run("go")
    assert result.tool_calls[0].status == "raised"
    assert _logging_state() == before


MARKER = "deps-secret-4f1c9a-never-journaled"


class Deps:
    def __init__(self) -> None:
        self.token = MARKER

    def __repr__(self) -> str:  # a careless repr would put it in any journaled text
        return f"Deps(token={self.token!r})"


async def test_deps_are_never_journaled(tmp_path: Path) -> None:
    # README: "`deps` is never journaled: pass it again to `resume(..., deps=...)`". The deps'
    # repr holds a marker; no byte of the journal's files may hold it after a run that used them.
    tools = ToolRegistry()

    @tools.tool
    async def whoami(ctx: RunContext[Deps]) -> str:
        return "a user"  # the tool reads deps but does not return them

    model = ScriptedModel([tool_calls(call("whoami", {})), text("done")])
    journal = SQLiteJournal(tmp_path / "runs.db")
    agent = Agent[Deps, str](client=model, tools=tools, deps_type=Deps, journal=journal)
    result = await agent.run("who am I?", deps=Deps(), run_id="r1")
    assert result.output == "done"
    files = list(tmp_path.iterdir())
    assert files
    for f in files:
        assert MARKER.encode() not in f.read_bytes(), f.name


@pytest.mark.parametrize("exc", [ValueError("x"), RuntimeError("x"), RecursionError("x"), SystemExit(3)])
@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_an_observer_that_raises_never_breaks_the_run(exc: BaseException, kind: str) -> None:
    # docs/concepts.md: "An observer that raises is logged and ignored: telemetry never breaks a
    # run." An observer calling sys.exit (a library's CLI helper, say) is an observer that raises.
    def sync_observer(event: Any) -> None:
        raise exc

    async def async_observer(event: Any) -> None:
        raise exc

    observer = sync_observer if kind == "sync" else async_observer
    seen: list[str] = []
    model = ScriptedModel([text("done")])
    agent = Agent(client=model, observers=[observer, lambda e: seen.append(type(e).__name__)])
    result = await agent.run("hi")
    assert result.output == "done"
    assert seen[0] == "RunStarted" and seen[-1] == "RunFinished"


_ids = st.sampled_from(["", "call_1", "call_1", "bad id with spaces", "x" * 300, "\x00", "ok_2"])


@settings(
    max_examples=examples(20), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ids=st.lists(_ids, min_size=1, max_size=4), user=st.text(max_size=30))
def test_run_never_mutates_the_callers_messages(anyio_backend: str, ids: list[str], user: str) -> None:
    # README: "`run(messages=...)` never mutates the caller's list". The list holds a tool-call
    # conversation whose ids need repair (empty, duplicated, unsafe): repair must not happen in
    # the caller's dicts either.
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": user or "hi"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": i, "type": "function", "function": {"name": "t", "arguments": "{}"}} for i in ids
            ],
        },
        *({"role": "tool", "tool_call_id": i, "content": "r"} for i in ids),
    ]
    before = copy.deepcopy(messages)
    tools = ToolRegistry()

    @tools.tool
    def t() -> str:
        return "r"

    agent = Agent(client=ScriptedModel([text("done")]), tools=tools)

    async def main() -> None:
        try:
            await agent.run("next", messages=messages)
        except ValueError:  # a ConversationError is a fair answer to a broken conversation
            pass

    anyio.run(main, backend=anyio_backend)
    assert messages == before

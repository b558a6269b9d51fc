"""Every executor through `Agent.run`, and executors that break the `ToolExecutor` contract (issue #16).

A tool runs in one of four ways: "inline" (awaited on the loop), "thread", "process" (a forked
child), or `sandbox=<a ToolExecutor>` of the caller's (Temporal's activity box is one). Each ends
the call in exactly one outcome whose text the dispatcher writes. An executor of the caller's may
raise, return garbage, or never return: the call ends as "crashed" with a text for the model, or
the run's deadline raises its typed error; the host never crashes and sibling calls are unharmed.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
import sandbox_tools as st
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from agentloop import (
    Agent,
    ConfigurationError,
    InputBudget,
    Limits,
    RunContext,
    RunLimits,
    SandboxedToolError,
    SandboxUnavailableError,
    TimeLimitExceeded,
    ToolDefinitionError,
    ToolRegistry,
    build_tool,
    default_error_formatter,
    import_ref,
    normalize_message,
    run_tool_call,
)
from agentloop.abc import ToolExecutor, ToolOutcome
from agentloop.testing import ScriptedModel, call, text, tool_calls

pytestmark = pytest.mark.anyio


async def add(a: int, b: int) -> int:
    return a + b


def echo_fn(text: str, n: int = 1) -> dict[str, Any]:  # a stand-in: the executors below never call it
    raise AssertionError("run by its executor, never here")


_ECHO = object()


class Recording:
    """An executor of the caller's: echoes (or gives `answer`), and records what it was given."""

    def __init__(self, answer: Any = _ECHO) -> None:
        self.calls: list[tuple[str, dict[str, Any], Limits]] = []
        self.answer = answer

    async def call(self, ref: str, arguments: dict[str, Any], limits: Limits) -> Any:
        self.calls.append((ref, arguments, limits))
        if self.answer is not _ECHO:
            return self.answer
        return ToolOutcome("ok", f"{arguments['text'] * arguments.get('n', 1)}")


async def run_one(
    tools: ToolRegistry | list[Any], arguments: dict[str, Any], name: str = "echo", **kw: Any
) -> Any:
    model = ScriptedModel([tool_calls(call(name, arguments, id="c1")), text("done")])
    result = await Agent(client=model, tools=tools, **kw).run("go")
    return result, model


# --- one test per executor, through Agent.run -----------------------------------------------------


async def test_inline_executor() -> None:
    tools = ToolRegistry()
    tools.register(add, name="echo")
    result, model = await run_one(tools, {"a": 2, "b": 3})
    record = result.tool_calls[0]
    assert (record.status, record.content) == ("ok", "5")
    assert tools["echo"].sandbox == "inline" and tools["echo"].executor is None
    assert model.requests[1]["messages"][-1]["content"] == "5"


async def test_thread_executor() -> None:
    tools = ToolRegistry()
    tools.register(st.echo, name="echo")
    result, _ = await run_one(tools, {"text": "ab", "n": 2})
    record = result.tool_calls[0]
    assert record.status == "ok" and '"text":"abab"' in record.content
    assert tools["echo"].sandbox == "thread"


async def test_process_executor() -> None:
    async with ToolRegistry(limits=Limits(timeout=30)) as tools:
        tool = tools.register(st.echo, name="echo", sandbox="process")
        result, _ = await run_one(tools, {"text": "ab", "n": 2})
        assert tool.executor is tools.sandbox_for("process")  # the registry's fork server runs it
        assert isinstance(tool.executor, ToolExecutor)
    record = result.tool_calls[0]
    assert record.status == "ok" and '"pid_is_child":true' in record.content


async def test_isolated_executor() -> None:
    tools = ToolRegistry(limits=Limits(timeout=30))
    try:
        tools.register(st.echo, name="echo", sandbox="isolated")
    except SandboxUnavailableError as e:  # refused at registration, with the reason, never mid-run
        pytest.skip(f"isolated unavailable here: {e}")
    async with tools:
        result, _ = await run_one(tools, {"text": "x"})
    assert result.tool_calls[0].status == "ok"


async def test_an_executor_of_the_callers_gets_the_name_the_validated_arguments_and_the_limits() -> None:
    box = Recording()
    tools = ToolRegistry(limits=Limits(timeout=9))
    tool = tools.register(st.echo, name="echo", sandbox=box, limits=Limits(memory_mb=64))
    result, model = await run_one(tools, {"text": "ab", "n": 2})
    assert (result.tool_calls[0].status, result.tool_calls[0].content) == ("ok", "abab")
    [(ref, arguments, limits)] = box.calls
    assert ref == "echo" and arguments == {"text": "ab", "n": 2}
    assert (limits.timeout, limits.memory_mb) == (9, 64)  # the registry's defaults, merged
    assert tool.sandbox == "process" and tools.sandbox_for("process", "echo") is box
    assert model.requests[1]["messages"][-1]["content"] == "abab"


async def test_invalid_arguments_never_reach_an_executor() -> None:
    box = Recording()
    tool = build_tool(st.echo, name="echo", sandbox=box)
    result, _ = await run_one([tool], {"text": 3})
    assert result.tool_calls[0].status == "invalid_arguments" and box.calls == []


# --- the outcome an executor returns: the dispatcher writes the model's text ----------------------


async def test_a_raised_outcome_goes_through_format_tool_error() -> None:
    seen: list[BaseException] = []

    def formatter(name: str, exc: BaseException) -> str:
        seen.append(exc)
        return f"{name}: try again later"

    original = KeyError("k")
    box = Recording(ToolOutcome("raised", error="KeyError", exception=original, traceback="tb text"))
    result, _ = await run_one(
        [build_tool(st.echo, name="echo", sandbox=box)], {"text": "x"}, format_tool_error=formatter
    )
    record = result.tool_calls[0]
    assert (record.status, record.content, record.traceback) == ("raised", "echo: try again later", "tb text")
    assert seen == [original]


async def test_a_raised_outcome_without_an_exception_gets_a_stand_in() -> None:
    box = Recording(ToolOutcome("raised", "disk on fire", "OSError", traceback="Traceback ..."))
    result, _ = await run_one([build_tool(st.echo, name="echo", sandbox=box)], {"text": "x"})
    assert result.tool_calls[0].content == "Tool 'echo' raised OSError: disk on fire"
    assert result.tool_calls[0].traceback == "Traceback ..."


async def test_failure_texts_name_the_tool_and_ok_text_is_kept() -> None:
    box = Recording(ToolOutcome("timeout", "Tool timed out after 3 s and was killed", "timeout"))
    result, _ = await run_one([build_tool(st.echo, name="echo", sandbox=box)], {"text": "x"})
    assert result.tool_calls[0].status == "timeout"
    assert result.tool_calls[0].content == "Tool 'echo' timed out after 3 s and was killed"


async def test_a_final_outcome_is_kept_as_written() -> None:
    box = Recording(
        ToolOutcome(
            "raised", "Tool 'echo' raised ValueError, written on the worker", "ValueError", final=True
        )
    )
    result, _ = await run_one([build_tool(st.echo, name="echo", sandbox=box)], {"text": "x"})
    assert result.tool_calls[0].content == "Tool 'echo' raised ValueError, written on the worker"


# --- hostile executors ----------------------------------------------------------------------------


class Raising:
    async def call(self, ref: str, arguments: dict[str, Any], limits: Limits) -> ToolOutcome:
        raise RuntimeError("the executor's own bug, with a secret /srv/key")


class Forever:
    def __init__(self) -> None:
        self.cancelled = False

    async def call(self, ref: str, arguments: dict[str, Any], limits: Limits) -> ToolOutcome:
        try:
            await anyio.Event().wait()
        except anyio.get_cancelled_exc_class():
            self.cancelled = True
            raise
        raise AssertionError("unreachable")


async def test_an_executor_that_raises_ends_the_call_as_crashed_and_the_run_goes_on() -> None:
    tools = ToolRegistry()
    tools.register(st.echo, name="echo", sandbox=Raising())
    tools.register(add)
    model = ScriptedModel(
        [tool_calls(call("echo", {"text": "x"}), call("add", {"a": 1, "b": 2})), text("done")]
    )
    result = await Agent(client=model, tools=tools).run("go")
    bad, good = result.tool_calls
    assert bad.status == "crashed" and bad.error == "RuntimeError"
    assert bad.content == "Tool 'echo' could not be run: its executor raised RuntimeError."
    assert "secret" not in bad.content  # the executor's message is for the log, not the model
    assert bad.traceback is not None and "the executor's own bug" in bad.traceback
    assert (good.status, good.content) == ("ok", "3")
    assert result.output == "done"


class Odd:
    status = "ok"
    content = 12  # not a str


GARBAGE = [
    None,
    42,
    "ok",
    {"status": "ok", "content": "x"},
    Odd(),
    ToolOutcome("nonsense", "x"),
    ToolOutcome("ok", None),
]  # type: ignore[arg-type]


@pytest.mark.parametrize("garbage", GARBAGE, ids=lambda g: type(g).__name__)
async def test_an_executor_that_returns_garbage_ends_the_call_as_crashed(garbage: Any) -> None:
    result, model = await run_one(
        [build_tool(st.echo, name="echo", sandbox=Recording(garbage))], {"text": "x"}
    )
    record = result.tool_calls[0]
    assert record.status == "crashed" and record.error == "executor"
    assert record.content.startswith("Tool 'echo' could not be run: its executor returned a ")
    assert model.requests[1]["messages"][-1]["content"] == record.content
    assert result.output == "done"


async def test_an_executor_that_never_returns_is_stopped_by_the_runs_deadline() -> None:
    box = Forever()
    tools = [build_tool(st.echo, name="echo", sandbox=box)]
    with anyio.fail_after(30):  # the guard of the test itself, far above the run's limit
        with pytest.raises(TimeLimitExceeded) as caught:
            await run_one(tools, {"text": "x"}, limits=RunLimits(timeout=0.05))
    assert box.cancelled  # the executor saw the cancellation: it can stop what it started
    partial = caught.value.result
    assert partial is not None and [r.status for r in partial.tool_calls] == ["cancelled"]


async def test_an_executors_error_text_is_bounded_by_the_budget() -> None:
    box = Recording(ToolOutcome("crashed", "Tool died: " + "x" * 50_000, "signal"))
    budget = InputBudget(max_error_bytes=1000)
    result, _ = await run_one(
        [build_tool(st.echo, name="echo", sandbox=box)], {"text": "x"}, input_budget=budget
    )
    content = result.tool_calls[0].content
    assert len(content.encode()) <= 1000 and "[error text truncated:" in content


async def test_an_ok_text_with_lone_surrogates_is_made_sendable() -> None:
    box = Recording(ToolOutcome("ok", "half \ud800 a pair"))
    result, model = await run_one([build_tool(st.echo, name="echo", sandbox=box)], {"text": "x"})
    assert result.tool_calls[0].content == "half \ufffd a pair"
    model.requests[1]["messages"][-1]["content"].encode("utf-8")  # sendable


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    answer=hs.one_of(
        hs.none(),
        hs.integers(),
        hs.text(),
        hs.dictionaries(hs.text(max_size=5), hs.text(max_size=5), max_size=3),
        hs.builds(
            ToolOutcome,
            status=hs.sampled_from(["ok", "raised", "timeout", "crashed", "memory", "bogus"]),
            content=hs.one_of(hs.text(max_size=200), hs.none(), hs.integers()),
            error=hs.one_of(hs.none(), hs.text(max_size=20), hs.integers()),
            traceback=hs.one_of(hs.none(), hs.text(max_size=50), hs.integers()),
            exception=hs.one_of(hs.none(), hs.just(ValueError("v")), hs.integers()),
            final=hs.booleans(),
        ),
    )
)
def test_whatever_an_executor_returns_the_call_ends_in_one_sendable_outcome(
    backend: str, answer: Any
) -> None:
    async def main() -> None:
        budget = InputBudget(max_error_bytes=300)
        tool = build_tool(st.echo, name="echo", sandbox=Recording(answer))
        result, model = await run_one([tool], {"text": "x"}, input_budget=budget)
        [record] = result.tool_calls
        assert isinstance(record.content, str)
        record.content.encode("utf-8")
        if record.status != "ok":
            assert len(record.content.encode()) <= 300
        assert record.traceback is None or isinstance(record.traceback, str)
        assert model.requests[1]["messages"][-1]["content"] == record.content
        assert result.output == "done"

    anyio.run(main, backend=backend)


# --- build_tool and the registry --------------------------------------------------------------------


async def test_build_tool_makes_a_tool_an_agent_takes() -> None:
    tool = build_tool(add, name="echo", description="Add.", idempotent=True)
    assert tool.definition["function"] == {
        "name": "echo",
        "parameters": tool.parameters,
        "description": "Add.",
    }
    result, _ = await run_one([tool], {"a": 1, "b": 1})
    assert result.tool_calls[0].content == "2"


def test_build_tool_refuses_what_would_fail_later() -> None:
    with pytest.raises(ToolDefinitionError, match=r"register it with ToolRegistry\.register"):
        build_tool(st.echo, sandbox="process")  # the fork server belongs to a registry
    with pytest.raises(ToolDefinitionError, match="or a ToolExecutor"):
        build_tool(st.echo, sandbox=object())  # type: ignore[arg-type]

    def needs_context(ctx: RunContext[Any], x: int) -> int:
        return x

    with pytest.raises(ToolDefinitionError, match="RunContext"):
        build_tool(needs_context, sandbox=Recording())


def test_a_tool_included_from_another_registry_keeps_its_executor() -> None:
    box = Recording()
    other = ToolRegistry()
    other.register(st.echo, name="echo", sandbox=box)
    mine = ToolRegistry()
    mine.include(other)
    assert mine.sandbox_for("process", "echo") is box


def test_registry_limits_are_the_defaults_of_its_tools() -> None:
    tools = ToolRegistry(limits=Limits(timeout=7))
    assert tools.limits == Limits(timeout=7)
    assert tools.register(add).limits.timeout == 7


# --- the public names the integrations use ----------------------------------------------------------


async def test_run_tool_call_runs_one_call_as_a_run_would() -> None:
    tools = ToolRegistry()
    tools.register(st.boom, name="boom")
    record = await run_tool_call(
        tools, "boom", {"message": "no disk"}, run_id="r1", format_tool_error=lambda n, e: f"{n}! {e}"
    )
    assert (record.status, record.content, record.raw_arguments) == (
        "raised",
        "boom! no disk",
        '{"message":"no disk"}',
    )
    assert record.traceback is not None and "ValueError: no disk" in record.traceback
    unknown = await run_tool_call(tools, "nope", "{}")
    assert unknown.status == "unknown_tool" and "boom" in unknown.content
    bad = await run_tool_call(tools, "boom", '{"message": ')
    assert bad.status == "invalid_arguments"


async def test_run_tool_call_hands_a_context_tool_its_deps_and_the_calls_own_facts() -> None:
    # The Temporal worker's tool activity: JSON deps from the workflow, the model's call id and step.

    tools = ToolRegistry()

    @tools.tool
    async def whoami(ctx: RunContext[dict[str, str]], greeting: str) -> str:
        return f"{greeting} {ctx.deps['user']} {ctx.run_id} {ctx.step} {ctx.tool_call_id} {ctx.tool_name}"

    record = await run_tool_call(
        tools, "whoami", {"greeting": "hi"}, run_id="r1", step=3, call_id="c7", deps={"user": "ann"}
    )
    assert (record.status, record.content) == ("ok", "hi ann r1 3 c7 whoami")
    without = await run_tool_call(tools, "whoami", {"greeting": "hi"})
    assert without.status == "raised" and "TypeError" in without.content  # deps None: the tool's own error


def test_default_error_formatter_is_what_the_model_reads_by_default() -> None:
    assert default_error_formatter("t", ValueError("x")) == "Tool 't' raised ValueError: x"
    stand_in = SandboxedToolError("KeyError", "'k'", "tb")
    assert default_error_formatter("t", stand_in) == "Tool 't' raised KeyError: 'k'"


def test_import_ref_resolves_module_attribute_references() -> None:
    assert import_ref("sandbox_tools:echo") is st.echo
    assert import_ref("agentloop:ToolRegistry.register") is ToolRegistry.register
    for bad in ("sandbox_tools", "sandbox_tools:nope", "no_such_module_xyz:x", ":x"):
        with pytest.raises(ConfigurationError, match=r"module:attribute|cannot load"):
            import_ref(bad, what="tool")


def test_normalize_message_gives_the_canonical_assistant_message() -> None:
    raw = {
        "role": "assistant",
        "content": [{"type": "text", "text": "hi"}],
        "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": {"a": 1}}}],
        "extra": "dropped",
    }
    message = normalize_message(raw)
    assert message["content"] == "hi" and "extra" not in message
    assert message["tool_calls"][0]["function"] == {"name": "f", "arguments": '{"a":1}'}

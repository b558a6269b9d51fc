"""Per-run options and run metadata (issue 17, part 5): run_sync, per-run model / settings /
instructions, dynamic instructions, all_messages / new_messages and the JSON round trip of a
conversation, Usage with requests, cache tokens and the split by model. Over the real-HTTP fake
router on both wires, through run and stream, on asyncio and trio."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import warm_fork
from helpers import examples
from hypothesis import given, settings
from hypothesis import strategies as st
from wirehelp import WIRES, make_client, run_or_stream, system_text

from agentloop import (
    Agent,
    ConfigurationError,
    ConversationError,
    FluxClient,
    RunContext,
    RunResult,
    SQLiteJournal,
    Usage,
    messages_from_json,
    messages_to_json,
)
from agentloop.testing import FakeFluxRouter, ScriptedModel, call, text, tool_calls

pytestmark = pytest.mark.anyio


# --- run_sync -------------------------------------------------------------------------------


def test_run_sync_outside_a_loop_returns_the_result() -> None:
    agent = Agent(client=ScriptedModel([text("hello from sync")]))
    result = agent.run_sync("hi")
    assert result.output == "hello from sync" and result.steps == 1


def test_run_sync_takes_the_per_run_arguments() -> None:
    model = ScriptedModel([text("ok")])
    agent = Agent(client=model, instructions=lambda ctx: f"deps={ctx.deps}")
    agent.run_sync("hi", deps=7, model="flux-pinned-x")
    assert model.requests[0]["model"] == "flux-pinned-x"
    assert model.requests[0]["messages"][0] == {"role": "system", "content": "deps=7"}


@pytest.fixture
def router_process() -> Iterator[dict[str, str]]:
    script = Path(__file__).parent / "router_process.py"
    proc = warm_fork.spawn(script, [], preload=warm_fork.AGENTLOOP_PRELOAD)  # forked warm: tests/warm_fork.py
    assert proc.stdout is not None and proc.stdin is not None
    try:
        yield json.loads(proc.stdout.readline())
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)


@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize("transport", ["auto", "httpcore"])
def test_run_sync_again_and_again_with_one_long_lived_client(
    router_process: dict[str, str], wire: str, transport: Any
) -> None:
    """Each run_sync is a new event loop; a pool bound to the previous one must not be reused."""
    url = router_process["url"] if wire == "openai" else router_process["anthropic_url"]
    client = FluxClient(base_url=url, api_key="k", transport=transport)
    agent = Agent(client=client)
    outputs = [agent.run_sync("hi").output for _ in range(3)]
    assert [o.split()[0] for o in outputs] == ["hello"] * 3 and len(set(outputs)) == 3  # type: ignore[union-attr]


async def test_run_sync_inside_a_running_loop_refuses_clearly() -> None:
    model = ScriptedModel([text("never sent")])
    agent = Agent(client=model)
    with pytest.raises(ConfigurationError, match=r"await agent\.run"):
        agent.run_sync("hi")
    assert model.requests == []  # refused before anything was sent


def test_run_sync_inside_a_bare_asyncio_loop_callback_refuses() -> None:
    """A notebook cell runs inside a loop without being a task: still refused, not deadlocked."""
    agent = Agent(client=ScriptedModel([text("x")]))
    loop = asyncio.new_event_loop()
    seen: list[BaseException] = []

    def cell() -> None:
        try:
            agent.run_sync("hi")
        except ConfigurationError as e:
            seen.append(e)
        loop.stop()

    loop.call_soon(cell)
    try:
        loop.run_forever()
    finally:
        loop.close()
    assert len(seen) == 1 and "running asyncio event loop" in str(seen[0])


# --- per-run overrides and dynamic instructions ---------------------------------------------


@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize("how", ["run", "stream"])
async def test_per_run_model_settings_and_instructions(router: FakeFluxRouter, wire: str, how: str) -> None:
    router.add(text("a"), text("b"))
    async with make_client(router, wire) as client:
        agent = Agent(
            client=client,
            model="flux-auto",
            instructions="Agent rules.",
            model_settings={"temperature": 0.1, "top_p": 0.5},
        )
        await run_or_stream(
            agent,
            how,
            "one",
            model="flux-pinned-fast",
            model_settings={"temperature": 0.9},
            instructions="Run rules.",
        )
        await run_or_stream(agent, how, "two")  # the overrides did not stick to the agent
    first, second = (r.json for r in router.requests)
    assert first["model"] == "flux-pinned-fast" and first["temperature"] == 0.9 and first["top_p"] == 0.5
    assert system_text(first) == "Run rules."
    assert (
        second["model"] == "flux-auto"
        and second["temperature"] == 0.1
        and system_text(second) == "Agent rules."
    )


@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_dynamic_instructions_see_the_run_context(router: FakeFluxRouter, wire: str, kind: str) -> None:
    seen: list[RunContext[dict[str, str]]] = []

    def sync_instr(ctx: RunContext[dict[str, str]]) -> str:
        seen.append(ctx)
        return f"The user is {ctx.deps['name']}."

    async def async_instr(ctx: RunContext[dict[str, str]]) -> str:
        seen.append(ctx)
        return f"The user is {ctx.deps['name']}."

    router.add(text("hi Ana"))
    async with make_client(router, wire) as client:
        agent = Agent[dict[str, str], str](
            client=client, instructions=sync_instr if kind == "sync" else async_instr
        )
        result = await agent.run("hello", deps={"name": "Ana"}, run_id="run-dyn")
    assert system_text(router.requests[0].json) == "The user is Ana."
    assert result.messages[0] == {"role": "system", "content": "The user is Ana."}
    assert seen[0].run_id == "run-dyn" and seen[0].step == 0 and seen[0].tool_call_id is None


async def test_dynamic_instructions_returning_a_non_string_is_a_clear_error() -> None:
    agent = Agent(client=ScriptedModel([text("x")]), instructions=lambda ctx: 42)
    with pytest.raises(ConfigurationError, match="must return a str"):
        await agent.run("hi")


async def test_dynamic_instructions_are_journaled_and_not_recomputed_on_resume(tmp_path: Any) -> None:
    calls: list[int] = []

    def instr(ctx: RunContext[None]) -> str:
        calls.append(1)
        return f"call #{len(calls)}"

    journal = SQLiteJournal(tmp_path / "j.db")
    agent = Agent(client=ScriptedModel([text("done")]), instructions=instr, journal=journal)
    result = await agent.run("hi", run_id="r1")
    again = await agent.resume("r1")
    journal.close()
    assert calls == [1]
    assert again.messages[0] == result.messages[0] == {"role": "system", "content": "call #1"}


@pytest.mark.parametrize("bad", [42, ["a"], {"x": 1}])
def test_instructions_of_the_wrong_type_are_refused(bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="instructions must be"):
        Agent(client=ScriptedModel(), instructions=bad)


@pytest.mark.parametrize("bad", ["", 3])
async def test_per_run_model_must_be_a_name(bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="model must be"):
        await Agent(client=ScriptedModel([text("x")])).run("hi", model=bad)


# --- all_messages / new_messages / JSON round trip ------------------------------------------


@pytest.mark.parametrize("wire", WIRES)
async def test_store_and_continue_a_chat_through_json(router: FakeFluxRouter, wire: str) -> None:
    router.add(tool_calls(call("lookup", {"q": "x"})), text("first answer"), text("second answer"))

    async def lookup(q: str) -> str:
        return f"found {q}"

    from agentloop import ToolRegistry

    tools = ToolRegistry()
    tools.register(lookup)
    async with make_client(router, wire) as client:
        agent = Agent(client=client, tools=tools, instructions="Be brief.")
        first = await agent.run("question one")
        assert [m["role"] for m in first.new_messages()] == ["user", "assistant", "tool", "assistant"]
        assert first.all_messages()[0]["role"] == "system" and first.all_messages() == first.messages
        stored = messages_to_json(first.all_messages())
        json.loads(stored)  # plain JSON text a service can keep anywhere
        second = await agent.run("question two", messages=messages_from_json(stored))
    assert second.output == "second answer"
    assert second.new_messages() == [
        {"role": "user", "content": "question two"},
        {"role": "assistant", "content": "second answer"},
    ]
    assert second.all_messages()[: len(first.messages)] == first.messages
    assert sum(1 for m in second.messages if m["role"] == "system") == 1  # instructions not added twice
    assert "found x" in json.dumps(router.requests[2].json)  # the whole history was sent


async def test_new_messages_with_messages_only_and_after_a_json_round_trip_of_the_result() -> None:
    agent = Agent(client=ScriptedModel([text("ok")]))
    history = [
        {"role": "user", "content": "earlier"},
        {"role": "assistant", "content": "yes"},
        {"role": "user", "content": "now"},
    ]
    result = await agent.run(messages=history)
    assert result.new_messages() == [{"role": "assistant", "content": "ok"}]
    back = RunResult.from_json(result.to_json())
    assert back.new_messages() == result.new_messages() and back.all_messages() == result.all_messages()


@pytest.mark.parametrize(
    "text_in",
    [
        "",
        "not json",
        "[1, 2]",
        '{"format": "other", "messages": []}',
        '[{"role": "wizard"}]',
        '{"format": "agentloop.messages/1"}',
        "[[]]",
    ],
)
def test_messages_from_json_rejects_what_is_not_a_conversation(text_in: str) -> None:
    with pytest.raises(ConversationError):
        messages_from_json(text_in)


@settings(max_examples=examples(30), deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries(
            {"role": st.sampled_from(["user", "assistant", "system"]), "content": st.text(max_size=30)}
        ),
        max_size=8,
    )
)
def test_messages_json_round_trip_is_exact(messages: list[dict[str, Any]]) -> None:
    assert messages_from_json(messages_to_json(messages)) == messages


# --- Usage ----------------------------------------------------------------------------------


@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize("how", ["run", "stream"])
async def test_usage_counts_requests_cache_tokens_and_models(
    router: FakeFluxRouter, wire: str, how: str
) -> None:
    if wire == "openai":
        cached = {
            "prompt_tokens": 100,
            "completion_tokens": 7,
            "total_tokens": 107,
            "prompt_tokens_details": {"cached_tokens": 60},
        }
    else:
        cached = {"input_tokens": 40, "output_tokens": 7, "cache_read_input_tokens": 60}
    router.add(tool_calls(call("noop", {}), usage=cached), text("done", usage=cached))

    async def noop() -> str:
        return "ok"

    from agentloop import ToolRegistry

    tools = ToolRegistry()
    tools.register(noop)
    async with make_client(router, wire) as client:
        agent = Agent(client=client, tools=tools)
        result = await run_or_stream(agent, how, "go", model="flux-pinned-a")
    u = result.usage
    assert u.requests == 2 and u.input_tokens == 200 and u.output_tokens == 14 and u.cache_read_tokens == 120
    assert set(u.by_model) == {"flux-pinned-a"} and u.by_model["flux-pinned-a"].requests == 2
    assert u.by_model["flux-pinned-a"].cache_read_tokens == 120
    back = RunResult.from_json(result.to_json()).usage
    assert back == u and back.by_model == u.by_model


def test_usage_adds_per_model_without_mixing() -> None:
    a = Usage(1, 10, 2, 12).for_model("m1")
    b = Usage(1, 5, 1, 6, cache_write_tokens=3).for_model("m2")
    total = a + b + a
    assert total.requests == 3 and total.prompt_tokens == 25 and total.cache_write_tokens == 3
    assert total.by_model["m1"] == Usage(2, 20, 4, 24) and total.by_model["m2"].cache_write_tokens == 3
    assert a.by_model == {"m1": Usage(1, 10, 2, 12)}  # adding never mutated an operand
    assert Usage.from_data(total.to_data()).by_model == total.by_model
    assert Usage.from_data(
        {"requests": 1, "prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}
    ) == Usage(1, 2, 3, 5)


@settings(max_examples=examples(50), deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c"]), st.integers(0, 1000), st.integers(0, 1000), st.integers(0, 50)
        ),
        max_size=12,
    )
)
def test_usage_split_always_sums_to_the_total(turns: list[tuple[str, int, int, int]]) -> None:
    total = Usage()
    for model, p, c, cached in turns:
        total = total + Usage(1, p, c, p + c, cached).for_model(model)
    parts = list(total.by_model.values())
    assert sum(x.requests for x in parts) == total.requests == len(turns)
    assert sum(x.prompt_tokens for x in parts) == total.prompt_tokens
    assert sum(x.cache_read_tokens for x in parts) == total.cache_read_tokens


async def test_usage_survives_the_journal(tmp_path: Any) -> None:
    model = ScriptedModel(
        [
            text(
                "done",
                usage={
                    "prompt_tokens": 9,
                    "completion_tokens": 1,
                    "prompt_tokens_details": {"cached_tokens": 4},
                },
            )
        ]
    )
    journal = SQLiteJournal(tmp_path / "j.db")
    agent = Agent(client=model, journal=journal)
    result = await agent.run("hi", run_id="u1")
    again = await agent.resume("u1")
    journal.close()
    assert again.usage == result.usage and again.usage.cache_read_tokens == 4
    assert again.usage.by_model == {"flux-auto": Usage(1, 9, 1, 10, 4)}
    assert again.new_messages() == result.new_messages()

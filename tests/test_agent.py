"""The agent loop end to end, over real HTTP against the fake FluxRouter, on asyncio and trio."""

from __future__ import annotations

import threading

import anyio
import pytest

from agentloop import (
    Agent,
    ConfigurationError,
    ConversationError,
    FluxClient,
    RunFinished,
    StepLimitExceeded,
    ToolCallFinished,
    ToolCallStarted,
    ToolRegistry,
)
from agentloop.testing import FakeFluxRouter, call, text, tool_calls, weather_handler

pytestmark = pytest.mark.anyio


def weather_tools() -> ToolRegistry:
    tools = ToolRegistry()

    @tools.tool
    async def get_weather(city: str) -> dict:
        """Get the current weather for a city.

        Args:
            city: City name
        """
        return {"city": city, "temp_c": 21, "sky": "clear"}

    return tools


async def test_round_trip_weather(fake_router: FakeFluxRouter, flux_client: FluxClient) -> None:
    fake_router.add(
        tool_calls(call("get_weather", {"city": "Lisbon"}, id="call_a")), text("21 °C and clear in Lisbon.")
    )
    agent = Agent(client=flux_client, tools=weather_tools(), model="flux-pinned-gpt-5", max_steps=10)

    result = await agent.run("What's the weather in Lisbon?")

    assert result.output == "21 °C and clear in Lisbon."
    assert result.stop_reason == "final"
    assert result.steps == 2
    assert result.usage.requests == 2 and result.usage.total_tokens == 30
    assert [m["role"] for m in result.messages] == ["user", "assistant", "tool", "assistant"]
    assert result.messages[2] == {
        "role": "tool",
        "tool_call_id": "call_a",
        "content": '{"city":"Lisbon","temp_c":21,"sky":"clear"}',
    }
    first, second = (r.json for r in fake_router.requests)
    assert first["model"] == "flux-pinned-gpt-5"  # passed through unchanged
    assert first["tool_choice"] == "auto"
    assert first["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string", "description": "City name"}},
                    "required": ["city"],
                    "additionalProperties": False,
                },
                "description": "Get the current weather for a city.",
            },
        }
    ]
    assert second["messages"] == result.messages[:3]  # the whole conversation went back
    assert fake_router.requests[0].headers["authorization"] == "[redacted]"  # sent; recorded without the key


async def test_parallel_calls_really_overlap(fake_router: FakeFluxRouter, flux_client: FluxClient) -> None:
    """Each tool waits for the other to have started: only concurrent execution can finish."""
    tools = ToolRegistry()
    started = {"a": anyio.Event(), "b": anyio.Event()}

    @tools.tool
    async def rendezvous(me: str, other: str) -> str:
        started[me].set()
        await started[other].wait()
        return f"{me} met {other}"

    fake_router.add(
        tool_calls(
            call("rendezvous", {"me": "a", "other": "b"}), call("rendezvous", {"me": "b", "other": "a"})
        ),
        text("done"),
    )
    with anyio.fail_after(10):  # a guard against a deadlock, not a wait
        result = await Agent(client=flux_client, tools=tools).run("go")
    assert [m["content"] for m in result.messages if m["role"] == "tool"] == ["a met b", "b met a"]


async def test_results_in_model_order_not_completion_order(
    fake_router: FakeFluxRouter, flux_client: FluxClient
) -> None:
    tools = ToolRegistry()
    second_done = anyio.Event()

    @tools.tool
    async def first() -> str:
        await second_done.wait()  # finishes last
        return "first"

    @tools.tool
    async def second() -> str:
        second_done.set()
        return "second"

    fake_router.add(tool_calls(call("first", {}, id="c1"), call("second", {}, id="c2")), text("ok"))
    result = await Agent(client=flux_client, tools=tools).run("go")
    tool_messages = [m for m in result.messages if m["role"] == "tool"]
    assert [(m["tool_call_id"], m["content"]) for m in tool_messages] == [("c1", "first"), ("c2", "second")]
    assert [r.name for r in result.tool_calls] == ["first", "second"]


async def test_sync_tools_run_in_a_worker_thread(
    fake_router: FakeFluxRouter, flux_client: FluxClient
) -> None:
    """A sync tool blocks on a threading.Event that the event loop sets: a blocked loop would deadlock."""
    tools = ToolRegistry()
    release = threading.Event()
    loop_thread = threading.get_ident()
    entered = anyio.Event()

    @tools.tool
    def blocking() -> dict:
        anyio.from_thread.run_sync(entered.set)
        release.wait(10)
        return {"same_thread": threading.get_ident() == loop_thread}

    fake_router.add(tool_calls(call("blocking", {})), text("ok"))
    agent = Agent(client=flux_client, tools=tools)
    async with anyio.create_task_group() as tg:
        tg.start_soon(agent.run, "go")
        await entered.wait()  # the loop is still responsive while the tool blocks
        release.set()
    assert fake_router.requests[1].json["messages"][-1]["content"] == '{"same_thread":false}'


async def test_step_limit_keeps_everything(fake_router: FakeFluxRouter, flux_client: FluxClient) -> None:
    fake_router.add(
        tool_calls(call("get_weather", {"city": "Lisbon"}, id="s1")),
        tool_calls(call("get_weather", {"city": "Porto"}, id="s2")),
    )
    agent = Agent(client=flux_client, tools=weather_tools(), max_steps=2)
    with pytest.raises(StepLimitExceeded) as exc_info:
        await agent.run("loop forever")
    partial = exc_info.value.result
    assert partial.stop_reason == "max_steps"
    assert partial.steps == 2
    assert len(fake_router.requests) == 2
    # the last step's tool results are there too: nothing the tools produced is lost
    assert partial.messages[-1] == {
        "role": "tool",
        "tool_call_id": "s2",
        "content": '{"city":"Porto","temp_c":21,"sky":"clear"}',
    }
    assert [r.id for r in partial.tool_calls] == ["s1", "s2"]
    assert "max_steps=2" in str(exc_info.value)


@pytest.mark.parametrize(
    ("choice", "first_wire", "second_wire"),
    [
        ("none", "none", "none"),
        ("required", "required", "auto"),
        ("get_weather", {"type": "function", "function": {"name": "get_weather"}}, "auto"),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"type": "function", "function": {"name": "get_weather"}},
            "auto",
        ),
    ],
)
async def test_tool_choice_on_the_wire(
    fake_router: FakeFluxRouter,
    flux_client: FluxClient,
    choice: object,
    first_wire: object,
    second_wire: object,
) -> None:
    fake_router.add(tool_calls(call("get_weather", {"city": "Rome"})), text("done"))
    await Agent(client=flux_client, tools=weather_tools(), tool_choice=choice).run("go")
    assert [r.json["tool_choice"] for r in fake_router.requests] == [first_wire, second_wire]


async def test_forced_tool_choice_can_be_kept(fake_router: FakeFluxRouter, flux_client: FluxClient) -> None:
    fake_router.add(tool_calls(call("get_weather", {"city": "Rome"})), text("done"))
    agent = Agent(client=flux_client, tools=weather_tools(), tool_choice="required", reset_tool_choice=False)
    await agent.run("go")
    assert [r.json["tool_choice"] for r in fake_router.requests] == ["required", "required"]


async def test_no_tools_means_no_tools_fields(fake_router: FakeFluxRouter, flux_client: FluxClient) -> None:
    fake_router.add(text("hello"))
    result = await Agent(client=flux_client).run("hi")
    assert result.output == "hello"
    assert "tools" not in fake_router.requests[0].json and "tool_choice" not in fake_router.requests[0].json


def test_tool_choice_naming_an_unknown_tool_is_rejected_at_construction() -> None:
    from agentloop.testing import ScriptedModel

    with pytest.raises(ConfigurationError, match="not registered"):
        Agent(client=ScriptedModel(), tools=weather_tools(), tool_choice="nope")
    with pytest.raises(ConfigurationError, match="max_steps"):
        Agent(client=ScriptedModel(), max_steps=0)


async def test_id_repair_is_consistent(fake_router: FakeFluxRouter, flux_client: FluxClient) -> None:
    fake_router.add(
        tool_calls(
            call("get_weather", {"city": "Lisbon"}, id=""),
            call("get_weather", {"city": "Porto"}, id="dup"),
            call("get_weather", {"city": "Paris"}, id="dup"),
            call("get_weather", {"city": "Rome"}, id="bad id/with:chars"),
        ),
        tool_calls(call("get_weather", {"city": "Tokyo"}, id="dup")),  # reused across turns
        text("done"),
    )
    result = await Agent(client=flux_client, tools=weather_tools()).run("go")
    assistant_ids = [tc["id"] for m in result.messages if m.get("tool_calls") for tc in m["tool_calls"]]
    tool_ids = [m["tool_call_id"] for m in result.messages if m["role"] == "tool"]
    assert assistant_ids == tool_ids  # pairing exact, in order
    assert len(set(assistant_ids)) == 5 and all(assistant_ids)
    assert assistant_ids[1] == "dup"  # a valid provider id is kept
    for i in (0, 2, 3, 4):
        assert len(assistant_ids[i]) == 9 and assistant_ids[i].isalnum()  # valid for every provider
    # what went back on the wire is the repaired conversation
    sent = fake_router.requests[2].json["messages"]
    assert [m["tool_call_id"] for m in sent if m["role"] == "tool"] == tool_ids


async def test_many_concurrent_runs_on_one_agent(flux_client: FluxClient) -> None:
    agent = Agent(client=flux_client, tools=weather_tools())
    cities = ["Lisbon", "Porto", "Paris", "Tokyo", "Rome", "Berlin", "London", "Madrid"] * 5
    outputs: dict[int, str] = {}

    async with FakeFluxRouter(weather_handler) as router:
        async with FluxClient(base_url=router.base_url, api_key="k") as client:
            agent = Agent(client=client, tools=weather_tools())

            async def one(i: int, city: str) -> None:
                outputs[i] = (await agent.run(f"Weather in {city}?")).output or ""

            async with anyio.create_task_group() as tg:
                for i, city in enumerate(cities):
                    tg.start_soon(one, i, city)
    assert len(router.requests) == 2 * len(cities)
    for i, city in enumerate(cities):
        assert outputs[i].startswith(f"{city}: 21")


async def test_continue_a_conversation_without_mutating_it(
    fake_router: FakeFluxRouter, flux_client: FluxClient
) -> None:
    history = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
    ]
    before = [dict(m) for m in history]
    fake_router.add(text("Lisbon is sunny."))
    agent = Agent(client=flux_client, instructions="ignored: the conversation has a system message")
    result = await agent.run("And the weather?", messages=history)
    assert history == before
    assert result.messages[:3] == history
    assert fake_router.requests[0].json["messages"][-1] == {"role": "user", "content": "And the weather?"}
    assert len(fake_router.requests[0].json["messages"]) == 4


async def test_instructions_become_the_system_message(
    fake_router: FakeFluxRouter, flux_client: FluxClient
) -> None:
    fake_router.add(text("ok"))
    await Agent(client=flux_client, instructions="You are terse.").run("hi")
    assert fake_router.requests[0].json["messages"][0] == {"role": "system", "content": "You are terse."}


@pytest.mark.parametrize(
    "messages",
    [
        "not a list",
        [{"content": "no role"}],
        [{"role": "wizard", "content": "x"}],
        ["a string"],
        [{"role": "tool", "content": "no id"}],
    ],
)
async def test_bad_conversations_are_typed_errors(flux_client: FluxClient, messages: object) -> None:
    with pytest.raises(ConversationError):
        await Agent(client=flux_client).run(messages=messages)  # type: ignore[arg-type]


async def test_nothing_to_send_is_a_typed_error(flux_client: FluxClient) -> None:
    with pytest.raises(ConversationError, match="nothing to send"):
        await Agent(client=flux_client).run()


async def test_stream_events_in_order(fake_router: FakeFluxRouter, flux_client: FluxClient) -> None:
    fake_router.add(
        tool_calls(
            call("get_weather", {"city": "Lisbon"}, id="x1"), call("get_weather", {"city": "Porto"}, id="x2")
        ),
        text("All sunny."),
    )
    agent = Agent(client=flux_client, tools=weather_tools())
    kinds: list[str] = []
    async with agent.stream("Weather?") as events:
        async for event in events:
            kinds.append(type(event).__name__)
            if isinstance(event, RunFinished):
                assert event.result.output == "All sunny."
    # Collapse runs of deltas; the wire is streamed too (FluxClient(stream=True), the default).
    collapsed = [k for i, k in enumerate(kinds) if not (k.endswith("Delta") and i and kinds[i - 1] == k)]
    tools_part = collapsed[4:8]
    assert collapsed[:4] == ["RunStarted", "ModelRequestStarted", "ToolCallDelta", "ModelResponded"]
    assert sorted(tools_part) == [
        "ToolCallFinished",
        "ToolCallFinished",
        "ToolCallStarted",
        "ToolCallStarted",
    ]
    assert tools_part.index("ToolCallStarted") < tools_part.index("ToolCallFinished")
    assert collapsed[8:] == [
        "StepFinished",
        "ModelRequestStarted",
        "TextDelta",
        "ModelResponded",
        "RunFinished",
    ]
    assert events.result is not None and events.result.output == "All sunny."


async def test_stream_raises_the_run_error(fake_router: FakeFluxRouter, flux_client: FluxClient) -> None:
    fake_router.add(tool_calls(call("get_weather", {"city": "Lisbon"})))
    agent = Agent(client=flux_client, tools=weather_tools(), max_steps=1)
    seen: list[object] = []
    with pytest.raises(StepLimitExceeded):
        async with agent.stream("go") as events:
            async for event in events:
                seen.append(event)
    assert any(isinstance(e, ToolCallFinished) for e in seen)


async def test_stream_consumer_leaving_early_cancels_the_run(
    fake_router: FakeFluxRouter, flux_client: FluxClient
) -> None:
    tools = ToolRegistry()
    never = anyio.Event()

    @tools.tool
    async def hang() -> str:
        await never.wait()
        return "unreachable"

    fake_router.add(tool_calls(call("hang", {})))
    async with Agent(client=flux_client, tools=tools).stream("go") as events:
        async for event in events:
            if isinstance(event, ToolCallStarted):
                break  # leaving the block cancels the hanging tool and the run
    assert len(fake_router.requests) == 1

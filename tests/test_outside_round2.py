"""Round 2 of breaking agentloop from the outside (public API only): each test is the exact repro
of a break found by using agentloop as a new user or an attacker would, on asyncio and trio."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import json
import pathlib
import typing
import uuid
from typing import Annotated, Any

import anyio
import pytest
from helpers import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentloop import (
    Agent,
    APIError,
    ConfigurationError,
    ConversationError,
    FluxClient,
    LoopDetected,
    RunLimits,
    ToolRegistry,
)
from agentloop.testing import FakeFluxRouter, ScriptedModel, TestModel, call, raw, text, tool_calls

pytestmark = pytest.mark.anyio
KEY = "sk-outside-round2-SECRET-77"

# --- base_url carrying a secret --------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        f"http://user:{KEY}@127.0.0.1:8000/v1",  # was accepted: repr and every error showed it
        f"https://{KEY}@api.fluxrouter.ai/v1",
        f"http://127.0.0.1:8000/v1?key={KEY}",  # was accepted, then every request 404ed, echoing it
        f"http://127.0.0.1:8000/v1#{KEY}",
    ],
)
def test_a_base_url_carrying_a_secret_is_refused_without_showing_it(url: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        FluxClient(base_url=url, api_key="k")
    message = str(info.value)
    assert KEY not in message and KEY not in repr(info.value.args)
    assert "api_key=" in message  # says what to do instead


async def test_a_secret_base_url_from_the_environment_is_refused_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLUX_BASE_URL", f"http://u:{KEY}@127.0.0.1:1/v1")
    with pytest.raises(ConfigurationError, match="credentials") as info:
        FluxClient(api_key="k")
    assert KEY not in str(info.value)


_secret = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="/?#@[]%"),
    min_size=8,
    max_size=40,
).map(lambda s: "SECRET" + s)


@settings(max_examples=examples(75), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(secret=_secret, where=st.sampled_from(["userinfo", "password", "query", "fragment"]))
def test_no_secret_in_a_base_url_ever_reaches_a_message_or_repr(secret: str, where: str) -> None:
    url = {
        "userinfo": f"http://{secret}@127.0.0.1:9/v1",
        "password": f"https://me:{secret}@h.example/v1",
        "query": f"http://127.0.0.1:9/v1?token={secret}",
        "fragment": f"http://127.0.0.1:9/v1#{secret}",
    }[where]
    try:
        client = FluxClient(base_url=url, api_key="k")
    except ConfigurationError as e:
        assert secret not in str(e) and secret not in repr(e)
    else:  # pragma: no cover - every such URL must be refused
        raise AssertionError(f"accepted {client!r}")


async def test_a_plain_base_url_still_works() -> None:
    async with (
        FakeFluxRouter([text("ok")]) as r,
        FluxClient(base_url=r.base_url + "/", api_key=KEY) as client,
    ):
        result = await Agent(client=client).run("hi")
    assert result.output == "ok"


# --- a client used after close, or from another event loop ----------------------------------


@pytest.mark.parametrize("transport", ["auto", "httpcore"])
async def test_a_closed_client_is_a_configuration_error_at_once_not_a_retried_connection_error(
    transport: str,
) -> None:
    # Lean transport: APIConnectionError after ~1.3 s of retries, "check the base URL and the
    # network"; httpx transports: a raw RuntimeError from httpx, outside the AgentloopError tree.
    async with FakeFluxRouter([text("one"), text("two")]) as r:
        client = FluxClient(base_url=r.base_url, api_key=KEY, transport=transport)  # type: ignore[arg-type]
        async with client:
            assert (await Agent(client=client).run("hi")).output == "one"
        with pytest.raises(ConfigurationError, match="FluxClient is closed") as info:
            await Agent(client=client).run("hi")
        assert KEY not in str(info.value)
        assert len(r.requests) == 1  # nothing was sent, nothing retried
        with pytest.raises(ConfigurationError, match="FluxClient is closed"):
            async with client:
                pass


async def test_a_closed_client_is_refused_by_a_stream_and_by_warmup_too() -> None:
    async with FakeFluxRouter([text("one")]) as r:
        client = FluxClient(base_url=r.base_url, api_key=KEY)
        await client.aclose()
        with pytest.raises(ConfigurationError, match="FluxClient is closed"):
            async with Agent(client=client).stream("hi") as events:
                async for _ in events:
                    pass
        with pytest.raises(ConfigurationError, match="FluxClient is closed"):
            await client.warmup()
        assert r.requests == []


async def test_nested_async_with_blocks_over_one_client_close_it_at_the_outermost() -> None:
    # The inner block's exit closed the client under the outer one: the next run failed.
    async with FakeFluxRouter([text("one"), text("two")]) as r:
        client = FluxClient(base_url=r.base_url, api_key=KEY)
        async with client:
            async with client:
                assert (await Agent(client=client).run("hi")).output == "one"
            assert (await Agent(client=client).run("hi")).output == "two"
        with pytest.raises(ConfigurationError, match="FluxClient is closed"):
            await Agent(client=client).run("hi")


def _run_in_fresh_loop(backend: str, agent: Agent) -> BaseException | None:
    """Run the agent in a new event loop of its own, in this (worker) thread: a second
    asyncio.run, a notebook's restarted loop; the exception it ended with, if any."""
    try:
        anyio.run(agent.run, "again", backend=backend)
    except BaseException as e:
        return e
    return None


@pytest.mark.parametrize("other", ["asyncio", "trio"])
async def test_a_client_used_from_a_second_event_loop_is_a_clear_typed_error(other: str) -> None:
    # A module-level client shared by two event loops: "RuntimeError: ... got Future attached to
    # a different loop" on asyncio; on trio the run went through on another loop's pool, and the
    # client's aclose() then raised RuntimeError("must be called from async context").
    async with FakeFluxRouter([text("one"), text("two")]) as r:
        async with FluxClient(base_url=r.base_url, api_key=KEY) as client:
            agent = Agent(client=client)
            assert (await agent.run("hi")).output == "one"
            error = await anyio.to_thread.run_sync(_run_in_fresh_loop, other, agent)
            assert isinstance(error, ConfigurationError), error
            assert "another event loop" in str(error) and "one per loop" in str(error)
            assert len(r.requests) == 1
            assert (await agent.run("hi")).output == "two"  # its own loop still works


async def test_run_sync_twice_on_one_client_works() -> None:
    # run_sync starts a loop per call: each gets a copy of the client with a pool of its own.
    async with FakeFluxRouter([text("one"), text("two")]) as r:
        agent = Agent(client=FluxClient(base_url=r.base_url, api_key=KEY))

        def twice() -> list[object]:
            return [agent.run_sync("a").output for _ in range(2)]

        assert await anyio.to_thread.run_sync(twice) == ["one", "two"]


# --- signatures people write: `x: T = None`, Path ---------------------------------------------


class _Mode(enum.Enum):
    FAST = "fast"
    SLOW = "slow"


@dataclasses.dataclass
class _Point:
    x: int
    y: int = 0


_TYPES: list[Any] = [
    int,
    str,
    float,
    bool,
    list[int],
    dict[str, int],
    pathlib.Path,
    datetime.date,
    uuid.UUID,
    decimal.Decimal,
    _Mode,
    _Point,
    tuple[int, str],
    set[str],
    Annotated[int, "a count"],
]


def _tool_with_none_default(tp: Any) -> ToolRegistry:
    def f(value=None) -> str:  # type: ignore[no-untyped-def]
        return repr(value)

    f.__annotations__ = {"value": tp, "return": str}
    tools = ToolRegistry()
    tools.register(f)
    return tools


@pytest.mark.parametrize("tp", _TYPES, ids=lambda t: getattr(t, "__name__", None) or str(t))
async def test_a_none_default_lets_the_model_send_null_and_the_tool_gets_none(tp: Any) -> None:
    # `limit: int = None`: the schema said {"type": "integer", "default": null}, and a model that
    # sent the advertised default back was told "None is not of type 'integer'".
    tools = _tool_with_none_default(tp)
    model = ScriptedModel([tool_calls(call("f", {"value": None}), call("f", {})), text("done")])
    result = await Agent(client=model, tools=tools).run("go")
    assert [(c.status, c.content) for c in result.tool_calls] == [("ok", "None"), ("ok", "None")]


@pytest.mark.parametrize("tp", _TYPES, ids=lambda t: getattr(t, "__name__", None) or str(t))
async def test_a_none_default_in_a_dataclass_or_namedtuple_field_takes_null_too(tp: Any) -> None:
    # The same mistake one level down: `tags: list[str] = None` in a dataclass parameter still
    # advertised {"type": "array", "default": null} and refused the null it advertised.
    holder = dataclasses.make_dataclass("Holder", [("value", tp, dataclasses.field(default=None))])
    pair = typing.NamedTuple("Pair", [("value", tp)])  # noqa: UP014 - tp is a runtime value
    pair.__new__.__defaults__ = (None,)
    pair._field_defaults = {"value": None}  # type: ignore[attr-defined]
    got: list[Any] = []

    def f(h: Any, p: Any) -> str:
        got.extend([h.value, p.value])
        return "ok"

    f.__annotations__ = {"h": holder, "p": pair, "return": str}
    tools = ToolRegistry()
    tools.register(f)
    model = ScriptedModel(
        [
            tool_calls(call("f", {"h": {"value": None}, "p": [None]}), call("f", {"h": {}, "p": []})),
            text("done"),
        ]
    )
    result = await Agent(client=model, tools=tools).run("go")
    assert [c.status for c in result.tool_calls] == ["ok", "ok"], result.tool_calls
    assert got == [None, None, None, None]


@pytest.mark.parametrize("seed", [0, 1, 2])
# Decimal included: its schema now says which strings are numbers (a pattern); before, TestModel
# could send "" for it, which the schema allowed and the tool refused.
@pytest.mark.parametrize("tp", _TYPES, ids=lambda t: getattr(t, "__name__", None) or str(t))
def test_testmodel_arguments_for_any_signature_are_accepted_by_the_tool(tp: Any, seed: int) -> None:
    # TestModel generates arguments from the schema that is sent; for a Path the schema did not say
    # "non-empty", so TestModel sent "" and the tool refused its own schema's value.
    tools = ToolRegistry()

    def g(value) -> str:  # type: ignore[no-untyped-def]
        return repr(value)

    g.__annotations__ = {"value": tp, "return": str}
    tools.register(g)
    result = anyio.run(Agent(client=TestModel(seed=seed), tools=tools).run, "go")
    assert [c.status for c in result.tool_calls] == ["ok"], result.tool_calls


def test_a_path_parameter_says_non_empty_in_its_schema() -> None:
    tools = ToolRegistry()

    @tools.tool
    def read(path: pathlib.Path) -> str:
        return str(path)

    assert tools.definitions[0]["function"]["parameters"]["properties"]["path"]["minLength"] == 1


# --- a final answer cut at max_tokens looked whole ---------------------------------------------


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
@pytest.mark.parametrize("stream", [False, True])
async def test_a_final_answer_cut_at_max_tokens_says_so(
    wire: str, stream: bool, caplog: pytest.LogCaptureFixture
) -> None:
    # finish_reason "length" (Anthropic: stop_reason "max_tokens", 4096 tokens by default) ended
    # the run as "final" with the cut text as output and nothing on the result to tell.
    async with FakeFluxRouter([text("The first half of an ans", finish_reason="length")]) as r:
        base = r.anthropic_url if wire == "anthropic" else r.base_url
        async with FluxClient(base_url=base, api_key=KEY, stream=stream) as client:
            agent = Agent(client=client)
            with caplog.at_level("WARNING", logger="agentloop"):
                if stream:
                    async with agent.stream("hi") as events:
                        result = [e async for e in events][-1].result  # type: ignore[attr-defined]
                else:
                    result = await agent.run("hi")
    assert result.output == "The first half of an ans" and result.stop_reason == "final"
    assert result.finish_reason == "length"
    assert type(result).from_json(result.to_json()).finish_reason == "length"
    assert [rec.getMessage().partition(":")[0] for rec in caplog.records] == ["final answer incomplete"]


async def test_a_whole_final_answer_has_finish_reason_stop_and_logs_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level("WARNING", logger="agentloop"):
        result = await Agent(client=ScriptedModel([text("ok")])).run("hi")
    assert result.finish_reason == "stop" and caplog.records == []


@settings(max_examples=examples(30), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    reason=st.one_of(
        st.none(),
        st.text(max_size=200),
        st.integers(),
        st.lists(st.integers(), max_size=3),
        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    )
)
def test_any_finish_reason_a_router_sends_ends_the_run_and_round_trips(reason: Any) -> None:
    # The wire passes finish_reason through as JSON: any value must give a result that to_json
    # and from_json carry, and a short str or None on it.
    body = {
        "id": "x",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": reason}],
    }

    async def go() -> Any:
        async with (
            FakeFluxRouter([raw(200, json.dumps(body))]) as r,
            FluxClient(base_url=r.base_url, api_key=KEY, stream=False) as client,
        ):
            return await Agent(client=client).run("hi")

    result = anyio.run(go)
    assert result.output == "hi"
    assert result.finish_reason is None or (
        isinstance(result.finish_reason, str) and len(result.finish_reason) <= 64
    )
    assert type(result).from_json(result.to_json()).finish_reason == result.finish_reason


# --- parallel identical calls are a burst, not a loop -----------------------------------------


async def test_a_default_agent_rolls_four_dice_in_one_message() -> None:
    # loop_threshold=3 by default counted the calls of one message one by one: the third die was
    # refused ("the result will not change") and a fourth stopped the run with LoopDetected
    # "after being told to stop", though the model had been told nothing yet.
    rolled: list[int] = []
    tools = ToolRegistry()

    @tools.tool
    def roll_die() -> int:
        rolled.append(len(rolled) % 6 + 1)
        return rolled[-1]

    dice = tool_calls(*[call("roll_die", {}) for _ in range(4)])
    result = await Agent(client=ScriptedModel([dice, text("1, 2, 3, 4")]), tools=tools).run("roll 4 dice")
    assert [c.status for c in result.tool_calls] == ["ok"] * 4 and rolled == [1, 2, 3, 4]


_CALLS = st.sampled_from([("f", "{}"), ("f", '{"a": 1}'), ("f", '{ "a" : 1 }'), ("g", "{}")])


@settings(max_examples=examples(50), deadline=None)
@given(
    steps=st.lists(st.lists(_CALLS, min_size=1, max_size=5), min_size=1, max_size=8),
    threshold=st.integers(2, 4),
)
def test_a_loop_is_counted_in_steps_however_the_model_bursts(
    steps: list[list[tuple[str, str]]], threshold: int
) -> None:
    # Reference: collapse identical neighbours within a step, then count streaks; every call of a
    # step's burst has its first call's status. Run through Agent.run with one message per step.
    def canonical(c: tuple[str, str]) -> tuple[str, str]:
        return c[0], json.dumps(json.loads(c[1]), sort_keys=True)

    expected: list[str] = []
    streak, last, stopped = 0, None, False
    for calls in steps:
        prev_in_step = None
        for c in calls:
            key = canonical(c)
            if key == prev_in_step:
                expected.append(expected[-1])
                continue
            streak = streak + 1 if key == last else 1
            last = prev_in_step = key
            expected.append("ok" if streak < threshold else "loop_detected")
            stopped = stopped or streak > threshold
        if stopped:
            break
    tools = ToolRegistry()

    @tools.tool
    def f(a: int = 0) -> int:
        return a

    @tools.tool
    def g() -> int:
        return 0

    script = [tool_calls(*[call(n, args) for n, args in calls]) for calls in steps] + [text("done")]
    agent = Agent(
        client=ScriptedModel(script), tools=tools, limits=RunLimits(loop_threshold=threshold, max_steps=20)
    )
    try:
        result = anyio.run(agent.run, "go")
    except LoopDetected as e:
        assert stopped
        result = e.result
    else:
        assert not stopped
    assert [c.status for c in result.tool_calls] == expected


# --- answers that lost the model's intent --------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_an_openai_refusal_is_a_finish_reason_refusal(stream: bool) -> None:
    # {"content": null, "refusal": "..."} with finish_reason "stop": no output and nothing said.
    body = {
        "id": "x",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": None, "refusal": "I can't help with that."},
                "finish_reason": "stop",
            }
        ],
    }
    async with (
        FakeFluxRouter([raw(200, json.dumps(body))]) as r,
        FluxClient(base_url=r.base_url, api_key=KEY, stream=False) as client,
    ):
        agent = Agent(client=client)
        if stream:
            async with agent.stream("hi") as events:
                result = [e async for e in events][-1].result  # type: ignore[attr-defined]
        else:
            result = await agent.run("hi")
    assert result.output == "" and result.finish_reason == "refusal"  # no text: "" on every wire
    assert result.messages[-1]["refusal"] == "I can't help with that."


async def test_a_single_tool_call_sent_as_an_object_is_run_not_dropped() -> None:
    # "tool_calls": {...} instead of [{...}]: the call was dropped and the run ended "final" with
    # output None, as if the model had answered nothing.
    one = {"id": "c1", "type": "function", "function": {"name": "echo", "arguments": '{"text": "hi"}'}}
    body = {
        "id": "x",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": None, "tool_calls": one},
                "finish_reason": "tool_calls",
            }
        ],
    }
    tools = ToolRegistry()

    @tools.tool
    async def echo(text: str) -> str:
        return text

    async with (
        FakeFluxRouter([raw(200, json.dumps(body)), text("done")]) as r,
        FluxClient(base_url=r.base_url, api_key=KEY, stream=False) as client,
    ):
        result = await Agent(client=client, tools=tools).run("hi")
    assert [(c.name, c.status, c.content) for c in result.tool_calls] == [("echo", "ok", "hi")]
    assert result.output == "done"


# --- the caller's conversation -------------------------------------------------------------------


_CALL = {"id": "c1", "type": "function", "function": {"name": "echo", "arguments": '{"text": "a"}'}}


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "user", "content": "a"}, {"role": "assistant", "content": None, "tool_calls": [_CALL]}],
        [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": None, "tool_calls": [_CALL, {**_CALL, "id": "c2"}]},
            {"role": "tool", "tool_call_id": "c1", "content": "a"},
            {"role": "user", "content": "and?"},
        ],
    ],
    ids=["unanswered at the end", "one of two answered"],
)
async def test_a_conversation_with_an_unanswered_tool_call_is_refused_before_any_request(
    messages: list[dict[str, Any]],
) -> None:
    # Sent as it was: the fake router took it, every real provider answers 400 ("tool_calls must
    # be followed by tool messages"), so it failed in production only.
    async with FakeFluxRouter([text("ok")]) as r, FluxClient(base_url=r.base_url, api_key=KEY) as client:
        with pytest.raises(ConversationError, match="no tool message answering it") as info:
            await Agent(client=client).run("next", messages=messages)
        assert r.requests == []
    assert "agent.resume" in str(info.value)


async def test_a_paused_runs_messages_go_to_resume_not_to_run() -> None:
    tools = ToolRegistry()

    @tools.tool(requires_approval=True)
    async def echo(text: str) -> str:
        return text

    model = ScriptedModel([tool_calls(call("echo", {"text": "a"})), text("done"), text("again")])
    agent = Agent(client=model, tools=tools)
    paused = await agent.run("go")
    assert paused.stop_reason == "approval_required"
    with pytest.raises(ConversationError, match=r"agent\.resume"):
        await agent.run("more", messages=paused.messages)
    result = await agent.resume(paused, approvals={paused.pending[0].id: True})
    assert result.output == "done"
    assert (await agent.run("more", messages=result.messages)).output == "again"  # answered: fine


async def test_a_script_item_that_is_not_a_reply_is_named_even_after_the_client_retried() -> None:
    # A dict written where text(...) was meant: the first request got "expected a Reply", the
    # client retried that 500, and the error the user saw was only "script exhausted after 0 replies".
    async with FakeFluxRouter([{"choices": [{"message": {"content": "hi"}}]}]) as r:  # type: ignore[list-item]
        async with FluxClient(base_url=r.base_url, api_key=KEY) as client:
            with pytest.raises(APIError) as info:
                await Agent(client=client).run("hi")
    message = str(info.value)
    assert "not a Reply but dict" in message and "text(), tool_calls(), raw() or error()" in message
    assert len(r.requests) >= 2  # it was retried, and the retry's message still names the mistake

"""Outside-in review, round 6: a new user following README.md and docs/ (history slices, tools
written the ordinary way, journaled runs) and a hostile model (odd answer fields, streams). Each
test is the exact repro of a break found from the outside (public API only), kept as a
regression test; async ones run on asyncio and trio."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agentloop import Agent, APIResponseError, ConversationError, FluxClient, SQLiteJournal, ToolRegistry
from agentloop.testing import FakeFluxRouter, FunctionModel, call, raw, text, tool_calls

pytestmark = pytest.mark.anyio

WIRES = ["openai", "anthropic"]


def _url(router: FakeFluxRouter, wire: str) -> str:
    return router.base_url if wire == "openai" else router.anthropic_url


def _calls_then(answer: str, *calls: Any) -> FunctionModel:
    """A model that makes `calls` on the user's turn, then answers `answer`."""
    return FunctionModel(lambda messages, tools: list(calls) if messages[-1]["role"] == "user" else answer)


# --- a new user keeps the last few messages of a conversation ------------------------------------


def _conversation() -> list[dict[str, Any]]:
    call_ = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
    return [
        {"role": "user", "content": "Where is order 7?"},
        {"role": "assistant", "content": None, "tool_calls": [call_]},
        {"role": "tool", "tool_call_id": "call_1", "content": "shipped"},
        {"role": "assistant", "content": "It has shipped."},
    ]


@pytest.mark.parametrize("wire", WIRES)
async def test_a_history_slice_that_cuts_a_call_from_its_result_is_refused_before_any_request(
    wire: str,
) -> None:
    # `messages=result.messages[-3:]` (keep the last few) starts at a tool message whose call was
    # cut off: sent as it was, every provider refuses it with a 400 (OpenAI: "messages with role
    # 'tool' must be a response to a preceding message with 'tool_calls'"), the fake router took it
    async with FakeFluxRouter([text("ok")]) as router:
        async with FluxClient(base_url=_url(router, wire), api_key="k") as client:
            with pytest.raises(
                ConversationError,
                match=r"messages\[0\] \(role 'tool'\) answers tool call 'call_1'.*History\(keep_last=",
            ) as e:
                await Agent(client=client).run("And order 8?", messages=_conversation()[2:])
            assert router.requests == []
    assert isinstance(e.value, ValueError)


async def test_a_tool_message_answering_a_call_of_another_turn_is_refused() -> None:
    messages = _conversation()
    stray = [
        *messages,
        {"role": "user", "content": "thanks"},
        dict(messages[2]),
    ]  # answers call_1 again, later
    with pytest.raises(ConversationError, match=r"messages\[5\] \(role 'tool'\) answers tool call 'call_1'"):
        await Agent(client=FunctionModel(lambda m, t: "ok")).run(messages=stray)


async def test_whole_conversations_and_their_continuations_still_pass() -> None:
    agent = Agent(client=FunctionModel(lambda m, t: "ok"))
    result = await agent.run("And order 8?", messages=_conversation())
    assert (await agent.run("next", messages=result.messages)).output == "ok"
    assert (await agent.run("again", messages=_conversation()[3:])).output == "ok"  # a slice at a turn


# --- tools written the ordinary way ---------------------------------------------------------------


class Float64(float):
    """What numpy.float64 is to Python (a float subclass): `df["price"].mean()` returns one."""


async def test_a_float_subclass_result_numpy_float64_reaches_the_model_as_a_number() -> None:
    tools = ToolRegistry()

    @tools.tool
    def mean_price() -> Float64:
        return Float64(2.5)

    @tools.tool
    def stats() -> dict[str, Any]:
        return {"mean": Float64(2.5), "values": [Float64(1.0), Float64("nan")]}

    model = _calls_then("done", call("mean_price", {}), call("stats", {}))
    result = await Agent(client=model, tools=tools).run("price?")
    assert [(r.status, r.content) for r in result.tool_calls] == [
        ("ok", "2.5"),
        ("ok", '{"mean":2.5,"values":[1.0,"NaN"]}'),
    ]


@pytest.mark.parametrize("mode", ["thread", "process"])
async def test_numpy_like_scalars_and_arrays_in_a_result_reach_the_model_as_json(mode: str) -> None:
    # numpy.int64 (`df["x"].sum()`) is not an int subclass, an ndarray not a list: the result
    # ended invalid_result ("Type is not JSON serializable"); what has a tolist() is now written
    # as its list or Python scalar, in the host and in a sandbox's child alike (4 of 4 failed before)
    import sandbox_tools as st

    tools = ToolRegistry()
    tools.register(st.array_stats, sandbox=mode)
    model = _calls_then("done", call("array_stats", {}))
    async with tools:
        result = await Agent(client=model, tools=tools).run("stats?")
    assert [(r.status, r.content) for r in result.tool_calls] == [
        ("ok", '{"count":3,"values":[1.5,2.5],"rows":[[1,2]]}')
    ]


def find_user(name: str) -> dict[str, str]:
    """Find a user by name (the ordinary slip: `next` without a default)."""
    users = [{"name": "ana"}]
    return next(u for u in users if u["name"] == name)


async def afind_user(name: str) -> dict[str, str]:
    users = [{"name": "ana"}]
    return next(u for u in users if u["name"] == name)


async def test_a_tool_raising_stopiteration_is_reported_as_stopiteration_inline_and_in_a_thread() -> None:
    # a `next(...)` that found nothing: the model was told "RuntimeError: coroutine raised
    # StopIteration" (a sync tool has no coroutine), and the record's traceback of the thread tool
    # ended in anyio's frames; a "process" tool already said StopIteration
    seen: list[BaseException] = []

    def fmt(name: str, exc: BaseException) -> str:
        seen.append(exc)
        return f"Tool {name!r} raised {type(exc).__name__}"

    tools = [find_user, afind_user]
    model = _calls_then("done", call("find_user", {"name": "bob"}), call("afind_user", {"name": "bob"}))
    result = await Agent(client=model, tools=tools).run("who is bob?")
    for record in result.tool_calls:
        assert record.status == "raised"
        assert record.content == f"Tool {record.name!r} raised StopIteration: "
        assert record.traceback is not None and "next(u for u in users" in record.traceback
        assert record.traceback.rstrip().endswith("StopIteration")
    result = await Agent(client=model, tools=tools, format_tool_error=fmt).run("who is bob?")
    assert [type(e) for e in seen] == [StopIteration, StopIteration]
    assert [r.content for r in result.tool_calls] == [
        "Tool 'find_user' raised StopIteration",
        "Tool 'afind_user' raised StopIteration",
    ]


# --- durable runs: "a finished run is returned as it is" ------------------------------------------


@pytest.mark.parametrize("wire", WIRES)
async def test_resuming_a_finished_run_keeps_its_finish_reason(wire: str, tmp_path: Path) -> None:
    # an answer cut at max_tokens: resume(run_id) of the finished run said finish_reason None, so
    # a worker that resumes every job (docs/recipes.md) took the cut answer for a whole one
    async with FakeFluxRouter([text("Half an answ", finish_reason="length")]) as router:
        async with FluxClient(base_url=_url(router, wire), api_key="k") as client:
            agent = Agent(client=client, journal=SQLiteJournal(tmp_path / "runs.db"))
            first = await agent.run("Write a long essay", run_id="job-1")
            again = await agent.resume("job-1")
    assert first.finish_reason == again.finish_reason == "length"
    assert again.output == "Half an answ"


# --- a hostile model's odd answer fields ----------------------------------------------------------


def _completion(**fields: Any) -> str:
    message = {"role": "assistant", "content": "hi"}
    return json.dumps({"choices": [{"index": 0, "message": message, "finish_reason": "stop"}], **fields})


@pytest.mark.parametrize(
    "fields", [{"model": 5}, {"model": ["m"]}, {"model": {"a": 1}}, {"id": [1], "model": 7}]
)
async def test_a_whole_openai_answer_whose_model_is_not_text_is_read_not_a_crash(
    fields: dict[str, Any],
) -> None:
    # "model": 5 in a chat.completion raised a raw AttributeError ('int' object has no attribute
    # 'encode') out of Agent.run; the streamed and Anthropic decoders already ignored it
    async with FakeFluxRouter([raw(200, _completion(**fields))]) as router:
        async with FluxClient(base_url=router.base_url, api_key="k", stream=False) as client:
            result = await Agent(client=client).run("hi")
    assert result.output == "hi"
    assert list(result.usage.by_model) == ["flux-auto"]


def _sse_chunks(*deltas: dict[str, Any]) -> str:
    chunks = [{"choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
    chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    return "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"


async def test_streamed_content_parts_are_kept_as_a_whole_answers_are() -> None:
    # a router passing on a provider's content parts ({"type": "text", ...}) in stream deltas: the
    # whole answer joined their text, the streamed one dropped it and ended "final" with ""
    parts = [{"type": "text", "text": "Sun"}, {"type": "text", "text": "ny."}]
    body = _sse_chunks({"role": "assistant", "content": parts[:1]}, {"content": parts[1:]})
    async with FakeFluxRouter([raw(200, body, content_type="text/event-stream")]) as router:
        async with FluxClient(base_url=router.base_url, api_key="k") as client:
            async with Agent(client=client).stream("Weather?") as events:
                texts = [e.text async for e in events if type(e).__name__ == "TextDelta"]
    assert texts == ["Sun", "ny."]


async def test_a_tool_call_with_whole_content_parts_still_runs() -> None:
    tools = ToolRegistry()

    @tools.tool
    def ping() -> str:
        return "pong"

    async with FakeFluxRouter([tool_calls(call("ping", {})), text("done")]) as router:
        async with FluxClient(base_url=router.base_url, api_key="k") as client:
            async with Agent(client=client, tools=tools).stream("ping") as events:
                async for _ in events:
                    pass
    assert router.requests[1].json["messages"][-1]["content"] == "pong"


@pytest.mark.parametrize("part_text", [5, None, ["a"]])
async def test_a_whole_answers_content_part_whose_text_is_not_text_is_skipped_not_a_crash(
    part_text: Any,
) -> None:
    # content [{"type": "text", "text": 5}] raised a raw TypeError (sequence item 0: expected str
    # instance) out of Agent.run
    message = {
        "role": "assistant",
        "content": [{"type": "text", "text": part_text}, {"type": "text", "text": "ok"}],
    }
    body = json.dumps({"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]})
    async with FakeFluxRouter([raw(200, body)]) as router:
        async with FluxClient(base_url=router.base_url, api_key="k", stream=False) as client:
            assert (await Agent(client=client).run("hi")).output == "ok"


async def test_a_streamed_thinking_signature_that_is_not_text_is_worded_once() -> None:
    # the message read "the endpoint streamed streamed thinking whose `signature` is int"
    events = [
        {"type": "message_start", "message": {"id": "m", "role": "assistant", "content": [], "usage": {}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hm"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": 5}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 1}},
        {"type": "message_stop"},
    ]
    body = "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events)
    reply = raw(200, body, content_type="text/event-stream")
    async with FakeFluxRouter(lambda request: reply) as router:
        async with FluxClient(base_url=router.anthropic_url, api_key="k") as client:
            with pytest.raises(APIResponseError) as e:
                async with Agent(client=client).stream("hi") as stream:
                    async for _ in stream:
                        pass
    assert "the endpoint streamed thinking whose `signature` is int, not text" in str(e.value)


def _choices_stream(*chunks: list[tuple[int, dict[str, Any], str | None]]) -> str:
    """SSE of chunks, each a list of (choice index, delta, finish_reason)."""
    out = [{"choices": [{"index": i, "delta": d, "finish_reason": f} for i, d, f in c]} for c in chunks]
    return "".join(f"data: {json.dumps(c)}\n\n" for c in out) + "data: [DONE]\n\n"


async def _streamed(agent: Agent) -> Any:
    async with agent.stream("Weather?") as events:
        finished = [e.result async for e in events if type(e).__name__ == "RunFinished"]
    return finished[0]


@pytest.mark.parametrize("together", [False, True], ids=["chunks of their own", "in one chunk"])
async def test_a_second_choice_streamed_is_not_mixed_into_the_answer(together: bool) -> None:
    # a router streaming two choices (n was never asked for): the chunks of choice 1 were read as
    # the answer's (choices[0] of each chunk, whatever its index), so its text was mixed in and
    # its finish_reason ended the answer (the chunks-of-their-own case: 2 of 2 failed before)
    first = [(0, {"role": "assistant", "content": "Sun"}, None)]
    second = [(1, {"role": "assistant", "content": "Rain"}, None)]
    rest = [[(0, {"content": "ny."}, None)], [(1, {}, "length")], [(0, {}, "stop")]]
    body = _choices_stream(first + second, *rest) if together else _choices_stream(first, second, *rest)
    async with FakeFluxRouter([raw(200, body, content_type="text/event-stream")]) as router:
        async with FluxClient(base_url=router.base_url, api_key="k", stream=True) as client:
            result = await _streamed(Agent(client=client))
    assert (result.output, result.finish_reason) == ("Sunny.", "stop")


async def test_a_single_choice_streamed_with_another_index_is_still_the_answer() -> None:
    # the first choice streamed is the answer whatever its index (a router numbering from 1)
    body = _choices_stream(
        [(1, {"role": "assistant", "content": "Sun"}, None)], [(1, {"content": "ny."}, "stop")]
    )
    async with FakeFluxRouter([raw(200, body, content_type="text/event-stream")]) as router:
        async with FluxClient(base_url=router.base_url, api_key="k", stream=True) as client:
            assert (await _streamed(Agent(client=client))).output == "Sunny."


@pytest.mark.parametrize("content", [{"a": 1}, 5, True], ids=["an object", "a number", "a bool"])
async def test_a_whole_openai_answer_whose_content_is_not_text_is_a_typed_error(content: Any) -> None:
    # the answer's text became Python's str() of it ("{'a': 1}"), handed on as the model's answer
    # (6 of 6 failed before); now it is an APIResponseError that shows what came, as any value of
    # the wrong JSON type in an answer is
    message = {"role": "assistant", "content": content}
    body = json.dumps({"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]})
    async with FakeFluxRouter([raw(200, body)] * 3) as router:
        async with FluxClient(base_url=router.base_url, api_key="k", stream=False) as client:
            with pytest.raises(APIResponseError, match=r"a message whose `content` is a JSON"):
                await Agent(client=client).run("hi")


@pytest.mark.parametrize("content", [{"a": 1}, 5, True], ids=["an object", "a number", "a bool"])
async def test_a_streamed_openai_delta_whose_content_is_not_text_is_a_typed_error(content: Any) -> None:
    # streamed, the same content was dropped: the run ended "final" with its text lost (6 of 6
    # failed before)
    body = _sse_chunks({"role": "assistant", "content": "Sun"}, {"content": content})
    async with FakeFluxRouter([raw(200, body, content_type="text/event-stream")] * 3) as router:
        async with FluxClient(base_url=router.base_url, api_key="k", stream=True) as client:
            with pytest.raises(APIResponseError, match=r"a delta whose `content` is a JSON"):
                await _streamed(Agent(client=client))


async def test_chunks_without_a_choice_index_stay_the_answers() -> None:
    # a router that drops the index after the first chunk (or never sends one): still one answer
    body = _choices_stream([(0, {"role": "assistant", "content": "Sun"}, None)])
    tail = [{"choices": [{"delta": {"content": "ny."}, "finish_reason": "stop"}]}]
    body = body.replace(
        "data: [DONE]\n\n", "".join(f"data: {json.dumps(c)}\n\n" for c in tail) + "data: [DONE]\n\n"
    )
    async with FakeFluxRouter([raw(200, body, content_type="text/event-stream")]) as router:
        async with FluxClient(base_url=router.base_url, api_key="k", stream=True) as client:
            assert (await _streamed(Agent(client=client))).output == "Sunny."

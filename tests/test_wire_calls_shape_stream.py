"""A tool call of the wrong shape in a STREAM is a malformed answer too, on both wires, and in the
whole answers that were still lenient about it (a list of non-objects, an Anthropic block).

Before: a streamed `tool_calls` that was a string or a number, an entry that was not an object,
an `arguments` / `partial_json` / `text` of the wrong type were dropped without a word (the run
ended "final" with the model's call lost); a bool or float `index` was a new call; an unhashable
Anthropic block index raised a raw TypeError out of `Agent.stream`; a whole answer's non-object
call reached the model as a nameless call. Now each is an `APIResponseError` that names the field
and shows what the router sent. What providers really send stays accepted (a missing index, null
ids and names in later fragments, arguments as an already-parsed object, one call sent bare).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from anyio.from_thread import start_blocking_portal
from helpers import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentloop import Agent, APIResponseError, FluxClient, RetryPolicy, RunFinished, ToolRegistry
from agentloop.testing import FakeFluxRouter, raw, text

pytestmark = pytest.mark.anyio

NO_RETRY = RetryPolicy(max_retries=0)
START = {"index": 0, "id": "c1", "type": "function", "function": {"name": "echo", "arguments": ""}}


def _tools() -> ToolRegistry:
    tools = ToolRegistry()

    @tools.tool
    def echo(text: str = "") -> str:
        return text

    return tools


def openai_sse(*deltas: Any) -> bytes:
    chunks = [{"choices": [{"index": 0, "delta": d}]} for d in deltas]
    chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    return b"".join(b"data: %s\n\n" % json.dumps(c).encode() for c in chunks) + b"data: [DONE]\n\n"


def anthropic_sse(*events: dict[str, Any]) -> bytes:
    head = {"type": "message_start", "message": {"id": "m", "usage": {"input_tokens": 1}}}
    tail = [
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 1}},
        {"type": "message_stop"},
    ]
    return b"".join(
        b"event: %s\ndata: %s\n\n" % (str(e.get("type")).encode(), json.dumps(e).encode())
        for e in [head, *events, *tail]
    )


def tool_start(block: Any, index: Any = 0) -> dict[str, Any]:
    return {"type": "content_block_start", "index": index, "content_block": block}


def block_delta(delta: Any, index: Any = 0) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": delta}


USE = {"type": "tool_use", "id": "t1", "name": "echo", "input": {}}


async def _stream(wire: str, body: bytes, *, streamed: bool = True) -> Any:
    """The run's result for `body` as the first answer (a final text after), through Agent.stream
    (or Agent.run for a whole body)."""
    reply = raw(200, body, content_type="text/event-stream") if streamed else raw(200, body)
    async with FakeFluxRouter([reply, text("done")]) as router:
        url = router.base_url if wire == "openai" else router.anthropic_url
        async with FluxClient(base_url=url, api_key="k", retry=NO_RETRY) as client:
            agent = Agent(client=client, tools=_tools())
            if not streamed:
                return await agent.run("go")
            async with agent.stream("go") as events:
                async for event in events:
                    if isinstance(event, RunFinished):
                        return event.result
    raise AssertionError("no RunFinished")


# --- the OpenAI stream --------------------------------------------------------------------------

OPENAI_BAD = {
    "tool_calls a string": ([{"tool_calls": "x"}], '`tool_calls` as a JSON string "x"'),
    "tool_calls a number": ([{"tool_calls": 7}], "`tool_calls` as a JSON number 7"),
    "tool_calls true": ([{"tool_calls": True}], "`tool_calls` as a JSON boolean true"),
    "tool_calls beside text": ([{"content": "hm", "tool_calls": "x"}], '`tool_calls` as a JSON string "x"'),
    "an entry a string": ([{"tool_calls": ["x"]}], 'a tool call that is a JSON string "x", not an object'),
    "entries numbers": ([{"tool_calls": [1, 2]}], "a tool call that is a JSON number 1"),
    "an entry null": ([{"tool_calls": [None]}], "a tool call that is a JSON null"),
    "a second entry not an object": ([{"tool_calls": [START, 5]}], "a tool call that is a JSON number 5"),
    "index negative": ([{"tool_calls": [{**START, "index": -1}]}], "`index` is a JSON number -1"),
    "index a bool": ([{"tool_calls": [{**START, "index": True}]}], "`index` is a JSON boolean true"),
    "index a float": ([{"tool_calls": [{**START, "index": 0.0}]}], "`index` is a JSON number 0.0"),
    "index a string": ([{"tool_calls": [{**START, "index": "0"}]}], '`index` is a JSON string "0"'),
    "index huge": ([{"tool_calls": [{**START, "index": 2**31}]}], "`index` is a JSON number 2147483648"),
    "function a string": ([{"tool_calls": [{**START, "function": "echo"}]}], "`function` is a JSON string"),
    "function a list": ([{"tool_calls": [{**START, "function": []}]}], "`function` is a JSON array []"),
    "arguments a number": (
        [{"tool_calls": [{**START, "function": {"name": "echo", "arguments": 7}}]}],
        "`function.arguments` is a JSON number 7, not a string or an object",
    ),
    "arguments a list": (
        [{"tool_calls": [{**START, "function": {"name": "echo", "arguments": [1]}}]}],
        "`function.arguments` is a JSON array [1]",
    ),
    "id a number": ([{"tool_calls": [{**START, "id": 5}]}], "`id` is a JSON number 5, not a string"),
    "name a list": (
        [{"tool_calls": [{**START, "function": {"name": ["echo"], "arguments": ""}}]}],
        '`function.name` is a JSON array ["echo"]',
    ),
    "a later fragment's arguments a number": (
        [{"tool_calls": [START]}, {"tool_calls": [{"index": 0, "function": {"arguments": 7}}]}],
        "`function.arguments` is a JSON number 7",
    ),
    "a later fragment's name a number": (
        [{"tool_calls": [START]}, {"tool_calls": [{"index": 0, "function": {"name": 5, "arguments": "{}"}}]}],
        "`function.name` is a JSON number 5",
    ),
    "a later fragment's function a string": (
        [{"tool_calls": [START]}, {"tool_calls": [{"index": 0, "function": "{}"}]}],
        '`function` is a JSON string "{}"',
    ),
    "legacy function_call a string": ([{"function_call": "echo"}], '`function` is a JSON string "echo"'),
}


@pytest.mark.parametrize("case", sorted(OPENAI_BAD))
async def test_an_openai_streamed_call_of_the_wrong_shape_is_a_malformed_answer(case: str) -> None:
    deltas, said = OPENAI_BAD[case]
    with pytest.raises(APIResponseError, match=re.escape(said)) as info:
        await _stream("openai", openai_sse(*deltas))
    assert "the stream carried" in str(info.value) and "router or proxy fault" in str(info.value)


OPENAI_LENIENT = {
    "one call sent bare, not in a list": [
        {"tool_calls": {**START, "function": {"name": "echo", "arguments": "{}"}}}
    ],
    "null id, type and name in later fragments (vLLM)": [
        {"tool_calls": [START]},
        {
            "tool_calls": [
                {"index": 0, "id": None, "type": None, "function": {"name": None, "arguments": "{}"}}
            ]
        },
    ],
    "arguments as an already-parsed object": [
        {"tool_calls": [{**START, "function": {"name": "echo", "arguments": {"text": "hi"}}}]}
    ],
    "no index at all": [{"tool_calls": [{"id": "c1", "function": {"name": "echo", "arguments": "{}"}}]}],
    "function missing in a fragment": [{"tool_calls": [START]}, {"tool_calls": [{"index": 0}]}],
    "an empty tool_calls beside text": [{"content": "hm", "tool_calls": []}, {"tool_calls": [START]}],
}


@pytest.mark.parametrize("case", sorted(OPENAI_LENIENT))
async def test_what_openai_compatible_servers_really_stream_is_still_a_call(case: str) -> None:
    result = await _stream("openai", openai_sse(*OPENAI_LENIENT[case]))
    assert [r.name for r in result.tool_calls] == ["echo"] and result.tool_calls[0].status == "ok"
    assert result.output == "done"


# --- the Anthropic stream -----------------------------------------------------------------------

ANTHROPIC_BAD = {
    "content_block a string": ([tool_start("tool_use")], 'a content block that is a JSON string "tool_use"'),
    "content_block null": ([tool_start(None)], "a content block that is a JSON null, not an object"),
    "content_block a number": ([tool_start(7)], "a content block that is a JSON number 7"),
    "block type a number": ([tool_start({**USE, "type": 5})], "a content block whose `type` is a JSON number 5"),
    "tool_use id a number": ([tool_start({**USE, "id": 5})], "a tool_use block whose `id` is a JSON number 5"),
    "tool_use name a list": ([tool_start({**USE, "name": ["echo"]})], 'a tool_use block whose `name` is a JSON array ["echo"]'),
    "text block text a number": ([tool_start({"type": "text", "text": 5})], "a text block whose `text` is a JSON number 5"),
    "block index negative": ([tool_start(USE, -1)], "a content_block_start whose `index` is a JSON number -1"),
    "block index a list (was a TypeError)": ([tool_start(USE, [0])], "a content_block_start whose `index` is a JSON array [0]"),
    "block index a bool": ([tool_start(USE, True)], "`index` is a JSON boolean true"),
    "a thinking block's index an object": (
        [tool_start({"type": "thinking", "thinking": "c"}, {"i": 1})],
        'a content_block_start whose `index` is a JSON object {"i":1}',
    ),
    "block index a string": ([tool_start(USE, "0")], '`index` is a JSON string "0"'),
    "partial_json a number": (
        [tool_start(USE), block_delta({"type": "input_json_delta", "partial_json": 7})],
        "an input_json_delta whose `partial_json` is a JSON number 7, not a string",
    ),
    "partial_json an object": (
        [tool_start(USE), block_delta({"type": "input_json_delta", "partial_json": {"text": "hi"}})],
        'an input_json_delta whose `partial_json` is a JSON object {"text":"hi"}',
    ),
    "text_delta text a number": (
        [tool_start({"type": "text", "text": ""}), block_delta({"type": "text_delta", "text": 5})],
        "a text_delta whose `text` is a JSON number 5",
    ),
    "delta a string": ([tool_start(USE), block_delta("{}")], 'a content_block_delta whose `delta` is a JSON string "{}"'),
    "delta null": ([tool_start(USE), block_delta(None)], "a content_block_delta whose `delta` is a JSON null"),
    "delta type a number": (
        [tool_start(USE), block_delta({"type": 1, "partial_json": "{}"})],
        "a content_block_delta whose delta's `type` is a JSON number 1",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(ANTHROPIC_BAD))
async def test_an_anthropic_streamed_block_of_the_wrong_shape_is_a_malformed_answer(case: str) -> None:
    events, said = ANTHROPIC_BAD[case]
    with pytest.raises(APIResponseError, match=re.escape(said)) as info:
        await _stream("anthropic", anthropic_sse(*events))
    assert "the stream carried" in str(info.value)


async def test_an_anthropic_stream_of_the_usual_shape_is_still_a_call() -> None:
    events = [
        tool_start({**USE, "id": None}),
        block_delta({"type": "input_json_delta", "partial_json": '{"text": '}),
        block_delta({"type": "input_json_delta", "partial_json": None}),  # (nothing, not a wrong type)
        block_delta({"type": "input_json_delta", "partial_json": '"hi"}'}),
        block_delta({"type": "citations_delta", "citation": 5}),  # a kind not known here: dropped
    ]
    result = await _stream("anthropic", anthropic_sse(*events))
    assert [(r.name, r.arguments, r.status) for r in result.tool_calls] == [("echo", {"text": "hi"}, "ok")]


# --- whole answers still lenient about it --------------------------------------------------------

WHOLE_BAD = {
    ("openai", "entries numbers"): ({"tool_calls": [1, 2]}, "a tool call that is a JSON number 1"),
    ("openai", "function a string"): (
        {"tool_calls": [{"id": "c", "function": "echo"}]},
        '`function` is a JSON string "echo"',
    ),
    ("openai", "arguments a list"): (
        {"tool_calls": [{"id": "c", "function": {"name": "echo", "arguments": [1]}}]},
        "`function.arguments` is a JSON array [1]",
    ),
    ("openai", "name a number"): (
        {"tool_calls": [{"id": "c", "function": {"name": 3, "arguments": "{}"}}]},
        "`function.name` is a JSON number 3",
    ),
    ("openai", "legacy function_call a string"): ({"function_call": "echo"}, '`function` is a JSON string "echo"'),
    ("anthropic", "a block a string"): (["echo"], 'a content block that is a JSON string "echo"'),
    ("anthropic", "tool_use name a number"): ([{**USE, "name": 3}], "a tool_use block whose `name` is a JSON number 3"),
    ("anthropic", "text a number"): ([{"type": "text", "text": 3}], "a text block whose `text` is a JSON number 3"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(WHOLE_BAD), ids=lambda c: f"{c[0]}-{c[1]}")
async def test_a_whole_answer_with_a_call_of_the_wrong_shape_is_a_malformed_answer(
    case: tuple[str, str],
) -> None:
    wire = case[0]
    shape, said = WHOLE_BAD[case]
    if wire == "openai":
        message = {"role": "assistant", **shape}
        body = {"choices": [{"message": message, "finish_reason": "tool_calls"}]}
    else:
        body = {"type": "message", "role": "assistant", "content": shape, "stop_reason": "tool_use"}
    with pytest.raises(APIResponseError, match=re.escape(said)) as info:
        await _stream(wire, json.dumps(body).encode(), streamed=False)
    assert "answered 200 with" in str(info.value)


# --- the property: any value at any place of a call --------------------------------------------

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from([0, 1, -1, 2**31 - 1, 2**31, 0.0, 1.5]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=6),
    st.sampled_from(
        ["", "echo", "{}", '{"text": "hi"}', "tool_use", "text", "text_delta", "input_json_delta"]
    ),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["index", "id", "function", "name", "arguments", "type", "text", "x"]), inner, max_size=3),
    max_leaves=6,
)  # fmt: skip


def _position(v: Any) -> bool:
    return type(v) is int and 0 <= v < 2**31


def _fits(v: Any, *kinds: type) -> bool:
    return v is None or type(v) in kinds


def _openai_wrong_entry(e: Any) -> bool:
    """The documented rules for one streamed OpenAI call, written from the README/wire notes."""
    if type(e) is not dict:
        return True
    fn = e.get("function")
    return (
        not (e.get("index") is None or _position(e.get("index")))
        or not _fits(e.get("id"), str)
        or not _fits(fn, dict)
        or (
            type(fn) is dict and (not _fits(fn.get("name"), str) or not _fits(fn.get("arguments"), str, dict))
        )
    )


def _openai_case(where: str, v: Any) -> tuple[list[Any], bool]:
    """The stream's deltas with `v` put at `where`, and whether it is of the wrong shape."""
    entry = {**START, "function": dict(START["function"])}
    if where == "tool_calls":
        wrong = bool(v) and (
            _openai_wrong_entry(v)
            if type(v) is dict
            else any(map(_openai_wrong_entry, v))
            if type(v) is list
            else True
        )
        return [{"tool_calls": v}], wrong
    if where == "entry":
        return [{"tool_calls": [v]}], _openai_wrong_entry(v)
    if where in ("name", "arguments"):
        entry["function"][where] = v
    else:
        entry[where] = v
    later = {"index": 0, "function": {"arguments": '{"text": "x"}'}}
    return [{"tool_calls": [entry]}, {"tool_calls": [later]}], _openai_wrong_entry(entry)


def _anthropic_wrong_block(b: Any) -> bool:
    if type(b) is not dict or type(b.get("type")) is not str:
        return True
    if b["type"] == "text":
        return not _fits(b.get("text"), str)
    return b["type"] == "tool_use" and not (_fits(b.get("id"), str) and _fits(b.get("name"), str))


def _anthropic_wrong_delta(d: Any) -> bool:
    if type(d) is not dict or type(d.get("type")) is not str:
        return True
    if d["type"] == "text_delta":
        return not _fits(d.get("text"), str)
    return d["type"] == "input_json_delta" and not _fits(d.get("partial_json"), str)


def _anthropic_case(where: str, v: Any) -> tuple[list[Any], bool]:
    block, delta = dict(USE), {"type": "input_json_delta", "partial_json": '{"text": "x"}'}
    if where == "block":
        block = v
    elif where in ("id", "name", "type"):
        block[where] = v
    elif where == "delta":
        delta = v
    else:
        delta[where] = v
    wrong = _anthropic_wrong_block(block) or _anthropic_wrong_delta(delta)
    return [tool_start(block), block_delta(delta)], wrong


SETTINGS = settings(
    max_examples=examples(25), deadline=None, suppress_health_check=list(HealthCheck), database=None
)


@pytest.fixture(scope="module", params=["asyncio", "trio"])
def portal(request: pytest.FixtureRequest) -> Iterator[Any]:
    with ExitStack() as stack:
        yield stack.enter_context(start_blocking_portal(request.param))


def _play(portal: Any, wire: str, events: list[Any], wrong: bool) -> None:
    body = openai_sse(*events) if wire == "openai" else anthropic_sse(*events)
    try:
        result = portal.call(_stream, wire, body)
    except APIResponseError as e:
        assert wrong, str(e)
        assert "the stream carried" in str(e)
        return
    assert not wrong, "a value of the wrong shape was taken without a word"
    assert result.stop_reason == "final"


@SETTINGS
@given(
    where=st.sampled_from(["tool_calls", "entry", "index", "id", "function", "name", "arguments"]),
    value=VALUES,
)
def test_any_value_anywhere_in_an_openai_streamed_call(portal: Any, where: str, value: Any) -> None:
    """Never a raw TypeError / KeyError / AttributeError, never a value of the wrong type dropped:
    an APIResponseError exactly when the documented rules say the shape is wrong."""
    events, wrong = _openai_case(where, value)
    _play(portal, "openai", events, wrong)


@SETTINGS
@given(
    where=st.sampled_from(["block", "id", "name", "type", "delta", "partial_json"]),
    value=VALUES,
)
def test_any_value_anywhere_in_an_anthropic_streamed_call(portal: Any, where: str, value: Any) -> None:
    events, wrong = _anthropic_case(where, value)
    _play(portal, "anthropic", events, wrong)

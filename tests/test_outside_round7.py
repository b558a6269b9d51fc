"""Outside-in review, round 7: a new user's ordinary agents, a hostile model over real HTTP, a
hostile tool and caller. Each test is the exact repro of a break found from the outside (public
API only), kept as a regression test; async ones run on asyncio and trio."""

from __future__ import annotations

import collections
import functools
import itertools
import json
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.abc
import pytest

from agentloop import (
    Agent,
    APIResponseError,
    APIStatusError,
    ConfigurationError,
    FluxClient,
    RetryPolicy,
    ToolRegistry,
)
from agentloop.testing import FakeFluxRouter, FunctionModel, call, raw

pytestmark = pytest.mark.anyio

BOM = b"\xef\xbb\xbf"
OPENAI_HI = (
    b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":"hi"},"finish_reason":"stop"}]}\n\n'
    b"data: [DONE]\n\n"
)
ANTHROPIC_START = {
    "type": "message_start",
    "message": {"id": "m", "type": "message", "role": "assistant", "content": [], "model": "claude-x"},
}
ANTHROPIC_TEXT = [
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}},
    {"type": "content_block_stop", "index": 0},
]
ANTHROPIC_END = [
    {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 1}},
    {"type": "message_stop"},
]


def anthropic_sse(events: list[dict[str, Any]]) -> bytes:
    return b"".join(b"event: %s\ndata: %s\n\n" % (e["type"].encode(), json.dumps(e).encode()) for e in events)


ANTHROPIC_HI = anthropic_sse([ANTHROPIC_START, *ANTHROPIC_TEXT, *ANTHROPIC_END])


async def _stream_result(router: FakeFluxRouter, wire: str) -> Any:
    url = router.base_url if wire == "openai" else router.anthropic_url
    async with FluxClient(base_url=url, api_key="k", retry=RetryPolicy(max_retries=0)) as client:
        async with Agent(client=client).stream("hi") as events:
            finished = [e async for e in events if type(e).__name__ == "RunFinished"]
    return finished[0].result


@pytest.mark.parametrize("chunk_size", [None, 1, 2])
@pytest.mark.parametrize("wire", ["openai", "anthropic"])
async def test_a_stream_starting_with_a_byte_order_mark_keeps_its_first_event(
    wire: str, chunk_size: Any
) -> None:
    """WHATWG's event-stream rules ignore one leading U+FEFF. Read as part of the first line, it
    made a field named "\\ufeffdata" of it and the first event was lost: an OpenAI answer of one
    event ended the run as a final "" (the model's text gone without a word), an Anthropic one
    lost its message_start (id, model, input usage). 6 of 6 failed before."""
    body = BOM + (OPENAI_HI if wire == "openai" else ANTHROPIC_HI)
    async with FakeFluxRouter(
        [raw(200, body, content_type="text/event-stream", chunk_size=chunk_size)]
    ) as router:
        result = await _stream_result(router, wire)
    assert result.output == "hi"
    if wire == "anthropic":
        assert result.usage.by_model.keys() == {"claude-x"}  # what the message_start said


EMPTY_STREAMS = {
    "openai-done-only": ("openai", b"data: [DONE]\n\n"),
    "openai-usage-only": (
        "openai",
        b'data: {"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}\n\n'
        b"data: [DONE]\n\n",
    ),
    "anthropic-stop-only": ("anthropic", b'event: message_stop\ndata: {"type":"message_stop"}\n\n'),
}


@pytest.mark.parametrize("case", sorted(EMPTY_STREAMS))
async def test_a_stream_that_carries_no_answer_is_a_response_error_not_an_empty_final_answer(
    case: str,
) -> None:
    """A body without choices (OpenAI) or without a message (Anthropic) is an APIResponseError;
    the same nothing streamed (`[DONE]` alone, a usage chunk alone, `message_stop` alone) ended
    the run "final" with output "", as if the model had answered nothing. 3 of 3 failed before."""
    wire, body = EMPTY_STREAMS[case]
    async with FakeFluxRouter([raw(200, body, content_type="text/event-stream")]) as router:
        with pytest.raises(APIResponseError, match="the stream ended without"):
            await _stream_result(router, wire)


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
async def test_an_empty_answer_that_says_so_is_still_an_empty_final_answer(wire: str) -> None:
    """What the check above must not catch: a choice (a message) with no text is an answer, ""."""
    if wire == "openai":
        body = b'data: {"choices":[{"index":0,"delta":{"role":"assistant"},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
    else:
        body = anthropic_sse([ANTHROPIC_START, *ANTHROPIC_END])
    async with FakeFluxRouter([raw(200, body, content_type="text/event-stream")]) as router:
        assert (await _stream_result(router, wire)).output == ""


RESULT_HOOKS = {
    "bad_dump": "RuntimeError: model_dump failed",
    "bad_tolist": "RuntimeError: tolist failed",
    "proxy": "LookupError: proxy has no",
    "exiting_tolist": "SystemExit: 3",
}


@pytest.mark.parametrize("mode", ["inline", "thread", "process"])
async def test_a_result_whose_own_conversion_raises_is_invalid_result_not_a_crash(mode: str) -> None:
    """A value that cannot be encoded becomes an error message for the model (README, Results).
    One whose own `model_dump` / `tolist` / `__getattr__` raised while agentloop encoded it let
    that exception out of `Agent.run` (inline and thread: the run lost, a raw RuntimeError) or
    was told as "process exited with code 0 without a result" ("process"). 6 of 6 failed before."""
    import hostile_tools7 as h7

    from agentloop import ToolRegistry

    async def wrap(fn: Any) -> Any:
        return fn()

    calls = [call(name, {}) for name in RESULT_HOOKS]
    model = FunctionModel(lambda messages, tools: calls if messages[-1]["role"] == "user" else "done")
    async with ToolRegistry(sandbox=None if mode == "inline" else mode) as tools:
        for name in RESULT_HOOKS:
            fn = getattr(h7, name)
            if mode == "inline":  # the same function, async: awaited in the event loop
                tools.register(functools.partial(wrap, fn), name=name, description=name)
            else:
                tools.register(fn)
        result = await Agent(client=model, tools=tools).run("go")
    assert result.output == "done"
    for record in result.tool_calls:
        assert (record.status, RESULT_HOOKS[record.name] in record.content) == ("invalid_result", True), (
            record
        )


@dataclass
class Box:
    width: int

    def __post_init__(self) -> None:
        if self.width < 0:
            raise RuntimeError(f"a box cannot be {self.width} wide")


async def test_a_parameters_own_check_raising_on_the_models_values_is_fed_back_not_a_crash() -> None:
    """A pydantic validator or a dataclass `__post_init__` that raises something other than
    ValueError / TypeError (a RuntimeError, a KeyError) on the values the model sent: that
    exception came out of `Agent.run`, so any model could end the caller's run by sending such a
    value. Now it is `invalid_arguments` naming it, as the same check on a structured output is
    (the run goes on; the model can correct itself). 2 of 2 failed before."""
    pydantic = pytest.importorskip("pydantic")

    class Order(pydantic.BaseModel):
        sku: str

        @pydantic.field_validator("sku")
        @classmethod
        def known(cls, sku: str) -> str:
            return {"A-1": sku}[sku]  # a lookup table: KeyError for an unknown sku

    tools = ToolRegistry()

    @tools.tool
    def pack(box: Box, order: Order) -> str:
        """Pack an order."""
        return f"{order.sku} in {box.width}"

    bad = [
        call("pack", {"box": {"width": -1}, "order": {"sku": "A-1"}}),
        call("pack", {"box": {"width": 2}, "order": {"sku": "Z"}}),
    ]
    model = FunctionModel(lambda messages, tools: bad if messages[-1]["role"] == "user" else "sorry")
    result = await Agent(client=model, tools=tools).run("pack it")
    assert result.output == "sorry"
    assert [(r.status, r.content) for r in result.tool_calls] == [
        ("invalid_arguments", "Invalid arguments for tool 'pack': RuntimeError: a box cannot be -1 wide"),
        ("invalid_arguments", "Invalid arguments for tool 'pack': KeyError: 'Z'"),
    ]


async def test_events_read_after_their_stream_block_ended_say_so_instead_of_ending_empty() -> None:
    """`async for` dedented one level out of `async with agent.stream(...)` (leaving the block
    cancels the run): the loop ended at once with no event and no error, as if the run had
    produced nothing. Events taken inside the block, to the end, still end quietly. 1 of 1 failed
    before."""
    model = FunctionModel(lambda messages, tools: "done")
    agent = Agent(client=model)
    async with agent.stream("hi") as events:
        pass
    with pytest.raises(ConfigurationError, match="put the `async for event in events:` loop inside"):
        async for _ in events:
            pass
    async with agent.stream("hi") as events:
        seen = [type(e).__name__ async for e in events]
    assert seen[-1] == "RunFinished" and [e async for e in events] == []


TOO_LARGE = (
    b"HTTP/1.1 413 Payload Too Large\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b'content-length: 44\r\n\r\n{"error":{"message":"the request is large"}}'
)


@pytest.mark.parametrize("transport", ["lean", "httpcore"])
async def test_an_answer_sent_before_the_request_was_read_is_that_answer(
    transport: str, anyio_backend: str
) -> None:
    """A router (nginx over `client_max_body_size`) that answers 413 after the request head and
    closes without reading the body: the client's write breaks with "connection reset". The lean
    transport reported that ("could not reach ... the connection broke while sending") and retried
    it, where httpcore reads the answer that was sent, as here: the 413 with its reason, not
    retried. 2 of 2 failed before (lean); httpcore's own pool on asyncio still loses it."""
    if transport == "httpcore" and anyio_backend == "asyncio":
        pytest.skip("httpcore over anyio's asyncio stream drops what arrived before the reset")
    opened = 0

    async def answer_early(stream: anyio.abc.SocketStream) -> None:
        nonlocal opened
        opened += 1
        async with stream:
            head = b""
            while b"\r\n\r\n" not in head:
                head += await stream.receive()
            await stream.send(TOO_LARGE)  # then close, the body unread: the kernel resets

    async with (
        await anyio.create_tcp_listener(local_host="127.0.0.1") as listener,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(listener.serve, answer_early)
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        async with FluxClient(
            base_url=f"http://127.0.0.1:{port}/v1",
            api_key="k",
            transport=transport,
            retry=RetryPolicy(max_retries=1),
        ) as client:
            with pytest.raises(APIStatusError) as info:
                await Agent(client=client).run("x" * 8_000_000)  # more than the socket buffers take
        tg.cancel_scope.cancel()
    assert (info.value.status_code, opened) == (413, 1)
    assert "the request is large" in str(info.value)


async def test_a_result_with_tuple_keys_is_told_in_the_models_words_not_orjsons() -> None:
    """A `Counter` of pairs (a dict with tuple keys) cannot be JSON: the model was told "Dict key
    must a type serializable with OPT_NON_STR_KEYS", the encoder's option name in broken English,
    which neither the model nor the tool's author can act on. 1 of 1 failed before."""
    tools = ToolRegistry()

    @tools.tool
    def pair_counts(text: str) -> dict[Any, int]:
        """Count the pairs of neighbouring letters."""
        return collections.Counter(itertools.pairwise(text))

    model = FunctionModel(
        lambda messages, tools: (
            [call("pair_counts", {"text": "abab"})] if messages[-1]["role"] == "user" else "ok"
        )
    )
    record = (await Agent(client=model, tools=tools).run("count")).tool_calls[0]
    assert record.status == "invalid_result"
    assert "a dict key is not a str, int, float, bool or None (e.g. a tuple)" in record.content
    assert "OPT_" not in record.content

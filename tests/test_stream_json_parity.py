"""A streamed answer accepts and refuses the JSON a non-streamed one does, on both wires.

The two paths decode differently (one parse of the whole body; one short parse per SSE event,
without the depth walk) and issue #19 keeps weighing other parsers for the streamed one (a C
decoder into typed structs was measured and not shipped: benchmarks/README.md). Whatever a
future change does to either path, a hostile value in an answer must end the same way on both:
read, or refused with the typed `APIResponseError`. The values are the ones JSON parsers
disagree on (NaN, 1e400, integers past 64 bits, lone surrogate escapes, duplicate keys, a BOM,
deep nesting), generated and placed where the wire ignores them and where it reads them.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from helpers import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from agentloop import Agent, APIResponseError, FluxClient, RetryPolicy
from agentloop._retry import Failure  # internal unit under test: the assembler's typed failure
from agentloop._wire import AnthropicWire, OpenAIWire  # internal unit under test: the two codecs
from agentloop.testing import FakeFluxRouter, raw

HOSTILE = [
    "NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1e-400", "-0.0", "-0", "1E+308", "1.8e308",
    "9" * 19, "9" * 25, "-" + "9" * 300, "18446744073709551616", "1" + "0" * 310, "0.1e1",
    '"\\ud800"', '"\\udc00"', '"\\ud800\\u0041"', '"\\ud83d\\ude00"', '"\\u0000"', '"\\x"', '"\t"',
    "\ufeff1", "\ufeff{}", '{"a":1,"a":2}', '{"a":1,"a":NaN}', " \n\t\r1 ", "[1,]", "01", "1_0",
    "[" * 199 + "]" * 199, "[" * 250 + "]" * 250, "{}", "null", "true",
]  # fmt: skip
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=4)
)  # st.floats: nan and inf, which json.dumps writes as NaN / Infinity
_generated = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3), max_leaves=8).map(json.dumps)  # fmt: skip
VALUES = st.one_of(st.sampled_from(HOSTILE), _generated)


def outcome(call: Any) -> Any:
    """The message content read, or "refused" for the typed error (anything else fails the test)."""
    try:
        turn = call()
    except Failure as f:
        assert isinstance(f.error, APIResponseError), f.error
        return "refused"
    except APIResponseError:
        return "refused"
    return turn.message["content"]


def openai(value: str, content: str) -> tuple[Any, Any]:
    """(non-streamed, streamed) outcomes of an answer carrying `value` and the text `content`."""
    body = f'{{"x":{value},"choices":[{{"index":0,"message":{{"role":"assistant","content":{content}}},"finish_reason":"stop"}}]}}'  # fmt: skip
    chunk = (
        f'{{"x":{value},"choices":[{{"index":0,"delta":{{"content":{content}}},"finish_reason":"stop"}}]}}'
    )

    def streamed() -> Any:
        asm = OpenAIWire.assembler("r", 1, None)
        _, failure = asm.feed_all([("message", chunk), ("message", "[DONE]")])
        if failure is not None:
            raise failure
        return asm.result()

    return outcome(lambda: OpenAIWire.decode(body.encode())), outcome(streamed)


def anthropic(value: str, content: str) -> tuple[Any, Any]:
    body = f'{{"x":{value},"type":"message","role":"assistant","content":[{{"type":"text","text":{content}}}],"stop_reason":"end_turn"}}'  # fmt: skip
    events = [
        (
            "message_start",
            '{"type":"message_start","message":{"id":"m","model":"c","usage":{"input_tokens":1}}}',
        ),
        (
            "content_block_start",
            '{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}',
        ),
        (
            "content_block_delta",
            f'{{"x":{value},"type":"content_block_delta","index":0,"delta":{{"type":"text_delta","text":{content}}}}}',
        ),
        ("content_block_stop", '{"type":"content_block_stop","index":0}'),
        (
            "message_delta",
            '{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":1}}',
        ),
        ("message_stop", '{"type":"message_stop"}'),
    ]

    def streamed() -> Any:
        asm = AnthropicWire.assembler("r", 1, None)
        _, failure = asm.feed_all(events)
        if failure is not None:
            raise failure
        return asm.result()

    return outcome(lambda: AnthropicWire.decode(body.encode())), outcome(streamed)


WIRES = [openai, anthropic]


@pytest.mark.parametrize("wire", WIRES, ids=["openai", "anthropic"])
@settings(max_examples=examples(60), deadline=None)
@given(value=VALUES)
def test_an_ignored_value_ends_a_streamed_answer_as_it_ends_a_whole_one(wire: Any, value: str) -> None:
    whole, streamed = wire(value, '"hi"')
    assert whole == streamed and whole in ("hi", "refused")


@pytest.mark.parametrize("wire", WIRES, ids=["openai", "anthropic"])
@settings(max_examples=examples(40), deadline=None)
@given(text=st.sampled_from(['"\\ud800"', '"a\\udc00b"', '"\\ud83d\\ude00"', '"\\u0000"', '"\\/"']) | st.text().map(json.dumps))  # fmt: skip
def test_the_text_itself_reads_the_same_streamed_and_whole(wire: Any, text: str) -> None:
    whole, streamed = wire("0", text)
    # An empty text is "" read whole and None streamed (the assembler joins no pieces): not a
    # JSON matter, and both mean "no text" to the loop.
    assert (whole or None) == (streamed or None)


# What the codec accepts and refuses today (orjson, a required dependency on CPython): any change
# of parser on either path must keep these, not only keep the two paths equal.
PINNED = {
    "NaN": "refused",  # the stdlib's json would read nan
    "-Infinity": "refused",
    "1e400": "refused",  # the stdlib's json would read inf
    '"\\ud800"': "refused",  # a lone surrogate escape: the stdlib's json would read '\ud800'
    "\ufeff1": "refused",
    "9" * 300: "hi",  # past 64 bits: read (as a float; tool arguments keep it exact: loads_exact)
    '{"a":1,"a":2}': "hi",  # a duplicate key: read, the last one wins
    "[" * 199 + "]" * 199: "hi",  # inside the codec's depth limit (200 with the envelope)
    "[" * 250 + "]" * 250: "refused",  # past it: DepthError, the same typed error
}


@pytest.mark.parametrize("wire", WIRES, ids=["openai", "anthropic"])
@pytest.mark.parametrize(("value", "want"), list(PINNED.items()), ids=list(range(len(PINNED))))
def test_what_the_codec_accepts_and_refuses_is_pinned(wire: Any, value: str, want: str) -> None:
    assert wire(value, '"hi"') == (want, want)


@pytest.mark.parametrize("wire", WIRES, ids=["openai", "anthropic"])
def test_a_duplicate_key_takes_the_last_value_on_both_paths(wire: Any) -> None:
    whole, streamed = wire("0", '"first","content":"second"' if wire is openai else '"first","text":"second"')
    assert whole == streamed == "second"


# --- the same, through the public API: a real run against the fake router, both event loops -----

END = b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'


async def run_against(reply: Any, streamed: bool) -> Any:
    async with FakeFluxRouter([reply]) as router:
        retry = RetryPolicy(max_retries=0)
        async with FluxClient(
            base_url=router.base_url, api_key="sk-parity-0123456789", retry=retry
        ) as client:
            agent = Agent(client=client)
            try:
                if not streamed:
                    return (await agent.run("hi")).output
                async with agent.stream("hi") as events:
                    async for _ in events:
                        pass
                return events.result.output
            except APIResponseError as e:
                assert any(w in str(e) for w in ("not JSON", "nested deeper", "a lone surrogate")), e
                return "refused"


@pytest.mark.anyio
@pytest.mark.parametrize(("value", "want"), list(PINNED.items()), ids=list(range(len(PINNED))))
async def test_a_run_ends_alike_streamed_or_not(value: str, want: str) -> None:
    body = f'{{"x":{value},"choices":[{{"index":0,"message":{{"role":"assistant","content":"hi"}},"finish_reason":"stop"}}]}}'  # fmt: skip
    chunk = f'data: {{"x":{value},"choices":[{{"index":0,"delta":{{"content":"hi"}}}}]}}\n\n'.encode()
    whole = await run_against(raw(200, body), streamed=False)
    streamed = await run_against(raw(200, chunk + END, content_type="text/event-stream"), streamed=True)
    assert whole == streamed == want

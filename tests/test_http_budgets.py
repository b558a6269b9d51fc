"""InputBudget's HTTP bounds, through a real run against a real loopback server (issue #15).

Each hostile response of the issue is served for real by `FakeFluxRouter` (`raw(..., repeat=None)`
is an endless body, `chunk_delay` a slow drip): the run must end in the typed error that names
the budget, on both backends (aiohttp's pool on asyncio, httpcore's on trio), both wires,
streamed and not. That a run ends at all against an endless body is the memory bound: the body
is never buffered past the budget.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from helpers import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentloop import (
    Agent,
    APIConnectionError,
    APIResponseError,
    APITimeoutError,
    FluxClient,
    InputBudget,
    InternalServerError,
    RetryPolicy,
)
from agentloop.testing import FakeFluxRouter, raw, text

pytestmark = pytest.mark.anyio

KEY = "sk-budget-test-0123456789"
KiB = 1024
CHUNK = b"x" * (64 * KiB)


def client_for(router: FakeFluxRouter, wire: str, *, retries: int = 0, **kwargs: Any) -> FluxClient:
    base = router.anthropic_url if wire == "anthropic" else router.base_url
    retry = RetryPolicy(max_retries=retries, initial_delay=0.001, max_delay=0.01)
    kwargs.setdefault("total_timeout", 60)  # a bound that fails fails here, instead of hanging the suite
    return FluxClient(base_url=base, api_key=KEY, retry=retry, **kwargs)


async def run_once(client: FluxClient, streamed: bool) -> Any:
    agent = Agent(client=client)
    if not streamed:
        return await agent.run("hi")
    async with agent.stream("hi") as events:
        async for event in events:
            last = event
    return last


@pytest.fixture(params=["openai", "anthropic"])
def wire(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(params=[False, True], ids=["plain", "streamed"])
def streamed(request: pytest.FixtureRequest) -> bool:
    return request.param


@pytest.mark.parametrize(
    "transport", ["auto", "httpcore"]
)  # auto: aiohttp's pool on asyncio, httpcore's on trio
async def test_endless_body_stops_at_max_response_bytes(wire: str, streamed: bool, transport: str) -> None:
    """Issue #15: a 1.5 GB body took 3.1 GB of RSS. An endless one now ends at the budget."""
    budget = InputBudget(max_response_bytes=512 * KiB)
    async with FakeFluxRouter([raw(200, CHUNK, repeat=None)]) as router:
        async with client_for(router, wire, retries=2, input_budget=budget, transport=transport) as client:
            with pytest.raises(APIResponseError) as info:
                await run_once(client, streamed)
    message = str(info.value)
    assert "InputBudget.max_response_bytes=524288" in message and "input_budget=InputBudget(" in message
    assert len(router.model_requests) == 1  # the same request gets the same answer: not retried


async def test_declared_length_over_budget_fails_before_reading(wire: str) -> None:
    body = b'{"choices": []}' + b" " * (300 * KiB)
    async with FakeFluxRouter([raw(200, body)]) as router:
        async with client_for(router, wire, input_budget=InputBudget(max_response_bytes=256 * KiB)) as client:
            with pytest.raises(APIResponseError, match="max_response_bytes"):
                await Agent(client=client).run("hi")


async def test_endless_sse_line_stops_at_max_sse_line_bytes(wire: str) -> None:
    """Issue #15: a 200 MB SSE line took 850 MB. A line that never ends now stops at the budget."""
    budget = InputBudget(max_sse_line_bytes=256 * KiB)
    async with FakeFluxRouter([raw(200, CHUNK, content_type="text/event-stream", repeat=None)]) as router:
        async with client_for(router, wire, input_budget=budget) as client:
            with pytest.raises(APIResponseError) as info:
                await run_once(client, streamed=True)
    assert "InputBudget.max_sse_line_bytes=262144" in str(info.value)


async def test_many_data_lines_of_one_event_count_as_one_line(wire: str) -> None:
    line = b"data: " + b"y" * 1000 + b"\n"  # short lines, never a blank one: one event without end
    async with FakeFluxRouter([raw(200, line * 64, content_type="text/event-stream", repeat=None)]) as router:
        async with client_for(router, wire, input_budget=InputBudget(max_sse_line_bytes=128 * KiB)) as client:
            with pytest.raises(APIResponseError, match="max_sse_line_bytes"):
                await run_once(client, streamed=True)


async def test_endless_stream_of_events_stops_at_max_response_bytes() -> None:
    event = b'data: {"id": "c", "choices": []}\n\n' * 100
    async with FakeFluxRouter([raw(200, event, content_type="text/event-stream", repeat=None)]) as router:
        async with client_for(
            router, "openai", input_budget=InputBudget(max_response_bytes=256 * KiB)
        ) as client:
            with pytest.raises(APIResponseError, match="max_response_bytes"):
                await run_once(client, streamed=True)


async def test_slow_drip_body_ends_at_the_request_timeout(wire: str, streamed: bool) -> None:
    """Issue #15: a body dripping one byte at a time never ended with the default settings.
    Every request now has a total bound: `InputBudget.request_timeout` when no total_timeout."""
    content_type = "text/event-stream" if streamed else "application/json"
    drip = raw(200, b" ", content_type=content_type, repeat=None, chunk_delay=0.005)
    async with FakeFluxRouter([drip]) as router:
        budget = InputBudget(request_timeout=0.5)
        async with client_for(router, wire, input_budget=budget, total_timeout=None) as client:
            with pytest.raises(APITimeoutError) as info:
                await run_once(client, streamed)
    assert "InputBudget.request_timeout=0.5" in str(info.value)


async def test_total_timeout_still_wins_over_the_budget() -> None:
    drip = raw(200, b" ", repeat=None, chunk_delay=0.005)
    async with FakeFluxRouter([drip]) as router:
        async with client_for(router, "openai", total_timeout=0.3) as client:
            with pytest.raises(APITimeoutError, match=r"total_timeout=0\.3"):
                await Agent(client=client).run("hi")


@pytest.mark.parametrize("noise", [b": keep-alive\n\n", b"event: ping\ndata: {\"type\": \"ping\"}\n\n",
                                   b"event: fluxrouter.status\ndata: {}\n\n"])  # fmt: skip
@pytest.mark.parametrize("transport", ["auto", "httpcore"])
async def test_keepalive_only_stream_ends_at_the_idle_timeout(
    wire: str, noise: bytes, transport: str
) -> None:
    """Issue #15: an SSE stream of keep-alives only never ended. Noise does not reset the idle
    clock; the stream is cut after `stream_idle_timeout` and retried like a read timeout."""
    script = [raw(200, noise, content_type="text/event-stream", repeat=None, chunk_delay=0.005), text("ok")]
    async with FakeFluxRouter(script) as router:
        budget = InputBudget(stream_idle_timeout=0.3)
        async with client_for(router, wire, retries=1, input_budget=budget, transport=transport) as client:
            last = await run_once(client, streamed=True)
    assert last.result.output == "ok"  # the idle stream was retried, and the retry answered
    assert len(router.model_requests) == 2


async def test_idle_stream_error_names_the_budget() -> None:
    keepalive = raw(
        200, b": keep-alive\n\n", content_type="text/event-stream", repeat=None, chunk_delay=0.005
    )
    async with FakeFluxRouter([keepalive]) as router:
        async with client_for(router, "openai", input_budget=InputBudget(stream_idle_timeout=0.2)) as client:
            with pytest.raises(APITimeoutError) as info:
                await run_once(client, streamed=True)
    assert "InputBudget.stream_idle_timeout=0.2" in str(info.value)


async def test_a_live_stream_is_not_idle() -> None:
    """Events that carry the answer restart the idle clock: a long, steady stream completes."""
    async with FakeFluxRouter([text("a b c d e f g h", chunk_delay=0.02)]) as router:
        async with client_for(router, "openai", input_budget=InputBudget(stream_idle_timeout=5)) as client:
            last = await run_once(client, streamed=True)
    assert last.result.output == "a b c d e f g h"


async def test_time_in_the_consumer_is_not_idleness() -> None:
    """README: time spent in the caller's consumer does not count toward stream_idle_timeout.
    The consumer here is deliberately slower than the idle budget on the first delta."""
    from agentloop import TextDelta

    async with FakeFluxRouter([text("one two three")]) as router:
        async with client_for(router, "openai", input_budget=InputBudget(stream_idle_timeout=0.2)) as client:
            slow_once = True
            async with Agent(client=client).stream("hi") as events:
                async for event in events:
                    if isinstance(event, TextDelta) and slow_once:
                        slow_once = False
                        await anyio.sleep(0.6)  # a slow consumer (the behaviour under test), not a wait
                    last = event
    assert last.result.output == "one two three"  # type: ignore[attr-defined]
    assert len(router.model_requests) == 1  # not cut and retried


async def test_endless_error_body_is_read_only_in_part(streamed: bool) -> None:
    async with FakeFluxRouter([raw(500, CHUNK, repeat=None)]) as router:
        async with client_for(router, "openai") as client:
            with pytest.raises(InternalServerError) as info:
                await run_once(client, streamed)
    assert info.value.status_code == 500 and len(str(info.value.body)) <= 2000


async def test_truncated_body_is_a_connection_error(streamed: bool) -> None:
    truncated = raw(200, b'{"choices": [', declared_length=1000)
    async with FakeFluxRouter([truncated, truncated]) as router:
        async with client_for(router, "openai", retries=1) as client:
            with pytest.raises(APIConnectionError):
                await run_once(client, streamed)
    assert len(router.model_requests) == 2  # a broken connection is retried


async def test_bad_content_encoding_is_a_typed_error() -> None:
    bad = raw(200, b"not gzip at all", headers={"content-encoding": "gzip"})
    async with FakeFluxRouter([bad]) as router:
        async with client_for(router, "openai") as client:
            with pytest.raises(APIResponseError, match="could not be decoded"):
                await Agent(client=client).run("hi")


def test_every_client_has_finite_http_budgets() -> None:
    client = FluxClient(api_key=KEY)
    budget = client.input_budget
    assert budget == InputBudget()
    assert budget.max_response_bytes < 1 << 30 and budget.max_sse_line_bytes < 1 << 30
    assert 0 < budget.stream_idle_timeout < 3600 and 0 < budget.request_timeout < 3600


def test_input_budget_must_be_an_input_budget() -> None:
    from agentloop import ConfigurationError

    with pytest.raises(ConfigurationError, match="InputBudget"):
        FluxClient(api_key=KEY, input_budget={"max_response_bytes": 1})  # type: ignore[arg-type]


# --- the bounded SSE reader parses what httpx-sse did -------------------------------------------------

OPENAI_EVENTS = [
    b'data: {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "hi "}}]}',
    b": keep-alive",
    b'data: {"choices": [{"index": 0, "delta": {"content": "th\xc3\xa9re"}}]}',
    b'data: {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}',
    b"data: [DONE]",
]
ANTHROPIC_EVENTS = [
    b'event: message_start\ndata: {"type": "message_start", "message": {"id": "m", "usage": {"input_tokens": 1}}}',
    b'event: content_block_start\ndata: {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}',
    b'event: ping\ndata: {"type": "ping"}',
    b'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi "}}',
    b'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "th\xc3\xa9re"}}',
    b'event: message_delta\ndata: {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}}',
    b'event: message_stop\ndata: {"type": "message_stop"}',
]


@settings(
    max_examples=examples(10), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(wire=st.sampled_from(["openai", "anthropic"]), newline=st.sampled_from([b"\n", b"\r\n", b"\r"]),
       chunk_size=st.integers(1, 64))  # fmt: skip
async def test_any_line_ending_and_any_chunking_parse_alike(
    wire: str, newline: bytes, chunk_size: int
) -> None:
    """SSE allows LF, CRLF and CR; the network may cut anywhere (inside a CRLF, inside a UTF-8
    character). Every combination gives the same answer."""
    events = ANTHROPIC_EVENTS if wire == "anthropic" else OPENAI_EVENTS
    body = b"".join(e.replace(b"\n", newline) + newline + newline for e in events)
    reply = raw(200, body, content_type="text/event-stream", chunk_size=chunk_size)
    async with FakeFluxRouter([reply]) as router:
        async with client_for(router, wire) as client:
            last = await run_once(client, streamed=True)
    assert last.result.output == "hi thére"

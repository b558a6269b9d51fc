"""The streamed answer's idle clock where the lean transport keeps it in its own reads (issue #19).

On the lean transport (`transport="auto"`, the default) the idle deadline of a streamed answer is
checked by the read that waits for body bytes instead of a cancel scope around the reading (no
timer armed and moved per answer). These tests break it from outside, against a real server,
next to httpx's transport (`"httpcore"`), which keeps the cancel scope: a stream that stays silent
after its head is cut at `stream_idle_timeout` whatever the body's framing (keep-alives only:
tests/test_http_budgets.py);
a read timeout shorter than the idle budget still reads as a read timeout; a cut answer's
connection is never reused for the retry.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from agentloop import Agent, APITimeoutError, FluxClient, InputBudget, RetryPolicy, RunFinished
from agentloop.testing import FakeFluxRouter, raw, text

pytestmark = pytest.mark.anyio

KEY = "sk-idle-clock-0123456789"
SSE = "text/event-stream"
ROLE = b'data: {"id":"c1","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n'


def client_for(router: FakeFluxRouter, transport: str, *, retries: int = 0, **kwargs: Any) -> FluxClient:
    retry = RetryPolicy(max_retries=retries, initial_delay=0.001, max_delay=0.01)
    kwargs.setdefault("total_timeout", 60)  # a bound that fails fails here instead of hanging the suite
    return FluxClient(base_url=router.base_url, api_key=KEY, retry=retry, transport=transport, **kwargs)


async def streamed(client: FluxClient) -> Any:
    last = None
    async with Agent(client=client).stream("hi") as events:
        async for event in events:
            last = event
    return last


@pytest.fixture(params=["auto", "httpcore"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# The server's first body bytes come 30 s after the head (never, for the test): chunked, or with
# a Content-Length the body has not reached (each framing has its own read loop).
SILENCES = {
    "chunked": raw(200, ROLE, content_type=SSE, repeat=2, chunk_delay=30),
    "content-length": raw(200, ROLE, content_type=SSE, repeat=2, chunk_delay=30, declared_length=10_000),
}


@pytest.mark.parametrize("framing", list(SILENCES))
async def test_a_stream_that_stays_silent_is_cut_at_the_idle_timeout(transport: str, framing: str) -> None:
    async with FakeFluxRouter([SILENCES[framing], text("ok")]) as router:
        budget = InputBudget(stream_idle_timeout=0.3)
        async with client_for(router, transport, retries=1, input_budget=budget) as client:
            last = await streamed(client)
    assert isinstance(last, RunFinished) and last.result.output == "ok"  # cut, then retried
    assert len(router.model_requests) == 2


async def test_the_idle_error_names_the_budget_when_retries_are_spent(transport: str) -> None:
    async with FakeFluxRouter([raw(200, ROLE, content_type=SSE, repeat=2, chunk_delay=30)]) as router:
        budget = InputBudget(stream_idle_timeout=0.2)
        async with client_for(router, transport, input_budget=budget) as client:
            with pytest.raises(APITimeoutError, match=r"InputBudget\.stream_idle_timeout=0\.2"):
                await streamed(client)


async def test_a_read_timeout_shorter_than_the_idle_budget_is_a_read_timeout(transport: str) -> None:
    """The idle deadline bounds the read only when it comes first; otherwise the read timeout
    does, with its own message (it names FluxClient(timeout=...), not the stream budget)."""
    async with FakeFluxRouter([raw(200, ROLE, content_type=SSE, repeat=2, chunk_delay=30)]) as router:
        budget = InputBudget(stream_idle_timeout=300)
        timeout = httpx.Timeout(30, read=0.2)
        async with client_for(router, transport, input_budget=budget, timeout=timeout) as client:
            with pytest.raises(APITimeoutError) as info:
                await streamed(client)
    assert "timeout=" in str(info.value) and "stream_idle_timeout" not in str(info.value)


async def test_an_answer_slower_than_the_idle_budget_in_all_is_not_idle(transport: str) -> None:
    """The clock restarts at every read that brought an event: an answer that takes three times
    the idle budget in all, an event every tenth of it, completes in one request."""
    async with FakeFluxRouter([text("a b c d e f g h i j k l m n o p", chunk_delay=0.03)]) as router:
        budget = InputBudget(stream_idle_timeout=0.3)
        async with client_for(router, transport, input_budget=budget) as client:
            last = await streamed(client)
    assert last.result.output == "a b c d e f g h i j k l m n o p"
    assert len(router.model_requests) == 1

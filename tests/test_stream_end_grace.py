"""`InputBudget.stream_end_grace`: how long the tail of a streamed body is read after the wire's
last event, only so the connection can be reused (a constant, 1 s, before).

Both directions through the public client, over a raw server that sends the whole answer, then
the chunked terminator only after a pause of its own: with a grace longer than that pause the
connection goes back to the pool (one connection for two requests); with a shorter one it is
closed instead (two connections), the answer kept either way, while `stream_idle_timeout` stays
at 300 s. No timing is asserted: the outcome is which connection served the second request.
"""

from __future__ import annotations

import math
from typing import Any

import anyio
import anyio.abc
import pytest
from test_http_lean_hostile import RawServer, ask, client, read_request

from agentloop import ConfigurationError, InputBudget

pytestmark = pytest.mark.anyio

BODY = b'data: {"choices":[{"index":0,"delta":{"content":"ok"},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


def slow_tail(pause: float) -> Any:
    """Each request: the whole answer at once, the terminating chunk after `pause` (a slow proxy)."""

    async def script(index: int, stream: anyio.abc.SocketStream) -> None:
        while await read_request(stream):
            await stream.send(HEAD + b"%x\r\n%b\r\n" % (len(BODY), BODY))
            await anyio.sleep(pause)
            await stream.send(b"0\r\n\r\n")

    return script


# The pause is far from the grace either way, so a busy machine does not decide the outcome:
# 30 s waited for 0.25 s; 0.01 s given up on a tail 0.75 s away (still under the old constant,
# 1 s, which waited for it: the case that failed before). A pause the client does not wait for
# costs the test nothing (the server is cancelled at the end).
@pytest.mark.parametrize("transport", ["lean", "httpcore"])
@pytest.mark.parametrize(
    ("grace", "pause", "connections"), [(30.0, 0.25, 1), (0.01, 0.75, 2)], ids=["waits", "gives-up"]
)
async def test_the_grace_decides_whether_a_slow_tails_connection_is_reused(
    transport: str, grace: float, pause: float, connections: int
) -> None:
    budget = InputBudget(stream_end_grace=grace)  # stream_idle_timeout stays 300 s
    async with RawServer(slow_tail(pause)) as server:
        async with client(server.url, transport=transport, input_budget=budget) as c:
            for _ in range(2):
                assert (await ask(c, stream=True)).message["content"] == "ok"
    assert server.opened == connections


@pytest.mark.parametrize("bad", [math.nan, math.inf, 0, -1.0, True, "1", None])
def test_the_grace_is_a_positive_finite_number_of_seconds(bad: Any) -> None:
    with pytest.raises(
        ConfigurationError, match=r"InputBudget\.stream_end_grace must be a positive, finite number"
    ):
        InputBudget(stream_end_grace=bad)


def test_the_default_is_one_second() -> None:
    assert InputBudget().stream_end_grace == 1.0

"""2xx answers other than 200, and large bodies, through `Agent.run` / `Agent.stream`.

A raw TCP server (from test_http_lean_hostile) sends exactly the bytes each case scripts, over
both transports (the lean default and httpx's own) on both backends.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from test_http_lean_hostile import ANSWER, RawServer, client, respond

from agentloop import Agent, APIResponseError, InputBudget

pytestmark = pytest.mark.anyio

TRANSPORTS = ["lean", "httpcore"]


def answer(status: bytes, body: bytes, content_type: bytes = b"text/plain") -> bytes:
    return b"HTTP/1.1 %b\r\ncontent-type: %b\r\ncontent-length: %d\r\n\r\n%b" % (
        status,
        content_type,
        len(body),
        body,
    )


async def run(url: str, transport: str, streamed: bool, **kw: Any) -> Any:
    agent = Agent(client=client(url, transport=transport, **kw), model="m")
    if not streamed:
        return await agent.run("hi")
    async with agent.stream("hi") as events:
        async for _ in events:
            pass
    return None


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize(
    ("status", "body"),
    [
        (b"202 Accepted", b"queued, come back later"),
        (b"203 Non-Authoritative Information", b"<html>proxy page</html>"),
        (b"206 Partial Content", b'{"choi'),
        (b"204 No Content", b""),  # a 204 has no body whatever it claims: the answer is empty
    ],
    ids=["202", "203", "206", "204"],
)
async def test_a_2xx_that_is_not_a_completion_names_its_real_status(
    transport: str, streamed: bool, status: bytes, body: bytes
) -> None:
    async with RawServer(respond(answer(status, body))) as server:
        with pytest.raises(APIResponseError) as info:
            await run(server.url, transport, streamed)
    code = status.split()[0].decode()
    assert f"answered {code} " in str(info.value)
    assert "answered 200" not in str(info.value)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_200_that_is_not_json_still_says_200(transport: str) -> None:
    async with RawServer(respond(answer(b"200 OK", b"<html>oops</html>"))) as server:
        with pytest.raises(APIResponseError, match="answered 200 with a body that is not JSON"):
            await run(server.url, transport, False)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_202_with_a_completion_is_an_answer(transport: str) -> None:
    raw = answer(b"202 Accepted", ANSWER, b"application/json")
    async with RawServer(respond(raw)) as server:
        result = await run(server.url, transport, False)
    assert result.output == "ok"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_large_body_is_decoded_without_a_thread(transport: str) -> None:
    # Bodies over 1 MiB were parsed in a worker thread; orjson holds the GIL, so that bought the
    # other runs nothing and started a thread nobody asked for. Still bounded by the budget.
    text = "x" * (3 * 1024 * 1024)
    message = {"role": "assistant", "content": text}
    body = json.dumps({"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}).encode()
    budget = InputBudget(max_response_bytes=4 * 1024 * 1024)
    async with RawServer(respond(answer(b"200 OK", body, b"application/json"))) as server:
        before = set(threading.enumerate())
        result = await run(server.url, transport, False, input_budget=budget)
        assert set(threading.enumerate()) - before == set()
    assert result.output == text
    small = InputBudget(max_response_bytes=2 * 1024 * 1024)
    async with RawServer(respond(answer(b"200 OK", body, b"application/json"))) as server:
        with pytest.raises(APIResponseError, match="max_response_bytes"):
            await run(server.url, transport, False, input_budget=small)


SSE = b'data: {"choices":[{"index":0,"delta":{"content":"ok"}}]}\n\ndata: [DONE]\n\n'


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(
    ("status", "body", "content_type", "says"),
    [
        (b"204 No Content", b"", b"application/json", "(it is empty)"),
        (b"205 Reset Content", b"", b"application/json", "(it is empty)"),
        (b"200 OK", b"  \r\n", b"application/json", "(it is empty)"),
        # a stream labelled as one JSON body (round 7), or sent to a request that did not stream
        (b"200 OK", SSE, b"application/json", "(it is a stream of server-sent events"),
        (b"200 OK", b"event: message\n" + SSE, b"text/plain", "(it is a stream of server-sent events"),
    ],
    ids=["204", "205", "blank", "sse-as-json", "sse-with-event"],
)
async def test_a_body_that_is_not_json_says_what_it_is_instead(
    transport: str, status: bytes, body: bytes, content_type: bytes, says: str
) -> None:
    # round 7: "answered 204 with a body that is not JSON" sent readers looking for a syntax error
    async with RawServer(respond(answer(status, body, content_type))) as server:
        with pytest.raises(APIResponseError) as info:
            await run(server.url, transport, False)
    assert "with a body that is not JSON " + says in str(info.value)

"""FakeFluxRouter over real HTTP (httpx), on asyncio and trio."""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest

from agentloop.testing import (
    FakeFluxRouter,
    RecordedRequest,
    Reply,
    call,
    drop,
    drop_after,
    error,
    raw,
    stream_error,
    text,
    tool_calls,
    weather_handler,
)

pytestmark = pytest.mark.anyio  # both backends: `anyio_backend` comes from tests/conftest.py


OPENAI_BODY = {"model": "flux-auto", "messages": [{"role": "user", "content": "hi"}]}
ANTHROPIC_BODY = {"model": "flux-auto", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}


def chat(router: FakeFluxRouter, wire: str) -> str:
    return (
        router.base_url + "/chat/completions" if wire == "openai" else router.anthropic_url + "/v1/messages"
    )


def body_for(wire: str, **extra: Any) -> dict[str, Any]:
    return {**(OPENAI_BODY if wire == "openai" else ANTHROPIC_BODY), **extra}


def sse_events(raw_text: str) -> list[tuple[str | None, str]]:
    """(event name, data) per SSE event; comments dropped."""
    events = []
    for block in raw_text.split("\n\n"):
        name, data = None, []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        if data:
            events.append((name, "\n".join(data)))
    return events


def openai_chunks(raw_text: str) -> list[dict[str, Any]]:
    return [json.loads(d) for name, d in sse_events(raw_text) if name is None and d != "[DONE]"]


def assemble_openai(chunks: list[dict[str, Any]]) -> tuple[str, dict[int, dict[str, str]], str | None]:
    """A lenient client: content, {index: {id, name, arguments}}, finish_reason. Names are kept
    from the first delta only; arguments are concatenated."""
    content, calls, finish = "", {}, None
    for c in chunks:
        for choice in c.get("choices") or []:
            delta = choice.get("delta") or {}
            content += delta.get("content") or ""
            for tc in delta.get("tool_calls") or []:
                slot = calls.setdefault(tc["index"], {"id": "", "name": "", "arguments": ""})
                slot["id"] = slot["id"] or tc.get("id", "")
                slot["name"] = slot["name"] or (tc.get("function") or {}).get("name", "")
                slot["arguments"] += (tc.get("function") or {}).get("arguments", "")
            finish = choice.get("finish_reason") or finish
    return content, calls, finish


def answer_text(wire: str, stream: bool, resp: httpx.Response) -> str:
    """The assistant text of a response, whatever the wire and mode."""
    if wire == "openai":
        return (
            assemble_openai(openai_chunks(resp.text))[0]
            if stream
            else resp.json()["choices"][0]["message"]["content"]
        )
    if not stream:
        return "".join(b["text"] for b in resp.json()["content"] if b["type"] == "text")
    datas = [json.loads(d) for name, d in sse_events(resp.text) if name == "content_block_delta"]
    return "".join(d["delta"].get("text", "") for d in datas)


async def read_until_error(
    client: httpx.AsyncClient, url: str, body: dict[str, Any]
) -> tuple[str, Exception | None]:
    """Stream a response, keeping what arrived before any transport error."""
    received = b""
    try:
        async with client.stream("POST", url, json=body) as resp:
            async for part in resp.aiter_raw():
                received += part
    except httpx.TransportError as e:
        return received.decode(), e
    return received.decode(), None


# --- render modes -----------------------------------------------------------------------------


async def test_openai_non_stream_shape() -> None:
    script = [
        text("Hello!", usage={"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}),
        tool_calls(
            call("get_weather", {"city": "Lisbon"}),
            call("raw_args", '{"broken'),
            call("no_args"),
            call("dup", {}, id="same"),
            call("dup", {}, id="same"),
            content="Let me check.",
        ),
        text("cut", finish_reason="length"),
    ]
    async with FakeFluxRouter(script) as router, httpx.AsyncClient() as client:
        r1 = (await client.post(chat(router, "openai"), json=body_for("openai", model="m-1"))).json()
        assert r1["object"] == "chat.completion" and r1["model"] == "m-1" and r1["id"]
        assert isinstance(r1["created"], int)
        assert r1["choices"] == [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello!"},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ]
        assert r1["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}

        r2 = (await client.post(chat(router, "openai"), json=body_for("openai"))).json()
        choice = r2["choices"][0]
        assert choice["finish_reason"] == "tool_calls"
        assert r2["usage"] == {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
        msg = choice["message"]
        assert msg["content"] == "Let me check."
        calls = msg["tool_calls"]
        assert [c["id"] for c in calls] == ["call_1", "call_2", "call_3", "same", "same"]
        assert all(c["type"] == "function" for c in calls)
        assert json.loads(calls[0]["function"]["arguments"]) == {"city": "Lisbon"}
        assert calls[1]["function"]["arguments"] == '{"broken'
        assert calls[2]["function"] == {"name": "no_args"}  # None → key missing

        r3 = (await client.post(chat(router, "openai"), json=body_for("openai"))).json()
        assert r3["choices"][0]["finish_reason"] == "length"


async def test_openai_stream_shape() -> None:
    script = [
        tool_calls(
            call("get_weather", {"city": "Lisbon"}),
            call("get_weather", {"city": "Porto"}),
            content="Checking",
        ),
        text("Sunny in Lisbon today."),
    ]
    async with FakeFluxRouter(script) as router, httpx.AsyncClient() as client:
        body = body_for("openai", stream=True, stream_options={"include_usage": True})
        resp = await client.post(chat(router, "openai"), json=body)
        assert resp.headers["content-type"] == "text/event-stream"
        assert resp.headers["transfer-encoding"] == "chunked"
        events = sse_events(resp.text)
        assert events[-1] == (None, "[DONE]")
        chunks = openai_chunks(resp.text)
        assert all(c["object"] == "chat.completion.chunk" and c["model"] == "flux-auto" for c in chunks)
        assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 15
        assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
        heads = [
            tc
            for c in chunks
            for ch in c["choices"]
            for tc in ch["delta"].get("tool_calls", [])
            if "id" in tc
        ]
        assert heads == [
            {
                "index": 0,
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": ""},
            },
            {
                "index": 1,
                "id": "call_2",
                "type": "function",
                "function": {"name": "get_weather", "arguments": ""},
            },
        ]
        content, calls, finish = assemble_openai(chunks)
        assert content == "Checking" and finish == "tool_calls"
        assert [json.loads(calls[i]["arguments"]) for i in (0, 1)] == [{"city": "Lisbon"}, {"city": "Porto"}]
        fragments = [
            tc
            for c in chunks
            for ch in c["choices"]
            for tc in ch["delta"].get("tool_calls", [])
            if tc["index"] == 0
        ]
        assert len(fragments) == 4  # header + ~3 argument fragments

        # Without include_usage: no usage chunk; text arrives in a few pieces.
        resp = await client.post(chat(router, "openai"), json=body_for("openai", stream=True))
        chunks = openai_chunks(resp.text)
        assert all(c["choices"] for c in chunks)
        pieces = [c["choices"][0]["delta"]["content"] for c in chunks[1:-1]]
        assert len(pieces) == 3 and "".join(pieces) == "Sunny in Lisbon today."
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_anthropic_non_stream_shape() -> None:
    script = [
        tool_calls(
            call("get_weather", {"city": "Lisbon"}, id="toolu_1"), call("empty", ""), content="Looking."
        ),
        text("Done.", usage={"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}),
    ]
    async with FakeFluxRouter(script) as router, httpx.AsyncClient() as client:
        r1 = (
            await client.post(chat(router, "anthropic"), json=body_for("anthropic", model="claude-x"))
        ).json()
        assert r1["type"] == "message" and r1["role"] == "assistant" and r1["model"] == "claude-x"
        assert r1["stop_reason"] == "tool_use"
        assert r1["content"] == [
            {"type": "text", "text": "Looking."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Lisbon"}},
            {"type": "tool_use", "id": "call_1", "name": "empty", "input": {}},
        ]
        assert r1["usage"] == {"input_tokens": 10, "output_tokens": 5}
        r2 = (await client.post(chat(router, "anthropic"), json=body_for("anthropic"))).json()
        assert r2["content"] == [{"type": "text", "text": "Done."}]
        assert r2["stop_reason"] == "end_turn" and r2["usage"] == {"input_tokens": 7, "output_tokens": 3}


async def test_anthropic_stream_shape() -> None:
    script = [tool_calls(call("get_weather", {"city": "Paris"}), content="Let me look")]
    async with FakeFluxRouter(script) as router, httpx.AsyncClient() as client:
        resp = await client.post(chat(router, "anthropic"), json=body_for("anthropic", stream=True))
        assert resp.headers["content-type"] == "text/event-stream"
        events = sse_events(resp.text)
        names = [n for n, _ in events]
        assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
        assert "ping" in names
        datas = [json.loads(d) for _, d in events]
        assert all(d["type"] == n for n, d in zip(names, datas, strict=True))
        assert datas[0]["message"]["content"] == [] and datas[0]["message"]["usage"]["input_tokens"] == 10
        starts = [d for d in datas if d["type"] == "content_block_start"]
        assert starts[0]["content_block"] == {"type": "text", "text": ""}
        assert starts[1]["content_block"] == {
            "type": "tool_use",
            "id": "call_1",
            "name": "get_weather",
            "input": {},
        }
        texts = "".join(
            d["delta"]["text"] for d in datas if d["type"] == "content_block_delta" and d["index"] == 0
        )
        partial = [d["delta"] for d in datas if d["type"] == "content_block_delta" and d["index"] == 1]
        assert texts == "Let me look"
        assert all(p["type"] == "input_json_delta" for p in partial) and len(partial) == 3
        assert json.loads("".join(p["partial_json"] for p in partial)) == {"city": "Paris"}
        assert sum(d["type"] == "content_block_stop" for d in datas) == 2
        assert datas[-2]["delta"]["stop_reason"] == "tool_use" and datas[-2]["usage"] == {"output_tokens": 5}


# --- recording, script, handler, auth ---------------------------------------------------------


async def test_requests_are_recorded() -> None:
    async with FakeFluxRouter([text("a"), text("b")]) as router, httpx.AsyncClient() as client:
        await client.post(
            chat(router, "openai") + "?x=1", json=body_for("openai", stream=True), headers={"X-Test": "1"}
        )
        await client.post(chat(router, "anthropic"), json=body_for("anthropic"))
        models = await client.get(router.base_url + "/models")
        missing = await client.get(router.url + "/nope")
    assert [m["id"] for m in models.json()["data"]] and models.json()["object"] == "list"
    assert missing.status_code == 404 and "no route" in missing.json()["error"]["message"]
    r = router.requests
    assert [(q.method, q.path, q.wire, q.stream) for q in r] == [
        ("POST", "/v1/chat/completions", "openai", True),
        ("POST", "/anthropic/v1/messages", "anthropic", False),
        ("GET", "/v1/models", None, False),
        ("GET", "/nope", None, False),
    ]
    assert isinstance(r[0], RecordedRequest) and r[0].headers["x-test"] == "1"
    assert r[0].json == body_for("openai", stream=True) and json.loads(r[0].body) == r[0].json
    assert r[2].json is None and r[2].body == b""
    assert router.model_requests == r[:2] and router.in_flight == 0


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
async def test_script_exhaustion_is_a_loud_500(wire: str) -> None:
    async with FakeFluxRouter([text("only")]) as router, httpx.AsyncClient() as client:
        assert (await client.post(chat(router, wire), json=body_for(wire))).status_code == 200
        resp = await client.post(chat(router, wire), json=body_for(wire))
        router.add(text("more"))
        again = await client.post(chat(router, wire), json=body_for(wire))
    assert resp.status_code == 500
    err = resp.json()["error"]
    assert err["message"] == "FakeFluxRouter: script exhausted after 1 replies"
    assert resp.json().get("type") == ("error" if wire == "anthropic" else None)
    assert again.status_code == 200


async def test_lazy_script_and_add_order() -> None:
    def gen() -> Any:
        yield text("one")
        yield text("two")

    async with FakeFluxRouter(gen()) as router, httpx.AsyncClient() as client:
        router.add(text("three"))
        got = [(await client.post(chat(router, "openai"), json=OPENAI_BODY)).json() for _ in range(3)]
    assert [g["choices"][0]["message"]["content"] for g in got] == ["one", "two", "three"]


async def test_handler_sync_async_and_raising() -> None:
    def sync_handler(req: RecordedRequest) -> Reply:
        return text(f"sync:{req.wire}:{req.json['model']}")

    async def async_handler(req: RecordedRequest) -> Reply:
        await anyio.lowlevel.checkpoint()
        if req.json["messages"][-1]["content"] == "boom":
            raise RuntimeError("handler exploded")
        return text("async")

    async with httpx.AsyncClient() as client:
        async with FakeFluxRouter(sync_handler) as router:
            r = await client.post(chat(router, "anthropic"), json=body_for("anthropic", model="m9"))
            assert r.json()["content"][0]["text"] == "sync:anthropic:m9"
        async with FakeFluxRouter(async_handler) as router:
            router.add(text("queued first"))
            r1 = await client.post(chat(router, "openai"), json=OPENAI_BODY)
            r2 = await client.post(chat(router, "openai"), json=OPENAI_BODY)
            bad = body_for("openai", messages=[{"role": "user", "content": "boom"}])
            r3 = await client.post(chat(router, "openai"), json=bad)
    assert r1.json()["choices"][0]["message"]["content"] == "queued first"
    assert r2.json()["choices"][0]["message"]["content"] == "async"
    assert r3.status_code == 500 and "handler exploded" in r3.json()["error"]["message"]


async def test_invalid_json_body_is_400_and_consumes_nothing() -> None:
    async with FakeFluxRouter([text("ok")]) as router, httpx.AsyncClient() as client:
        bad = await client.post(
            chat(router, "openai"), content=b"{not json", headers={"content-type": "application/json"}
        )
        good = await client.post(chat(router, "openai"), json=OPENAI_BODY)
    assert bad.status_code == 400 and good.status_code == 200
    assert router.requests[0].json is None and router.requests[0].body == b"{not json"


async def test_auth() -> None:
    async with FakeFluxRouter([text("a"), text("b"), text("c")], api_key="sk-test") as router:
        async with httpx.AsyncClient() as client:
            r = await client.post(chat(router, "openai"), json=OPENAI_BODY)
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
            r = await client.post(
                chat(router, "openai"), json=OPENAI_BODY, headers={"authorization": "Bearer nope"}
            )
            assert r.status_code == 401
            r = await client.post(
                chat(router, "anthropic"), json=ANTHROPIC_BODY, headers={"authorization": "Bearer sk-test"}
            )
            assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
            assert (await client.get(router.base_url + "/models")).status_code == 401
            ok = await client.post(
                chat(router, "openai"), json=OPENAI_BODY, headers={"authorization": "Bearer sk-test"}
            )
            anthropic_auth = {"x-api-key": "sk-test", "anthropic-version": "2023-06-01"}
            ok2 = await client.post(chat(router, "anthropic"), json=ANTHROPIC_BODY, headers=anthropic_auth)
            models = await client.get(
                router.base_url + "/models", headers={"authorization": "Bearer sk-test"}
            )
    assert ok.status_code == ok2.status_code == models.status_code == 200
    assert router.served == 2  # rejected requests consume no reply


# --- error / raw / drop / delay ---------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_error_reply_in_wire_style(stream: bool) -> None:
    headers = {
        "retry-after": "2",
        "retry-after-ms": "1500",
        "x-should-retry": "true",
        "x-request-id": "req_42",
    }
    script = [
        error(429, "slow down", type="rate_limit_error", code="rate_limited", headers=headers),
        error(400, "bad tools"),
    ]
    async with FakeFluxRouter(script) as router, httpx.AsyncClient() as client:
        r1 = await client.post(chat(router, "openai"), json=body_for("openai", stream=stream))
        r2 = await client.post(chat(router, "anthropic"), json=body_for("anthropic", stream=stream))
    assert r1.status_code == 429
    assert r1.json() == {
        "error": {"message": "slow down", "type": "rate_limit_error", "param": None, "code": "rate_limited"}
    }
    assert {k: r1.headers[k] for k in headers} == headers
    assert r1.headers["content-type"] == "application/json"
    assert r2.status_code == 400
    assert r2.json() == {"type": "error", "error": {"type": "invalid_request_error", "message": "bad tools"}}


async def test_raw_reply_is_verbatim() -> None:
    script = [
        raw(200, '{"error": {"message": "upstream failed"}}'),
        raw(502, b"<html>bad gateway</html>", content_type="text/html", headers={"X-Thing": "y"}),
        raw(200, '{"choices": [', delay=0),
    ]
    async with FakeFluxRouter(script) as router, httpx.AsyncClient() as client:
        r1 = await client.post(chat(router, "openai"), json=OPENAI_BODY)
        r2 = await client.post(chat(router, "anthropic"), json=body_for("anthropic", stream=True))
        r3 = await client.post(chat(router, "openai"), json=OPENAI_BODY)
    assert r1.status_code == 200 and r1.json() == {"error": {"message": "upstream failed"}}
    assert r2.status_code == 502 and r2.text == "<html>bad gateway</html>"
    assert r2.headers["content-type"] == "text/html" and r2.headers["x-thing"] == "y"
    assert r3.content == b'{"choices": ['


async def test_raw_sending_keywords_are_one_group_and_unknown_ones_are_refused() -> None:
    # raw()'s hostile-body options are one typed group (RawSending) passed as keywords, as before.
    reply = raw(200, b"ab", repeat=3, chunk_delay=0, declared_length=None, chunk_size=None)
    assert (reply.repeat, reply.chunk_delay, reply.declared_length, reply.chunk_size) == (3, 0, None, None)
    assert (raw(200, b"ab").repeat, raw(200, b"ab").chunk_size) == (1, None)
    with pytest.raises(TypeError, match="repaet"):
        raw(200, b"ab", repaet=3)  # type: ignore[call-arg]  # a typo is not silently ignored
    with pytest.raises(ValueError, match="repeat must be"):
        raw(200, b"ab", repeat=0)
    with pytest.raises(ValueError, match="declared_length must be longer"):
        raw(200, b"ab", declared_length=2)
    async with FakeFluxRouter([raw(200, "ab", repeat=3)]) as router, httpx.AsyncClient() as client:
        r = await client.post(chat(router, "openai"), json=OPENAI_BODY)
    assert r.content == b"ababab"


async def test_drop_closes_without_answer() -> None:
    async with FakeFluxRouter([drop(), text("after")]) as router, httpx.AsyncClient() as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post(chat(router, "openai"), json=OPENAI_BODY)
        r = await client.post(chat(router, "openai"), json=OPENAI_BODY)
        assert r.json()["choices"][0]["message"]["content"] == "after"
        assert router.in_flight == 0


async def test_delay_triggers_client_timeout_and_shutdown_is_clean() -> None:
    async with FakeFluxRouter([text("late", delay=30), text("soon", delay=0.05)]) as router:
        async with httpx.AsyncClient(timeout=httpx.Timeout(5, read=0.05)) as client:
            with pytest.raises(httpx.ReadTimeout):
                await client.post(chat(router, "openai"), json=OPENAI_BODY)
        async with httpx.AsyncClient() as client:
            start = anyio.current_time()
            r = await client.post(chat(router, "openai"), json=OPENAI_BODY)
            assert anyio.current_time() - start >= 0.05 and r.status_code == 200


async def test_chunk_delay_spaces_out_stream_events() -> None:
    async with FakeFluxRouter([text("abc", chunk_delay=0.01)]) as router, httpx.AsyncClient() as client:
        start = anyio.current_time()
        r = await client.post(chat(router, "openai"), json=body_for("openai", stream=True))
        assert anyio.current_time() - start >= 0.05  # 6 events, 0.01 s before each
        assert assemble_openai(openai_chunks(r.text))[0] == "abc"


# --- stream quirks ----------------------------------------------------------------------------

TWO_CALLS = (call("get_weather", {"city": "Lisbon"}), call("get_weather", {"city": "Tokyo"}))


async def test_quirk_no_done_and_usage_after_finish() -> None:
    script = [text("hi", quirks=["no_done"]), text("hi", quirks=["usage_after_finish"])]
    async with FakeFluxRouter(script) as router, httpx.AsyncClient() as client:
        r1 = await client.post(chat(router, "openai"), json=body_for("openai", stream=True))
        r2 = await client.post(chat(router, "openai"), json=body_for("openai", stream=True))
    assert "[DONE]" not in r1.text and openai_chunks(r1.text)[-1]["choices"][0]["finish_reason"] == "stop"
    chunks = openai_chunks(r2.text)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 5
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"


async def test_quirk_repeat_ids() -> None:
    async with (
        FakeFluxRouter([tool_calls(*TWO_CALLS, quirks=["repeat_ids"])]) as router,
        httpx.AsyncClient() as client,
    ):
        r = await client.post(chat(router, "openai"), json=body_for("openai", stream=True))
    deltas = [
        tc for c in openai_chunks(r.text) for ch in c["choices"] for tc in ch["delta"].get("tool_calls", [])
    ]
    assert len(deltas) == 8
    assert all(d["id"] and d["function"]["name"] == "get_weather" for d in deltas)
    _, calls, _ = assemble_openai(openai_chunks(r.text))
    assert calls[1]["name"] == "get_weather" and json.loads(calls[1]["arguments"]) == {"city": "Tokyo"}


async def test_quirk_interleave() -> None:
    async with (
        FakeFluxRouter([tool_calls(*TWO_CALLS, quirks=["interleave"])]) as router,
        httpx.AsyncClient() as client,
    ):
        r = await client.post(chat(router, "openai"), json=body_for("openai", stream=True))
    chunks = openai_chunks(r.text)
    order = [tc["index"] for c in chunks for ch in c["choices"] for tc in ch["delta"].get("tool_calls", [])]
    assert any(b < a for a, b in itertools.pairwise(order))  # a lower index after a higher one
    _, calls, _ = assemble_openai(chunks)
    assert [json.loads(calls[i]["arguments"])["city"] for i in (0, 1)] == ["Lisbon", "Tokyo"]


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
async def test_quirk_keepalive(wire: str) -> None:
    async with (
        FakeFluxRouter([text("Hello there", quirks=["keepalive"])]) as router,
        httpx.AsyncClient() as client,
    ):
        r = await client.post(chat(router, wire), json=body_for(wire, stream=True))
    assert ": keep-alive\n\n" in r.text
    assert ("fluxrouter.status", '{"status":"routed"}') in sse_events(r.text) or wire == "anthropic"
    assert "event: fluxrouter.status" in r.text


async def test_quirks_compose() -> None:
    reply = tool_calls(*TWO_CALLS, content="x", quirks=["no_done", "repeat_ids", "interleave", "keepalive"])
    reply = reply.with_quirks("usage_after_finish")
    async with FakeFluxRouter([reply]) as router, httpx.AsyncClient() as client:
        r = await client.post(chat(router, "openai"), json=body_for("openai", stream=True))
    assert "[DONE]" not in r.text and ": keep-alive" in r.text
    chunks = openai_chunks(r.text)
    assert chunks[-1]["choices"] == [] and "usage" in chunks[-1]
    content, calls, finish = assemble_openai(chunks)
    assert content == "x" and finish == "tool_calls" and calls[0]["id"] == "call_1"
    with pytest.raises(ValueError):
        text("x", quirks=["no_such_quirk"])


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
async def test_drop_after_mid_stream(wire: str) -> None:
    async with FakeFluxRouter([text("Hello there world", quirks=["keepalive", drop_after(2)])]) as router:
        async with httpx.AsyncClient() as client:
            got, exc = await read_until_error(client, chat(router, wire), body_for(wire, stream=True))
            assert isinstance(exc, httpx.RemoteProtocolError)
            assert len(sse_events(got)) == 3  # 2 counted events + the uncounted unknown event
            assert router.in_flight == 0


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
async def test_stream_error_event(wire: str) -> None:
    script = [
        text("Hello there world", quirks=[stream_error(3)]),
        text("x", quirks=[stream_error(1, {"message": "m", "type": "t"})]),
    ]
    async with FakeFluxRouter(script) as router, httpx.AsyncClient() as client:
        r = await client.post(chat(router, wire), json=body_for(wire, stream=True))
        custom = await client.post(chat(router, wire), json=body_for(wire, stream=True))
    events = sse_events(r.text)
    assert len(events) == 4
    name, data = events[-1]
    if wire == "openai":
        assert name is None and json.loads(data)["error"]["type"] == "server_error"
    else:
        assert name == "error" and json.loads(data) == {
            "type": "error",
            "error": {"type": "overloaded_error", "message": "Overloaded"},
        }
    assert json.loads(sse_events(custom.text)[-1][1])["error"] == {"message": "m", "type": "t"}


async def test_stream_faults_do_not_affect_non_stream_requests() -> None:
    async with (
        FakeFluxRouter([text("whole", quirks=[drop_after(1), "no_done"])]) as router,
        httpx.AsyncClient() as client,
    ):
        r = await client.post(chat(router, "openai"), json=OPENAI_BODY)
    assert r.json()["choices"][0]["message"]["content"] == "whole"


# --- connections, concurrency, shutdown -------------------------------------------------------


async def test_keep_alive_and_request_body_framings() -> None:
    async def chunked_body() -> AsyncIterator[bytes]:
        data = json.dumps(OPENAI_BODY).encode()
        for i in range(0, len(data), 7):
            yield data[i : i + 7]

    async with FakeFluxRouter([text(str(i)) for i in range(5)]) as router, httpx.AsyncClient() as client:
        for i in range(4):
            r = await client.post(chat(router, "openai"), json=body_for("openai", stream=bool(i % 2)))
            assert r.status_code == 200
        r = await client.post(chat(router, "openai"), content=chunked_body())
        assert r.json()["choices"][0]["message"]["content"] == "4"
    assert len({q.connection for q in router.requests}) == 1  # all five on one connection
    assert router.requests[-1].headers.get("transfer-encoding") == "chunked"
    assert router.requests[-1].json == OPENAI_BODY


async def test_twenty_concurrent_requests() -> None:
    answers: dict[int, str] = {}

    async def one(client: httpx.AsyncClient, router: FakeFluxRouter, i: int) -> None:
        wire, stream = ("openai" if i % 2 else "anthropic"), i % 3 == 0
        r = await client.post(chat(router, wire), json=body_for(wire, stream=stream))
        assert r.status_code == 200
        answers[i] = answer_text(wire, stream, r)

    async with (
        FakeFluxRouter([text(f"answer-{i}") for i in range(20)]) as router,
        httpx.AsyncClient() as client,
    ):
        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(one, client, router, i)
    assert len(router.requests) == 20
    assert sorted(answers.values()) == sorted(f"answer-{i}" for i in range(20))  # each reply served once
    assert router.served == 20 and router.in_flight == 0


async def test_clean_shutdown_with_request_in_flight() -> None:
    started = anyio.Event()
    outcome: list[BaseException] = []

    async def stuck(req: RecordedRequest) -> Reply:
        started.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def client_call(client: httpx.AsyncClient, url: str) -> None:
        try:
            await client.post(url, json=OPENAI_BODY)
        except httpx.TransportError as e:
            outcome.append(e)

    async with httpx.AsyncClient() as client, anyio.create_task_group() as tg:
        async with FakeFluxRouter(stuck) as router:
            tg.start_soon(client_call, client, chat(router, "openai"))
            await started.wait()
            assert router.in_flight == 1
        assert router.in_flight == 0
    assert len(outcome) == 1 and isinstance(outcome[0], httpx.RemoteProtocolError)


# --- the demo handler -------------------------------------------------------------------------


async def test_weather_handler_openai_round_trip() -> None:
    async with FakeFluxRouter(weather_handler) as router, httpx.AsyncClient() as client:
        messages: list[dict[str, Any]] = [
            {"role": "user", "content": "Weather in paris and Tokyo, then Paris again?"}
        ]
        r = (await client.post(chat(router, "openai"), json=body_for("openai", messages=messages))).json()
        msg = r["choices"][0]["message"]
        assert [json.loads(c["function"]["arguments"]) for c in msg["tool_calls"]] == [
            {"city": "Paris"},
            {"city": "Tokyo"},
        ]
        messages.append(msg)
        results = [{"temperature_c": 18, "conditions": "cloudy"}, "error: station offline"]
        for tc, res in zip(msg["tool_calls"], results, strict=True):
            content = res if isinstance(res, str) else json.dumps(res)
            messages.append({"role": "tool", "tool_call_id": tc["id"], "content": content})
        r = (await client.post(chat(router, "openai"), json=body_for("openai", messages=messages))).json()
        assert r["choices"][0]["message"]["content"] == "Paris: 18 °C, cloudy\nTokyo: error: station offline"
        default = body_for(
            "openai", messages=[{"role": "user", "content": [{"type": "text", "text": "weather?"}]}]
        )
        r = (await client.post(chat(router, "openai"), json=default)).json()
        assert json.loads(r["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]) == {
            "city": "Lisbon"
        }


async def test_weather_handler_anthropic_round_trip() -> None:
    async with FakeFluxRouter(weather_handler) as router, httpx.AsyncClient() as client:
        messages: list[dict[str, Any]] = [{"role": "user", "content": "How is Lisbon? And Porto?"}]
        r = (
            await client.post(
                chat(router, "anthropic"), json=body_for("anthropic", messages=messages, stream=True)
            )
        ).text
        starts = [json.loads(d)["content_block"] for n, d in sse_events(r) if n == "content_block_start"]
        assert [b["name"] for b in starts] == ["get_weather", "get_weather"]
        r = (
            await client.post(chat(router, "anthropic"), json=body_for("anthropic", messages=messages))
        ).json()
        uses = [b for b in r["content"] if b["type"] == "tool_use"]
        assert [u["input"] for u in uses] == [{"city": "Lisbon"}, {"city": "Porto"}]
        messages.append({"role": "assistant", "content": r["content"]})
        lisbon = '{"city": "Lisbon", "temp_c": 21, "sky": "clear"}'
        porto = [{"type": "text", "text": "boom"}]
        results = [
            {"type": "tool_result", "tool_use_id": uses[0]["id"], "content": lisbon},
            {"type": "tool_result", "tool_use_id": uses[1]["id"], "content": porto, "is_error": True},
        ]
        messages.append({"role": "user", "content": results})
        r = (
            await client.post(chat(router, "anthropic"), json=body_for("anthropic", messages=messages))
        ).json()
    assert r["stop_reason"] == "end_turn"
    assert r["content"] == [{"type": "text", "text": "Lisbon: 21 °C, clear\nPorto: unavailable (boom)"}]


async def test_malformed_http_and_bad_script_items() -> None:
    async with FakeFluxRouter([{"not": "a reply"}]) as router:  # type: ignore[list-item]
        async with await anyio.connect_tcp("127.0.0.1", int(router.url.rsplit(":", 1)[1])) as sock:
            await sock.send(b"NOT HTTP AT ALL\r\n\r\n")
            answer = b""
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                while True:
                    answer += await sock.receive()
        assert answer.startswith(b"HTTP/1.1 400 ")
        async with httpx.AsyncClient() as client:
            r = await client.post(chat(router, "openai"), json=OPENAI_BODY)
        assert r.status_code == 500 and "expected a Reply" in r.json()["error"]["message"]
    with pytest.raises(TypeError):
        router.add("nope")  # type: ignore[arg-type]


async def test_an_error_in_the_body_propagates_unwrapped() -> None:
    with pytest.raises(KeyError):
        async with FakeFluxRouter():
            raise KeyError("mine")


@pytest.mark.parametrize("arguments", [[1, 2], 7, True, ("a",)])
def test_a_call_scripted_with_arguments_not_a_dict_or_text_is_refused_where_it_is_written(
    arguments: Any,
) -> None:
    # it was accepted, then the fake router's own task died on it with its renderer's TypeError
    with pytest.raises(TypeError, match=r"call\('t', \.\.\.\): arguments are a dict, a str .*json\.dumps"):
        call("t", arguments)
    assert call("t", json.dumps(arguments)).arguments == json.dumps(arguments)  # the way to send it


@pytest.mark.parametrize("arguments", [{"x": float("inf")}, {"x": {1, 2}}, {"x": object()}])
def test_a_call_scripted_with_arguments_json_cannot_hold_is_refused_where_it_is_written(
    arguments: Any,
) -> None:
    # accepted, then the fake router's task died on it (ValueError / TypeError of its encoder)
    with pytest.raises(TypeError, match=r"call\('t', \.\.\.\): the arguments cannot be sent as JSON"):
        call("t", arguments)
    assert call("t", '{"x": Infinity}').arguments == '{"x": Infinity}'  # such text is scripted as a str

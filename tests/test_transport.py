"""Transport robustness: retries (openai-python's rules), timeouts, typed errors, on both wires and
both backends, over the real-HTTP fake router."""

from __future__ import annotations

import email.utils
import time
from typing import Any

import anyio
import httpx
import pytest

from agentloop import (
    Agent,
    APIConnectionError,
    APIResponseError,
    APITimeoutError,
    BadRequestError,
    FluxClient,
    InternalServerError,
    ModelRequest,
    RateLimitError,
    RetryPolicy,
    ToolRegistry,
    ToolsNotSupportedError,
)
from agentloop.testing import FakeFluxRouter, call, drop, error, raw, text, tool_calls

pytestmark = pytest.mark.anyio

WIRES = ["openai", "anthropic"]


class RecordingPolicy(RetryPolicy):
    """The real policy, but it records the delays it chose and makes the test wait only 1 ms."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        object.__setattr__(self, "chosen", [])

    def delay(self, retry_index: int, headers: Any = None) -> float:
        self.chosen.append(RetryPolicy.delay(self, retry_index, headers))  # type: ignore[attr-defined]
        return 0.001


def url_for(router: FakeFluxRouter, wire: str) -> str:
    return router.base_url if wire == "openai" else router.anthropic_url


async def one(client: FluxClient, *, stream: bool = False) -> Any:
    seen: list[Any] = []

    async def emit(event: Any) -> None:
        seen.append(event)

    req = ModelRequest(
        model="flux-auto", messages=[{"role": "user", "content": "hi"}], tools=[], run_id="r", step=1
    )
    return await client.request(req, emit if stream else None)


# --- the policy itself --------------------------------------------------------------------------


def test_backoff_is_jittered_exponential_and_capped() -> None:
    policy = RetryPolicy()
    for n in range(8):
        top = min(0.5 * 2**n, 8.0)
        for _ in range(50):
            assert 0.75 * top <= policy.delay(n) <= top


def test_retry_after_headers() -> None:
    policy = RetryPolicy()
    assert policy.delay(0, {"retry-after-ms": "250"}) == 0.25
    assert policy.delay(0, {"retry-after-ms": "250", "retry-after": "30"}) == 0.25  # -ms first
    assert policy.delay(0, {"retry-after": "3"}) == 3.0
    date = email.utils.formatdate(time.time() + 20, usegmt=True)
    assert 18 <= policy.delay(0, {"retry-after": date}) <= 20.5
    assert policy.delay(0, {"retry-after": "120"}) <= 0.5  # over 60 s: not honoured, backoff instead
    assert policy.delay(0, {"retry-after": "soon"}) <= 0.5
    assert policy.delay(0, {"retry-after": "-1"}) <= 0.5


def test_status_rules_and_x_should_retry() -> None:
    policy = RetryPolicy()
    assert [s for s in (400, 401, 403, 404, 408, 409, 422, 429, 500, 502, 529) if policy.should_retry_status(s, {})] == [
        408, 409, 429, 500, 502, 529,
    ]  # fmt: skip
    assert policy.should_retry_status(400, {"x-should-retry": "true"})
    assert not policy.should_retry_status(503, {"x-should-retry": "False"})
    with pytest.raises(ValueError):
        RetryPolicy(max_retries=-1)


# --- retries over HTTP --------------------------------------------------------------------------


@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize("stream", [False, True])
async def test_429_with_retry_after_is_honoured(router: FakeFluxRouter, wire: str, stream: bool) -> None:
    router.add(error(429, "slow down", type="rate_limit_error", headers={"retry-after": "2"}), text("ok"))
    policy = RecordingPolicy()
    async with FluxClient(base_url=url_for(router, wire), api_key="k", retry=policy) as client:
        turn = await one(client, stream=stream)
    assert turn.message["content"] == "ok"
    assert policy.chosen == [2.0] and len(router.requests) == 2


async def test_429_gives_up_with_a_typed_error(router: FakeFluxRouter) -> None:
    router.add(*[error(429, "slow down", headers={"retry-after-ms": "5"})] * 3)
    async with FluxClient(base_url=router.base_url, api_key="k", retry=RecordingPolicy()) as client:
        with pytest.raises(RateLimitError, match="slow down") as info:
            await one(client)
    assert info.value.status_code == 429 and "RetryPolicy(max_retries" in str(info.value)
    assert len(router.requests) == 3


@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize("stream", [False, True])
async def test_500s_then_success(router: FakeFluxRouter, wire: str, stream: bool) -> None:
    router.add(error(500, "boom", type="server_error"), error(503, "busy"), text("ok"))
    policy = RecordingPolicy()
    async with FluxClient(base_url=url_for(router, wire), api_key="k", retry=policy) as client:
        turn = await one(client, stream=stream)
    assert turn.message["content"] == "ok" and len(router.requests) == 3
    assert 0.375 <= policy.chosen[0] <= 0.5 and 0.75 <= policy.chosen[1] <= 1.0  # backoff, no header


async def test_500s_past_max_retries(router: FakeFluxRouter) -> None:
    router.add(*[error(500, "boom")] * 2)
    async with FluxClient(
        base_url=router.base_url, api_key="k", retry=RecordingPolicy(max_retries=1)
    ) as client:
        with pytest.raises(InternalServerError, match="boom"):
            await one(client)
    assert len(router.requests) == 2


async def test_x_should_retry_true_retries_a_400(router: FakeFluxRouter) -> None:
    router.add(error(400, "transient", headers={"x-should-retry": "true"}), text("ok"))
    async with FluxClient(base_url=router.base_url, api_key="k", retry=RecordingPolicy()) as client:
        assert (await one(client)).message["content"] == "ok"


@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize("stream", [False, True])
async def test_connection_drop_before_the_answer_is_retried(
    router: FakeFluxRouter, wire: str, stream: bool
) -> None:
    router.add(drop(), text("ok"))
    async with FluxClient(base_url=url_for(router, wire), api_key="k", retry=RecordingPolicy()) as client:
        assert (await one(client, stream=stream)).message["content"] == "ok"
    assert len(router.requests) == 2


async def test_connection_drops_exhaust_retries(router: FakeFluxRouter) -> None:
    router.add(drop(), drop(), drop())
    async with FluxClient(
        base_url=router.base_url, api_key="secret-key-abcdef", retry=RecordingPolicy()
    ) as client:
        with pytest.raises(APIConnectionError) as info:
            await one(client)
    assert "secret-key-abcdef" not in str(info.value) and len(router.requests) == 3


async def test_unreachable_host_is_a_connection_error() -> None:
    async with FakeFluxRouter() as r:
        url = r.base_url  # the port is free again once the router is gone
    async with FluxClient(base_url=url, api_key="k", retry=RetryPolicy(max_retries=0)) as client:
        with pytest.raises(APIConnectionError, match="could not reach"):
            await one(client)


# --- timeouts ---------------------------------------------------------------------------------


async def test_read_timeout(router: FakeFluxRouter) -> None:
    router.add(text("late", delay=1.0))
    timeout = httpx.Timeout(5.0, read=0.05)
    async with FluxClient(
        base_url=router.base_url, api_key="k", timeout=timeout, retry=RetryPolicy(max_retries=0)
    ) as c:
        with pytest.raises(APITimeoutError, match="timed out"):
            await one(c)


async def test_read_timeout_of_a_stream_before_any_delta_is_retried(router: FakeFluxRouter) -> None:
    router.add(*[text("late", chunk_delay=0.5)] * 2, text("in time"))
    timeout = httpx.Timeout(5.0, read=0.1)
    async with FluxClient(
        base_url=router.base_url, api_key="k", timeout=timeout, retry=RecordingPolicy()
    ) as c:
        assert (await one(c, stream=True)).message["content"] == "in time"
        router.add(*[text("late", chunk_delay=0.5)] * 3)
        with pytest.raises(APITimeoutError, match="ReadTimeout"):
            await one(c, stream=True)
    assert len(router.requests) == 6


async def test_total_timeout_bounds_one_request_with_its_retries(router: FakeFluxRouter) -> None:
    # The retry's answer never comes (an hour): only total_timeout can end the request. The
    # bound is generous so that two loopback requests fit in it on a busy machine (the old 0.2 s
    # failed whenever the first request paid for importing the transport's library).
    router.add(error(500, "boom"), text("late", delay=3600))
    async with FluxClient(
        base_url=router.base_url, api_key="k", total_timeout=1.5, retry=RecordingPolicy()
    ) as c:
        start = time.perf_counter()
        with pytest.raises(APITimeoutError, match=r"total_timeout=1\.5"):
            await one(c)
        assert time.perf_counter() - start < 600  # ended by total_timeout, not by the hour-long answer
    assert len(router.requests) == 2


FIRST_REQUEST = """
import sys, anyio
from agentloop import FluxClient

async def main():
    kind = sys.argv[2]
    async with FluxClient(base_url="https://127.0.0.1:9/v1", api_key="k", transport=kind) as c:
        ready = "aiohttp" in sys.modules if kind == "aiohttp" else c._sender.pool._ssl is not None
        print(ready, "aiohttp" in sys.modules)

anyio.run(main, backend=sys.argv[1])
"""


@pytest.mark.parametrize(("backend", "kind"), [("asyncio", "auto"), ("trio", "auto"), ("asyncio", "aiohttp")])
def test_entering_the_client_builds_the_transport_not_the_first_request(backend: str, kind: str) -> None:
    # Regression (#13): aiohttp was imported inside the first request on asyncio (0.3-0.7 s
    # charged to that request's total_timeout). A fresh interpreter, so no earlier test imported it.
    # The lean transport (the default) builds its SSL context (~30 ms) on entering, and never
    # imports aiohttp.
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", FIRST_REQUEST, backend, kind], capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == ["True", "True" if kind == "aiohttp" else "False"]


async def test_the_runs_deadline_wins(router: FakeFluxRouter) -> None:
    router.add(text("late", delay=5.0))
    async with FluxClient(base_url=router.base_url, api_key="k", total_timeout=60) as c:
        with anyio.move_on_after(0.1) as scope:
            await Agent(client=c).run("hi")
    assert scope.cancelled_caught  # cancelled by the caller's scope, not turned into an APIError


# --- typed answers ------------------------------------------------------------------------------


@pytest.mark.parametrize("wire", WIRES)
async def test_tools_not_supported(router: FakeFluxRouter, wire: str) -> None:
    router.add(error(400, "This model does not support tools", type="invalid_request_error"))
    async with FluxClient(base_url=url_for(router, wire), api_key="k") as c:
        with pytest.raises(ToolsNotSupportedError, match="flux-pinned-") as info:
            await one(c)
    assert isinstance(info.value, BadRequestError) and info.value.status_code == 400
    assert len(router.requests) == 1  # never retried


@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("{not json", "not JSON"),
        ('{"error": {"message": "upstream exploded", "type": "server_error"}}', "upstream exploded"),
        ("[1, 2]", "instead of"),
        ('"just a string"', "instead of"),
    ],
)
async def test_200_that_is_not_an_answer(router: FakeFluxRouter, wire: str, body: str, match: str) -> None:
    router.add(raw(200, body))
    async with FluxClient(base_url=url_for(router, wire), api_key="k") as c:
        with pytest.raises(APIResponseError, match=match) as info:
            await one(c)
    assert info.value.request_id is None or isinstance(info.value.request_id, str)
    assert len(router.requests) == 1


async def test_200_without_choices(router: FakeFluxRouter) -> None:
    router.add(raw(200, '{"id": "x", "choices": []}'))
    async with FluxClient(base_url=router.base_url, api_key="k") as c:
        with pytest.raises(APIResponseError, match="without any choices"):
            await one(c)


# --- transports -------------------------------------------------------------------------------


def kinds_for(backend: str) -> list[str]:
    # Not "auto": without environment proxies it builds the very same pool as "lean" (one branch
    # of `_http/transport.py`), so each loop ran the lean pool twice. That "auto" picks lean is
    # test_auto_transport_per_backend; "auto" with proxies is test_proxy_environment_is_honoured.
    return ["lean", "httpcore", "sharded"] + (["aiohttp"] if backend == "asyncio" else [])


async def test_every_transport_streams_retries_and_maps_errors(
    router: FakeFluxRouter, anyio_backend: str
) -> None:
    from agentloop.testing import call, drop_after, tool_calls

    for kind in kinds_for(anyio_backend):
        router.add(
            drop(), tool_calls(call("f", {"a": 1}), call("g", {"b": 2}), quirks=["keepalive", "no_done"])
        )
        router.add(text("partial answer here", quirks=[drop_after(3)]))
        async with FluxClient(
            base_url=router.base_url, api_key="k", transport=kind, retry=RecordingPolicy()
        ) as c:  # type: ignore[arg-type]
            turn = await one(c, stream=True)
            assert [tc["function"]["arguments"] for tc in turn.tool_calls] == ['{"a":1}', '{"b":2}'], kind
            with pytest.raises(APIConnectionError, match="already been streamed"):
                await one(c, stream=True)
            router.add(*[text("ok")] * 20)
            with anyio.fail_after(120):  # a guard against a hang, not a wait
                async with anyio.create_task_group() as tg:  # many at once over one pool
                    for _ in range(20):
                        tg.start_soon(one, c)
        # A read timeout of its own client: the answers above must not depend on how fast a busy
        # machine serves them (a 0.1 s read timeout on every request did), and this one must
        # time out whatever the load, so its answer never comes. Retried twice.
        router.add(*[text("never", delay=3600)] * 3)
        timeout = httpx.Timeout(5.0, read=0.1)  # any bound times out a never: the shortest waits least
        async with FluxClient(
            base_url=router.base_url,
            api_key="k",
            transport=kind,
            retry=RecordingPolicy(),
            timeout=timeout,  # type: ignore[arg-type]
        ) as c:
            with pytest.raises(APITimeoutError, match="ReadTimeout"):
                await one(c)


async def test_connection_refused_is_not_a_timeout(anyio_backend: str) -> None:
    async with FakeFluxRouter() as r:
        url = r.base_url
    for kind in kinds_for(anyio_backend):
        async with FluxClient(
            base_url=url, api_key="k", transport=kind, retry=RetryPolicy(max_retries=0)
        ) as c:  # type: ignore[arg-type]
            with pytest.raises(APIConnectionError, match="could not reach") as info:
                await one(c)
            assert not isinstance(info.value, APITimeoutError), kind


async def test_auto_transport_per_backend(router: FakeFluxRouter, anyio_backend: str) -> None:
    router.add(text("ok"))
    async with FluxClient(base_url=router.base_url, api_key="k") as c:
        await one(c)
        picked = c._sender.kind
    assert picked == "lean"  # on both backends


def test_unknown_transport_is_a_configuration_error() -> None:
    from agentloop import ConfigurationError

    with pytest.raises(ConfigurationError, match="unknown transport"):
        FluxClient(api_key="k", transport="curl")  # type: ignore[arg-type]


# --- connection reuse (keep-alive) ------------------------------------------------------------

reuse_tools = ToolRegistry()


@reuse_tools.tool
async def echo(x: int) -> int:
    """Return x."""
    return x


@pytest.mark.parametrize("stream", [False, True])
async def test_sequential_runs_reuse_one_connection(anyio_backend: str, stream: bool) -> None:
    """Repro of a soak finding: on trio the "sharded" pool sent each request to the next of its 62
    httpcore pools in turn, so 30 sequential requests opened 30 connections (the soak saw ~63
    through a proxy where asyncio held one). One request at a time must ride one connection on
    every transport kind and both backends."""
    for kind in kinds_for(anyio_backend):
        async with FakeFluxRouter() as r:
            async with FluxClient(base_url=r.base_url, api_key="k", transport=kind, stream=stream) as c:  # type: ignore[arg-type]
                for i in range(10):  # 10 runs of 3 model calls each, one after the other
                    r.add(
                        tool_calls(call("echo", {"x": i})),
                        tool_calls(call("echo", {"x": -i})),
                        text(f"done {i}"),
                    )
                    result = await Agent(client=c, tools=reuse_tools).run("go")
                    assert result.output == f"done {i}", kind
            assert len(r.requests) == 30, kind
            opened = {q.connection for q in r.requests}
        assert len(opened) == 1, (
            f"{kind} on {anyio_backend}: {len(opened)} connections for 30 sequential requests"
        )


async def test_sharded_pool_gives_slots_back_after_a_burst(anyio_backend: str) -> None:
    """40 requests at once (every 4th failing with a 500 that is not retried), one cancelled while
    the server holds it, then 10 in sequence: the sequential ones must ride one connection opened by
    the burst. A slot not given back on an error, a cancellation or a closed body would send them
    to another pool and a fresh connection."""
    held = anyio.Event()
    served = 0

    async def handler(req: Any) -> Any:
        nonlocal served
        if req.json["messages"][0]["content"] == "hold":
            held.set()
            await anyio.sleep_forever()
        served += 1
        return error(500, "no") if served <= 40 and served % 4 == 0 else text("ok")

    async def ask(c: FluxClient, content: str = "hi", stream: bool = False) -> None:
        req = ModelRequest(
            model="flux-auto", messages=[{"role": "user", "content": content}], tools=[], run_id="r", step=1
        )
        try:
            await c.request(req, (lambda e: anyio.lowlevel.checkpoint()) if stream else None)
        except InternalServerError:
            pass

    async with FakeFluxRouter(handler) as r:
        async with FluxClient(
            base_url=r.base_url,
            api_key="k",
            transport="sharded",
            retry=RetryPolicy(max_retries=0),
            max_connections=32,
        ) as c:
            async with anyio.create_task_group() as tg:
                for i in range(40):
                    tg.start_soon(ask, c, "hi", bool(i % 2))
            async with anyio.create_task_group() as tg:
                tg.start_soon(ask, c, "hold")
                await held.wait()
                tg.cancel_scope.cancel()
            burst = {q.connection for q in r.requests}
            for _ in range(10):
                await ask(c)
        later = {q.connection for q in r.requests[41:]}
    assert len(r.requests) == 51 and served == 50
    assert len(later) == 1 and later <= burst, (later, burst)


@pytest.mark.parametrize("stream", [False, True])
async def test_a_cookie_the_router_sets_is_sent_back(
    router: FakeFluxRouter, anyio_backend: str, stream: bool
) -> None:
    """Sticky sessions of a load balancer in front of a router work by cookie: one set by an answer
    is sent with the next requests, answers without Set-Cookie keep it, and none is invented."""
    answer = '{"choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}]}'
    for kind in kinds_for(anyio_backend):
        router.requests.clear()
        router.add(
            text("first"), raw(200, answer, headers={"set-cookie": "lb=node-7; Path=/"}), text("a"), text("b")
        )
        async with FluxClient(base_url=router.base_url, api_key="k", transport=kind, stream=stream) as c:  # type: ignore[arg-type]
            for _ in range(4):
                await one(c, stream=stream)
        sent = ["cookie" in q.headers for q in router.requests]  # its value is redacted in the record
        assert sent == [False, False, True, True], kind


@pytest.mark.parametrize("name", ["HTTP_PROXY", "all_proxy"])
async def test_proxy_environment_is_honoured(
    router: FakeFluxRouter, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """The lean transport speaks no proxy protocol: with a proxy in the environment, "auto" keeps
    httpx's transport, which sends through it. The proxy here is dead, so a request that honours
    it fails, and one that went straight to the (live) router would succeed."""
    for key in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(key, raising=False)
    async with FakeFluxRouter() as dead:
        proxy = dead.base_url.removesuffix("/v1")
    monkeypatch.setenv(name, proxy)
    router.add(text("direct"))
    async with FluxClient(base_url=router.base_url, api_key="k", retry=RetryPolicy(max_retries=0)) as c:
        with pytest.raises(APIConnectionError):
            await one(c)
    assert router.requests == []

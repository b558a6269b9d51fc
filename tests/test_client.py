"""FluxClient over real HTTP: typed errors for every failure, and the API key never leaks."""

from __future__ import annotations

import logging

import httpx
import pytest
import structlog

from agentloop import (
    Agent,
    AgentloopError,
    APIConnectionError,
    APIResponseError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
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

SECRET = "sk-flux-SUPERSECRET-0123456789"
NO_RETRY = RetryPolicy(max_retries=0)


@pytest.mark.parametrize(
    ("status", "message", "expected"),
    [
        (400, "messages: field required", BadRequestError),
        (422, "unprocessable", BadRequestError),
        (400, "This model does not support tools", ToolsNotSupportedError),
        (401, "invalid api key", AuthenticationError),
        (403, "forbidden", AuthenticationError),
        (429, "slow down", RateLimitError),
        (500, "upstream failed", InternalServerError),
        (503, "overloaded", InternalServerError),
        (404, "no such route", APIStatusError),
    ],
)
async def test_http_errors_are_typed(status: int, message: str, expected: type[Exception]) -> None:
    async with FakeFluxRouter([error(status, message, headers={"x-request-id": "req_123"})]) as router:
        async with FluxClient(base_url=router.base_url, api_key="k", retry=NO_RETRY) as client:
            with pytest.raises(expected) as exc_info:
                await Agent(client=client).run("hi")
    err = exc_info.value
    assert type(err) is expected
    assert isinstance(err, AgentloopError)
    assert err.status_code == status
    assert err.request_id == "req_123"
    assert err.body["error"]["message"] == message
    assert message in str(err)


async def test_tools_not_supported_advises_pinning() -> None:
    async with FakeFluxRouter([error(400, "model flux-x does not support tools")]) as router:
        async with FluxClient(base_url=router.base_url, api_key="k") as client:
            with pytest.raises(ToolsNotSupportedError, match="flux-pinned-"):
                await Agent(client=client).run("hi")
    assert len(router.requests) == 1  # a 400 is never retried


async def test_retries_5xx_then_succeeds() -> None:
    fast = RetryPolicy(initial_delay=0.001, max_delay=0.002)
    async with FakeFluxRouter([error(500, "a"), error(502, "b"), text("finally")]) as router:
        async with FluxClient(base_url=router.base_url, api_key="k", retry=fast) as client:
            result = await Agent(client=client).run("hi")
    assert result.output == "finally"
    assert len(router.requests) == 3


async def test_retry_gives_up_after_max_retries() -> None:
    fast = RetryPolicy(max_retries=1, initial_delay=0.001)
    async with FakeFluxRouter([error(429, "slow"), error(429, "slower"), text("never")]) as router:
        async with FluxClient(base_url=router.base_url, api_key="k", retry=fast) as client:
            with pytest.raises(RateLimitError):
                await Agent(client=client).run("hi")
    assert len(router.requests) == 2


async def test_x_should_retry_false_wins() -> None:
    async with FakeFluxRouter([error(503, "no", headers={"x-should-retry": "false"}), text("x")]) as router:
        async with FluxClient(base_url=router.base_url, api_key="k") as client:
            with pytest.raises(InternalServerError):
                await Agent(client=client).run("hi")
    assert len(router.requests) == 1


@pytest.mark.parametrize(
    "reply",
    [
        raw(200, b"{not json"),
        raw(200, b'{"error": {"message": "upstream exploded"}}'),
        raw(200, b'{"choices": []}'),
        raw(200, b'{"choices": [{"message": "a string"}]}'),
        raw(200, b"[1, 2, 3]"),
    ],
)
async def test_malformed_200_bodies_are_typed_errors(reply) -> None:
    async with FakeFluxRouter([reply]) as router:
        async with FluxClient(base_url=router.base_url, api_key="k", retry=NO_RETRY) as client:
            with pytest.raises(APIResponseError) as exc_info:
                await Agent(client=client).run("hi")
    assert exc_info.value.body


async def test_connection_errors_and_timeouts_are_typed() -> None:
    async with FakeFluxRouter([drop(), text("late", delay=5)]) as router:
        async with FluxClient(base_url=router.base_url, api_key="k", retry=NO_RETRY, timeout=0.2) as client:
            with pytest.raises(APIConnectionError):
                await Agent(client=client).run("hi")
            with pytest.raises(APITimeoutError, match="timed out"):
                await Agent(client=client).run("hi")
    # nothing listens on a closed port
    async with FluxClient(base_url=router.base_url, api_key="k", retry=NO_RETRY) as client:
        with pytest.raises(APIConnectionError, match="could not reach"):
            await Agent(client=client).run("hi")


def test_missing_api_key_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLUX_API_KEY", raising=False)
    with pytest.raises(ConfigurationError, match="FLUX_API_KEY"):
        FluxClient()


def test_key_and_base_url_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLUX_API_KEY", SECRET)
    monkeypatch.setenv("FLUX_BASE_URL", "http://127.0.0.1:9/v1/")
    client = FluxClient()
    assert client.base_url == "http://127.0.0.1:9/v1"
    assert SECRET not in repr(client)
    monkeypatch.delenv("FLUX_BASE_URL")
    assert FluxClient().base_url == "https://api.fluxrouter.ai/v1"


async def test_key_never_in_reprs_errors_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    """The server echoes the key back in its error; it must not reach exceptions or logs."""
    tools = ToolRegistry()

    @tools.tool
    async def ping() -> str:
        return "pong"

    caplog.set_level(logging.DEBUG)
    script = [tool_calls(call("ping", {})), error(401, f"Invalid API key: {SECRET}")]
    async with FakeFluxRouter(script, record_secrets=True) as router:
        async with FluxClient(base_url=router.base_url, api_key=SECRET, retry=NO_RETRY) as client:
            agent = Agent(client=client, tools=tools)
            with pytest.raises(AuthenticationError) as exc_info:
                await agent.run("hi")
            texts = [
                repr(client),
                repr(agent),
                str(exc_info.value),
                repr(exc_info.value),
                str(exc_info.value.body),
            ]
    assert router.requests[0].headers["authorization"] == f"Bearer {SECRET}"  # it was really used
    assert "[redacted]" in str(exc_info.value)
    assert any("tool finished" in r.getMessage() or "tool finished" in str(r.msg) for r in caplog.records)
    texts += [r.getMessage() for r in caplog.records] + [str(r.__dict__) for r in caplog.records]
    for t in texts:
        assert SECRET not in t


async def test_debug_events_through_configured_structlog() -> None:
    events: list[dict] = []

    def capture(_logger, _name, event_dict):
        events.append(dict(event_dict))
        raise structlog.DropEvent

    structlog.configure(processors=[capture])
    try:
        async with FakeFluxRouter([tool_calls(call("ping", {}, id="c9")), text("ok")]) as router:
            async with FluxClient(base_url=router.base_url, api_key=SECRET) as client:
                tools = ToolRegistry()

                @tools.tool
                async def ping() -> str:
                    return "pong"

                result = await Agent(client=client, tools=tools).run("hi", run_id="run_fixed")
    finally:
        structlog.reset_defaults()
    assert result.output == "ok"
    names = [e["event"] for e in events]
    assert names == [
        "model request",
        "tool started",
        "tool finished",
        "step finished",
        "model request",
        "run finished",
    ]
    assert all(e["run_id"] == "run_fixed" for e in events)
    finished = events[2]
    assert finished["tool_call_id"] == "c9" and finished["outcome"] == "ok" and "duration_s" in finished
    assert events[0]["step"] == 1 and events[4]["step"] == 2
    assert events[1]["step"] == 1 and events[2]["step"] == 1
    assert SECRET not in repr(events)


async def test_custom_transport_seam() -> None:
    """Any httpx transport can carry the requests (here: an in-process ASGI-less mock transport)."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, json={"choices": [{"message": {"role": "assistant", "content": "via transport"}}]}
        )

    async with FluxClient(
        api_key="k", base_url="http://flux.invalid/v1", transport=httpx.MockTransport(handler)
    ) as c:
        result = await Agent(client=c).run("hi")
    assert result.output == "via transport"


# --- #13: messages a new user meets first ----------------------------------------------------------


@pytest.mark.anyio
async def test_401_message_has_one_period_between_sentences() -> None:
    # Regression: the server's "Invalid API key." plus ". Check the API key" printed "key.. Check".
    async with FakeFluxRouter([error(401, "Invalid API key.")]) as router:
        async with FluxClient(base_url=router.base_url, api_key="k", retry=NO_RETRY) as client:
            with pytest.raises(AuthenticationError) as info:
                await client.request(
                    ModelRequest(model="m", messages=[{"role": "user", "content": "hi"}], tools=[])
                )
    assert "Invalid API key. Check the API key" in str(info.value) and "key.." not in str(info.value)


@pytest.mark.parametrize(
    ("pasted", "root"),
    [
        ("https://api.fluxrouter.ai/v1/chat/completions", "https://api.fluxrouter.ai/v1"),
        ("https://api.fluxrouter.ai/v1/chat/completions/", "https://api.fluxrouter.ai/v1"),
        ("https://api.fluxrouter.ai/anthropic/v1/messages", "https://api.fluxrouter.ai/anthropic"),
        ("http://127.0.0.1:8000/v1/chat/completions", "http://127.0.0.1:8000/v1"),
    ],
)
def test_a_pasted_full_endpoint_is_refused_with_the_root_to_pass(pasted: str, root: str) -> None:
    # Regression: a pasted endpoint gave a bare 404 at the first request.
    with pytest.raises(ConfigurationError, match=f"base_url={root!r}"):
        FluxClient(base_url=pasted, api_key="k")


@pytest.mark.anyio
async def test_a_404_says_to_check_base_url() -> None:
    async with FakeFluxRouter([error(404, "Not Found")]) as router:
        async with FluxClient(base_url=router.url + "/wrong", api_key="k", retry=NO_RETRY) as client:
            with pytest.raises(APIStatusError, match="Check base_url") as info:
                await client.request(
                    ModelRequest(model="m", messages=[{"role": "user", "content": "hi"}], tools=[])
                )
    assert info.value.status_code == 404

"""The API key never travels in an exception (issue #15): not in its message, `headers`, `body`,
nor anywhere in its cause / context chain (the request objects httpx and aiohttp hang there).

`leaks(exc, key)` walks what a user, a logger or an error reporter can reach from the exception:
`str` / `repr` and `vars` of every object, recursively, through `__cause__` and `__context__`.
"""

from __future__ import annotations

import contextlib
import socket
import string
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentloop import Agent, AgentloopError, APIConnectionError, AuthenticationError, FluxClient, RetryPolicy
from agentloop.testing import FakeFluxRouter, drop, error, raw, stream_error, text

pytestmark = pytest.mark.anyio

NO_RETRY = RetryPolicy(max_retries=0)
KEY = "sk-flux-0123456789abcdefSECRET"


def leaks(obj: Any, key: str, depth: int = 12, seen: set[int] | None = None) -> list[str]:
    """Where `key` shows in `obj` (a path per hit), following attributes, containers and links."""
    seen = set() if seen is None else seen
    if id(obj) in seen or depth < 0:
        return []
    seen.add(id(obj))
    raw_key = key.encode()
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return ["bytes"] if raw_key in bytes(obj) else []
    hits = []
    for show in (str, repr):
        try:
            if key in show(obj):
                hits.append(f"{show.__name__}({type(obj).__name__})")
        except Exception:
            pass
    if isinstance(obj, (str, int, float, bool, type(None))):
        return hits
    children: dict[str, Any] = {}
    if isinstance(obj, dict):
        children.update({f"[{k!r}]": v for k, v in obj.items()})
        children.update({f"key {k!r}": k for k in obj})
    elif isinstance(obj, (list, tuple, set, frozenset)):
        children.update({f"[{i}]": v for i, v in enumerate(obj)})
    if isinstance(obj, BaseException):
        children.update({"args": obj.args, "__cause__": obj.__cause__, "__context__": obj.__context__})
    try:
        children.update({f".{k}": v for k, v in vars(obj).items()})
    except TypeError:
        pass
    for slot in getattr(type(obj), "__slots__", ()):
        if isinstance(slot, str) and hasattr(obj, slot):
            children[f".{slot}"] = getattr(obj, slot)
    for name, child in children.items():
        hits += [f"{type(obj).__name__}{name} -> {h}" for h in leaks(child, key, depth - 1, seen)]
    return hits


def client_for(url: str, key: str, wire: str, **kwargs: Any) -> FluxClient:
    return FluxClient(base_url=url, api_key=key, wire=wire, retry=NO_RETRY, total_timeout=30, **kwargs)  # type: ignore[arg-type]


def url_of(router: FakeFluxRouter, wire: str) -> str:
    return router.anthropic_url if wire == "anthropic" else router.base_url


@contextlib.contextmanager
def refused_url() -> Iterator[str]:
    """A URL whose port refuses connections for as long as the block runs: bound, never listening.
    (A port that was free a moment ago was once taken by another test's server in between: the
    request reached it and failed differently.)"""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{s.getsockname()[1]}/v1"


@pytest.fixture(params=["openai", "anthropic"])
def wire(request: pytest.FixtureRequest) -> str:
    return request.param


async def test_key_echoed_in_a_response_header_is_not_kept(wire: str) -> None:
    """Issue #15: a server echoing the key in a header left it in AuthenticationError.headers."""
    reply = error(401, "bad key", headers={"x-echo-key": KEY, "www-authenticate": f"Bearer realm={KEY}"})
    async with FakeFluxRouter([reply]) as router:
        async with client_for(url_of(router, wire), KEY, wire) as client:
            with pytest.raises(AuthenticationError) as info:
                await Agent(client=client).run("hi")
    assert info.value.headers["x-echo-key"] == "[redacted]"
    assert info.value.headers["www-authenticate"] == "Bearer realm=[redacted]"
    assert leaks(info.value, KEY) == []


@pytest.mark.parametrize("transport", ["auto", "httpcore"])
async def test_connection_error_cause_carries_no_authorization(wire: str, transport: str) -> None:
    """Issue #15: APIConnectionError.__cause__.request.headers carried the authorization header.
    httpx's errors carry the request (scrubbed); the lean transport's carry none at all."""
    with refused_url() as url:
        async with client_for(url, KEY, wire, transport=transport) as client:
            with pytest.raises(APIConnectionError) as info:
                await Agent(client=client).run("hi")
    cause = info.value.__cause__
    assert cause is not None  # the cause is kept (for diagnosis), scrubbed
    header = "x-api-key" if wire == "anthropic" else "authorization"
    if transport == "httpcore":
        assert cause.request.headers[header] == "[redacted]"  # type: ignore[attr-defined]
    assert leaks(info.value, KEY) == []


async def test_fake_router_records_credentials_only_when_asked(wire: str) -> None:
    for record_secrets in (False, True):
        async with FakeFluxRouter([text("ok")], api_key=KEY, record_secrets=record_secrets) as router:
            async with client_for(url_of(router, wire), KEY, wire) as client:
                assert (await Agent(client=client).run("hi")).output == "ok"  # the key was checked
        assert (KEY in repr(router.requests)) is record_secrets


# --- the property: any key, any failure -----------------------------------------------------------

KEYS = st.text(string.ascii_letters + string.digits + "-_.", min_size=8, max_size=64).map(lambda s: "sk-" + s)


def failures(key: str) -> dict[str, Any]:
    """Ways a request can fail, each with the key somewhere in what the server sends back."""
    return {
        "401 message": error(401, f"Invalid API key: {key}"),
        "500 header": error(500, "boom", headers={"x-debug": f"token={key}"}),
        "429 retry header": error(429, "slow", headers={"x-echo": key, "retry-after": "0"}),
        "json-escaped body": raw(400, '{"error": {"message": "key \\u0073' + key[1:] + '"}}'),
        "non-json 200": raw(200, f"<html>{key}</html>", content_type="text/html"),
        "stream error": text(
            "hello", quirks=[stream_error(1, {"type": "invalid_request_error", "message": key})]
        ),
        "dropped": drop(),
        "truncated": raw(200, f'{{"echo": "{key}", "choices": ['.encode(), declared_length=5000),
    }


MODES = sorted(failures("sk-placeholder-key"))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=KEYS, mode=st.sampled_from([*MODES, "refused"]), wire=st.sampled_from(["openai", "anthropic"]),
       streamed=st.booleans())  # fmt: skip
async def test_no_failure_mode_carries_the_key(key: str, mode: str, wire: str, streamed: bool) -> None:
    script = [] if mode == "refused" else [failures(key)[mode]]
    async with FakeFluxRouter(script, api_key=None) as router, contextlib.AsyncExitStack() as stack:
        url = stack.enter_context(refused_url()) if mode == "refused" else url_of(router, wire)
        async with client_for(url, key, wire) as client:
            agent = Agent(client=client)
            with pytest.raises(AgentloopError) as info:
                if streamed or mode == "stream error":  # a stream fault needs a stream
                    async with agent.stream("hi") as events:
                        async for _ in events:
                            pass
                else:
                    await agent.run("hi")
    assert leaks(info.value, key) == [], mode
    assert key not in repr(router.requests)


async def test_the_walk_finds_a_key_where_one_is(wire: str) -> None:
    """The checker itself can fail: an exception that does carry the key is reported."""
    exc = APIConnectionError("x")
    exc.__context__ = ValueError({"deep": [("k", KEY)]})
    assert leaks(exc, KEY)
    assert not leaks(APIConnectionError("clean"), KEY)

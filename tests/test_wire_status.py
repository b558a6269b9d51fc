"""`Wire.decode(..., status=)`: a codec's error about a 2xx body names the status it came with.

The client used to rewrite the codec's "the endpoint answered 200 ..." after the fact; now it
passes the real status, and the built-in codecs write it themselves. A `Wire` written before the
keyword (third-party, registered in `WIRES` as docs/architecture.md "Adding a wire" says) is
called without it and keeps working. A raw TCP server on 127.0.0.1 sends exactly the answers
scripted here, both backends.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from helpers import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_http_2xx_answers import answer
from test_http_lean_hostile import ANSWER, RawServer, ask, client, respond

from agentloop import APIResponseError, ModelTurn
from agentloop._wire import WIRES, WireSpec  # internal unit under test: the registry a third-party wire joins
from agentloop.abc import ModelRequest

pytestmark = pytest.mark.anyio

# Bodies each built-in codec refuses, per wire: each error message names the status.
REFUSED = {
    "openai": [
        b"<html>proxy page</html>",
        b"[1, 2]",
        b'{"error": {"message": "upstream overloaded"}}',
        b'{"choices": []}',
        b'{"choices": [{"index": 0}]}',
        b"[" * 5000 + b"]" * 5000,  # deeper than the codec's JSON depth limit
    ],
    "anthropic": [
        b"<html>proxy page</html>",
        b'"a string"',
        b'{"type": "error", "error": {"message": "overloaded"}}',
        b'{"type": "message", "content": "not a list"}',
    ],
}


@settings(
    max_examples=examples(20), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data(), status=st.integers(200, 299), wire=st.sampled_from(sorted(REFUSED)))
def test_a_refused_2xx_body_names_its_status(anyio_backend: str, data: Any, status: int, wire: str) -> None:
    body = data.draw(st.sampled_from(REFUSED[wire]), label="body")
    if status in (204, 205):
        body = b""  # no body whatever it claims (RFC 9110): the codec sees an empty one
    raw = answer(b"%d Whatever" % status, body, b"application/json")

    async def main() -> None:
        async with RawServer(respond(raw)) as server, client(server.url, wire=wire) as c:
            with pytest.raises(APIResponseError) as info:
                await ask(c)
        message = str(info.value)
        assert f"the endpoint answered {status} " in message
        if status != 200:
            assert "answered 200" not in message

    anyio.run(main, backend=anyio_backend)


class _Recording:
    """The built-in OpenAI codec, wrapped to record how `decode` was called."""

    def __init__(self) -> None:
        self.inner = WIRES["openai"].build(0)
        self.calls: list[dict[str, Any]] = []

    def url(self, base_url: str) -> str:
        return self.inner.url(base_url)

    def auth_headers(self, api_key: str) -> dict[str, str]:
        return self.inner.auth_headers(api_key)

    def encode(self, request: ModelRequest, *, stream: bool = False) -> bytes:
        return self.inner.encode(request, stream=stream)

    def assembler(self, run_id: str | None, step: int, request_id: str | None) -> Any:
        return self.inner.assembler(run_id, step, request_id)


class LegacyWire(_Recording):
    """Written against the seam before `status` existed."""

    def decode(self, content: bytes, *, request_id: str | None = None) -> ModelTurn:
        self.calls.append({"request_id": request_id})
        if not content.startswith(b"{"):
            raise APIResponseError("legacy codec: not a completion")
        return self.inner.decode(content, request_id=request_id)


class StatusWire(_Recording):
    def decode(self, content: bytes, *, request_id: str | None = None, status: int = 200) -> ModelTurn:
        self.calls.append({"request_id": request_id, "status": status})
        return self.inner.decode(content, request_id=request_id, status=status)


class KwargsWire(_Recording):
    def decode(self, content: bytes, **options: Any) -> ModelTurn:
        self.calls.append(options)
        return self.inner.decode(content, **options)


def _register(monkeypatch: pytest.MonkeyPatch, name: str, wire: _Recording) -> None:
    spec = WireSpec(name, lambda _max_tokens: wire, "http://127.0.0.1:9/v1", None, "/chat/completions")  # type: ignore[arg-type, return-value]
    monkeypatch.setitem(WIRES, name, spec)


@pytest.mark.parametrize("cls", [LegacyWire, StatusWire, KwargsWire])
async def test_a_user_written_wire_is_called_as_it_was_written(
    monkeypatch: pytest.MonkeyPatch, cls: type[_Recording]
) -> None:
    wire = cls()
    _register(monkeypatch, "mine", wire)
    good = answer(b"203 Non-Authoritative Information", ANSWER, b"application/json")
    async with RawServer(respond(good, close=False)) as server, client(server.url, wire="mine") as c:
        assert (await ask(c)).message["content"] == "ok"
    if cls is LegacyWire:
        assert wire.calls == [{"request_id": None}]  # never handed a keyword it does not take
    else:
        assert wire.calls == [{"request_id": None, "status": 203}]


async def test_a_legacy_wire_error_is_its_own_and_a_new_one_names_the_status(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bad = answer(b"202 Accepted", b"queued", b"text/plain")
    for cls, expected in (
        (LegacyWire, "legacy codec: not a completion"),
        (StatusWire, "the endpoint answered 202 "),
    ):
        _register(monkeypatch, "mine", cls())
        async with RawServer(respond(bad)) as server, client(server.url, wire="mine") as c:
            with pytest.raises(APIResponseError, match=expected):
                await ask(c)

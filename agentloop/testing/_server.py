"""`FakeFluxRouter`: a real HTTP/1.1 server on 127.0.0.1 that answers from a script.

It runs inside the caller's event loop (asyncio or trio, via anyio): one task group owns the
accept loop and every connection, so leaving the `async with` cancels all of them — no threads,
no orphan tasks. HTTP parsing is h11 (keep-alive, Content-Length and chunked request bodies,
chunked responses for streams), so clients exercise their real transport code.
"""

from __future__ import annotations

import inspect
import itertools
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import anyio
import anyio.abc
import h11

from agentloop.testing import _codec
from agentloop.testing._checks import OTHER_TASK, auth_refusal, refusal
from agentloop.testing._h11io import next_event, out, send
from agentloop.testing._render import RenderContext, Rendered, Wire, render, render_error, render_json
from agentloop.testing._replies import Reply

__all__ = ["FakeFluxRouter", "Handler", "RecordedRequest"]

OPENAI_CHAT_PATH = "/v1/chat/completions"
ANTHROPIC_MESSAGES_PATH = "/anthropic/v1/messages"
MODELS = ("flux-auto", "flux-fast", "flux-smart")
_WIRES: dict[str, Wire] = {OPENAI_CHAT_PATH: "openai", ANTHROPIC_MESSAGES_PATH: "anthropic"}

# Request headers that carry credentials: recorded as "[redacted]" unless `record_secrets=True`.
_CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "x-api-key", "api-key", "cookie"})
REDACTED = "[redacted]"

# Errors that mean "the peer went away": end that connection quietly, never the server.
_CONNECTION_ERRORS = (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream, OSError)


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request as the fake router received it."""

    method: str
    path: str  # without the query string
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "; credentials "[redacted]"
    body: bytes
    json: Any  # the parsed body, or None when empty / not JSON
    wire: Wire | None  # None for non-chat paths
    stream: bool  # the body's "stream"
    connection: int = 0  # serial number of the TCP connection it came on (keep-alive tests)


Handler = Callable[[RecordedRequest], "Reply | Awaitable[Reply]"]


class FakeFluxRouter:
    """A scripted FluxRouter. `script`: Replies served in order (one per model request), or a
    handler `(RecordedRequest) -> Reply | Awaitable[Reply]`. Replies queued with `add()` come
    after the script's own (in handler mode: before the handler is asked).

    Credential headers (`authorization`, `x-api-key`, ...) are checked against `api_key` as they
    arrive but recorded as `"[redacted]"`, so a failing test's output never shows a key; a test
    about the headers themselves passes `record_secrets=True`."""

    def __init__(
        self,
        script: Iterable[Reply] | Handler = (),
        *,
        api_key: str | None = None,
        host: str = "127.0.0.1",
        record_secrets: bool = False,
    ) -> None:
        self.record_secrets = record_secrets
        self._handler: Handler | None = None
        self._script: Iterator[Reply] = iter(())
        if callable(script):
            self._handler = script
        else:
            self._script = iter(script)  # lazy: an endless generator is a valid script
        self._added: deque[Reply] = deque()
        self.api_key = api_key
        self.host = host
        self.requests: list[RecordedRequest] = []
        self.in_flight = 0
        self.served = 0  # replies taken from the script / handler so far
        self._not_a_reply = ""  # named in every later 500 too: the client retries the first one
        self._issued: set[tuple[str, str]] = set()  # scripted (thinking, signature) pairs sent (_checks)
        self._port: int | None = None
        self._call_ids = itertools.count(1)
        self._serials = itertools.count(1)
        self._connections = itertools.count(1)
        self._tg: anyio.abc.TaskGroup | None = None
        self._owner = 0  # the task that entered: only it can close the task group
        self._stopped: anyio.Event | None = None
        self._listener: anyio.abc.Listener[anyio.abc.SocketStream] | None = None

    # --- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._tg is not None:
            raise RuntimeError("FakeFluxRouter is already running")
        listener = await anyio.create_tcp_listener(local_host=self.host, local_port=0)
        self._port = listener.extra(anyio.abc.SocketAttribute.local_port)
        tg = anyio.create_task_group()
        try:
            await tg.__aenter__()
        except BaseException:
            await listener.aclose()
            raise
        self._listener, self._tg = listener, tg
        self._owner, self._stopped = anyio.get_current_task().id, anyio.Event()
        tg.start_soon(self._accept, listener, tg, self._stopped)
        return self

    async def _accept(
        self,
        listener: anyio.abc.Listener[anyio.abc.SocketStream],
        tg: anyio.abc.TaskGroup,
        stopped: anyio.Event,
    ) -> None:
        try:
            await listener.serve(self._serve_connection, tg)
        finally:
            stopped.set()  # closed from another task, __aexit__ waits for this before closing the socket

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        tg, listener, stopped = self._tg, self._listener, self._stopped
        assert tg is not None and listener is not None and stopped is not None, (
            "FakeFluxRouter was not started"
        )
        self._tg = self._listener = None
        # Cancelling the group stops the accept loop and every connection (in-flight requests
        # included: their clients see the connection close); sockets close in `async with`.
        tg.cancel_scope.cancel()
        try:
            if anyio.get_current_task().id != self._owner:  # e.g. a pytest-asyncio fixture
                with anyio.CancelScope(shield=True):
                    await stopped.wait()  # the accept loop, cancelled above, has let go of the socket
                raise RuntimeError(OTHER_TASK)
            # The body's own exception is not handed to the group: it propagates as is after
            # the group closes, instead of coming out wrapped in an ExceptionGroup.
            await tg.__aexit__(None, None, None)
            return None
        finally:
            with anyio.CancelScope(shield=True):
                await listener.aclose()

    @property
    def url(self) -> str:
        if self._port is None:
            raise RuntimeError("FakeFluxRouter is not started: use `async with`")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self._port}"

    @property
    def base_url(self) -> str:
        """What an OpenAI-wire client is given."""
        return self.url + "/v1"

    @property
    def anthropic_url(self) -> str:
        """What an Anthropic-wire client is given."""
        return self.url + "/anthropic"

    def add(self, *replies: Reply) -> None:
        """Append to the script."""
        for r in replies:
            if not isinstance(r, Reply):
                raise TypeError(f"FakeFluxRouter.add() takes Reply values, not {r!r}")
        self._added.extend(replies)

    @property
    def model_requests(self) -> list[RecordedRequest]:
        """The recorded chat requests only (either wire)."""
        return [r for r in self.requests if r.wire is not None]

    # --- HTTP/1.1 over h11 ------------------------------------------------------------------

    async def _serve_connection(self, stream: anyio.abc.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        conn_id = next(self._connections)
        async with stream:
            try:
                while await self._serve_one(conn, stream, conn_id):
                    conn.start_next_cycle()
            except h11.RemoteProtocolError as e:
                await self._bad_request(conn, stream, e)
            except _CONNECTION_ERRORS:
                pass  # the client went away; nothing to answer

    async def _serve_one(self, conn: h11.Connection, stream: anyio.abc.SocketStream, conn_id: int) -> bool:
        """Read one request, answer it. True when the connection may serve another one."""
        event = await next_event(conn, stream)
        if not isinstance(event, h11.Request):
            return False  # ConnectionClosed between requests: a normal keep-alive ending
        if conn.client_is_waiting_for_100_continue:
            await stream.send(out(conn, h11.InformationalResponse(status_code=100, headers=[])))
        body = bytearray()
        while True:
            part = await next_event(conn, stream)
            if isinstance(part, h11.Data):
                body += part.data
            elif isinstance(part, h11.EndOfMessage):
                break
            else:
                return False
        request, credentials = self._record(event, bytes(body), conn_id)
        if not await self._respond(conn, stream, request, credentials):
            return False
        return conn.our_state is h11.DONE and conn.their_state is h11.DONE

    def _record(
        self, event: h11.Request, body: bytes, conn_id: int
    ) -> tuple[RecordedRequest, dict[str, str]]:
        """The request as recorded, and its credential headers as sent (for the auth check only)."""
        headers: dict[str, str] = {}
        for name, value in event.headers:
            key, val = name.decode("latin-1").lower(), value.decode("latin-1")
            headers[key] = f"{headers[key]}, {val}" if key in headers else val
        credentials = {k: v for k, v in headers.items() if k in _CREDENTIAL_HEADERS}
        if not self.record_secrets:
            headers.update(dict.fromkeys(credentials, REDACTED))
        path = event.target.decode("latin-1").split("?", 1)[0]
        parsed: Any = None
        if body:
            try:
                parsed = _codec.loads(body)
            except ValueError:
                parsed = None
        wire = _WIRES.get(path)
        stream = isinstance(parsed, dict) and parsed.get("stream") is True
        rec = RecordedRequest(
            event.method.decode("latin-1"), path, headers, body, parsed, wire, stream, conn_id
        )
        self.requests.append(rec)
        return rec, credentials

    async def _respond(
        self,
        conn: h11.Connection,
        stream: anyio.abc.SocketStream,
        req: RecordedRequest,
        credentials: dict[str, str],
    ) -> bool:
        """Answer one request. False when the connection must be closed without more ado."""
        own = self._own_answer(req, credentials)
        if own is not None:
            return await send(conn, stream, own)
        # Counted down just before the last write, so a client that has read its whole answer
        # always sees `in_flight` without that request (no race with this task's epilogue).
        self.in_flight += 1
        counted = True

        def finished() -> None:
            nonlocal counted
            if counted:
                counted = False
                self.in_flight -= 1

        try:
            reply = await self._next_reply(req)
            if isinstance(reply, Rendered):  # the script could not answer: a loud 500
                return await send(conn, stream, reply, before_last_write=finished)
            if reply.delay > 0:
                await anyio.sleep(reply.delay)
            if reply.kind == "drop":
                return False
            self._issued.update((b.thinking, b.signature) for b in reply.thinking if b.signature is not None)
            return await send(conn, stream, render(reply, self._context(req)), reply.chunk_delay, finished)
        finally:
            finished()

    def _own_answer(self, req: RecordedRequest, credentials: dict[str, str]) -> Rendered | None:
        """What the router answers by itself (model list, unknown route or method, bad key or body);
        None for a chat request, which the script answers."""
        if req.path == "/v1/models":
            if req.method != "GET":
                return render_error(405, "Method not allowed", wire=None, type="invalid_request_error")
            return self._check_auth(credentials, "openai") or render_json(200, _model_list())
        if req.wire is None:
            message = f"FakeFluxRouter: no route for {req.method} {req.path}"
            wire: Wire | None = "anthropic" if req.path.startswith("/anthropic/") else None
            return render_error(404, message, wire=wire, type="not_found_error")
        if req.method != "POST":
            return render_error(405, "Method not allowed", wire=req.wire, type="invalid_request_error")
        denied = self._check_auth(credentials, req.wire)
        if denied is None and not isinstance(req.json, dict):
            message = "FakeFluxRouter: the request body is not a JSON object"
            return render_error(400, message, wire=req.wire, type="invalid_request_error")
        refused = None if denied else refusal(req.wire, req.json, self._issued)  # as the provider would
        return denied or (refused and render_error(*refused[:2], wire=req.wire, type=refused[2]))

    def _context(self, req: RecordedRequest) -> RenderContext:
        """How `req` wants its answer rendered (wire, stream, model) and the next serials."""
        assert req.wire is not None, "only chat requests reach the script"
        model = req.json.get("model")
        options = req.json.get("stream_options")
        return RenderContext(
            wire=req.wire,
            stream=req.stream,
            model=model if isinstance(model, str) else "flux-auto",
            include_usage=isinstance(options, dict) and options.get("include_usage") is True,
            serial=next(self._serials),
            next_call_id=lambda: f"call_{next(self._call_ids)}",
        )

    def _check_auth(self, credentials: dict[str, str], wire: Wire) -> Rendered | None:
        refused = auth_refusal(credentials, wire, self.api_key)
        return (
            None
            if refused is None
            else render_error(*refused[:2], wire=wire, type=refused[2], code=refused[3])
        )

    async def _next_reply(self, req: RecordedRequest) -> Reply | Rendered:
        """The next Reply (script, then `add()`ed, then handler) or a 500 explaining why not."""
        reply: Any
        try:
            reply = next(self._script)
        except StopIteration:
            if self._added:
                reply = self._added.popleft()
            elif self._handler is not None:
                try:
                    reply = self._handler(req)
                    if inspect.isawaitable(reply):
                        reply = await reply
                except Exception as e:
                    return render_error(
                        500, f"FakeFluxRouter: handler raised {type(e).__name__}: {e}", wire=req.wire
                    )
            else:
                exhausted = f"FakeFluxRouter: script exhausted after {self.served} replies{self._not_a_reply}"
                return render_error(500, exhausted, wire=req.wire)
        if not isinstance(reply, Reply):
            self._not_a_reply = (
                f" (an item was not a Reply but {type(reply).__name__} {reply!r:.200}: build answers with "
                "text(), tool_calls(), raw() or error() from agentloop.testing)"
            )
            return render_error(500, f"FakeFluxRouter: expected a Reply{self._not_a_reply}", wire=req.wire)
        self.served += 1
        return reply

    async def _bad_request(
        self, conn: h11.Connection, stream: anyio.abc.SocketStream, e: h11.RemoteProtocolError
    ) -> None:
        if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            try:
                await send(conn, stream, render_error(e.error_status_hint, f"Bad request: {e}", wire=None))
            except (*_CONNECTION_ERRORS, h11.LocalProtocolError):
                pass


def _model_list() -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {"id": m, "object": "model", "created": 1700000000, "owned_by": "fluxrouter"} for m in MODELS
        ],
    }

"""FluxClient: one shared httpx connection pool, typed errors, retries, and a wire adapter.

A client is meant to be long-lived and shared by many agents and concurrent runs. It never
holds per-run state. The API key is kept out of every repr, log line and error: an error leaves
the client only after it and its whole cause chain were scrubbed (`_secrets.py`).

Every response is read within the client's `InputBudget` (`_wire/_bounded.py`): body bytes are
counted while reading, SSE lines are bounded, a stream that sends nothing but keep-alives for
`stream_idle_timeout` seconds is cut, and a request has a total time bound even when the
caller set none (`request_timeout`).
"""

from __future__ import annotations

import copy
import math
from dataclasses import replace
from typing import Any, Literal, cast

import anyio
import httpx

from .._budget import InputBudget, is_number
from .._exceptions import APIError, APITimeoutError, ConfigurationError
from .._model import Emit, ModelRequest
from .._retry import Failure, RetryPolicy
from .._seams import Wire
from .._types import ModelTurn
from .._wire import DEFAULT_ANTHROPIC_BASE_URL, DEFAULT_BASE_URL, DEFAULT_MAX_TOKENS, WIRES
from .binding import LoopBinding
from .bounded import pump, read_body, read_some, sse_events
from .config import DEFAULT_TIMEOUT, ClientConfig, ClientOptions, check_client_options, resolve_config
from .errors import Errors, takes_status
from .h1 import Response
from .lean import Dial, LeanResponse
from .rehearsal import perform, rehearsal_config, rehearse, rehearse_listening, replies, sweep
from .secrets import Redactor
from .transport import LeanSender, Sender, TransportKind, make_sender, rehearsal_http
from .waiters import Expired, own_deadline

__all__ = ["FluxClient", "DEFAULT_BASE_URL", "DEFAULT_ANTHROPIC_BASE_URL", "DEFAULT_TIMEOUT"]

_ERROR_BODY_BYTES = 64 * 1024  # of an error response: enough to say what went wrong, the rest is not read


class FluxClient:
    """An async client for FluxRouter (or any OpenAI- or Anthropic-compatible endpoint).

    - `api_key`: defaults to `$FLUX_API_KEY`; a missing key is a `ConfigurationError` here, not
      a 401 later.
    - `base_url`: defaults to `$FLUX_BASE_URL`, else `https://api.fluxrouter.ai/v1`.
    - `wire`: `"openai"` (chat completions) or `"anthropic"` (Messages). By default it follows
      the base URL: one ending in `/anthropic` (e.g. `https://api.fluxrouter.ai/anthropic`)
      speaks Anthropic, anything else OpenAI. `wire="anthropic"` without a base URL uses
      FluxRouter's `/anthropic` endpoint. The conversation stays in OpenAI chat format either way.
    - `max_tokens`: the `max_tokens` sent when the wire requires one (Anthropic) and the agent's
      `model_settings` has none.
    - `stream`: when the caller streams (`Agent.stream`), stream over the wire too (default), so
      text deltas arrive as the model writes them. `False`: one plain request per step, its text
      emitted whole.
    - `timeout`: seconds or an `httpx.Timeout` (connect / read / write / pool; read is the gap
      allowed between two pieces of a stream). `total_timeout`: seconds for one model request,
      retries and their waits included (None: `input_budget.request_timeout`, 600 s by default).
      A run's own deadline (a cancel scope around it) always wins.
    - `input_budget`: an `InputBudget`; its HTTP fields bound every response: body bytes
      (`max_response_bytes`), one SSE line or event (`max_sse_line_bytes`), the time between two
      stream events (`stream_idle_timeout`; keep-alive comments do not count) and the total time
      of a request without `total_timeout` (`request_timeout`). Past a byte budget the request
      fails with `APIResponseError` (not retried); past a time budget with `APITimeoutError`
      (an idle stream is retried like a read timeout while nothing was streamed to the caller).
    - `retry`: a `RetryPolicy` (2 retries by default, openai-python's rules). A stream is retried
      only while nothing of it was handed to the caller.
    - `transport`: `"auto"` (default: the fastest measured HTTP transport for the running event
      loop: aiohttp's pool through `httpx-aiohttp` on asyncio, sharded httpx pools on trio),
      `"httpcore"` (httpcore's pool, as httpx's own), `"sharded"`, `"aiohttp"`, or any `httpx.AsyncBaseTransport`.
      With environment proxies (`HTTPS_PROXY`...) the client keeps httpx's own transport.
    - `http_client`: a custom `httpx.AsyncClient` (tests, proxies, mTLS); not closed by `aclose()`.
    - `max_connections`: the connection pool's size (all kept alive).

    Use it as `async with FluxClient() as client:` or call `await client.aclose()`.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        wire: Literal["openai", "anthropic"] | None = None,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        stream: bool = True,
        timeout: float | httpx.Timeout | None = None,
        total_timeout: float | None = None,
        retry: RetryPolicy | None = None,
        headers: dict[str, str] | None = None,
        http_client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | TransportKind = "auto",
        max_connections: int = 1000,
        input_budget: InputBudget | None = None,
    ) -> None:
        options = ClientOptions(
            api_key=api_key,
            base_url=base_url,
            wire=wire,
            max_tokens=max_tokens,
            stream=stream,
            timeout=timeout,
            total_timeout=total_timeout,
            retry=retry,
            headers=headers,
            http_client=http_client,
            transport=transport,
            max_connections=max_connections,
            input_budget=input_budget,
        )
        check_client_options(options)  # every caller mistake is refused here (see config.py)
        config = resolve_config(options)
        self._setup(config, http_client)

    def _setup(
        self, config: ClientConfig, http_client: httpx.AsyncClient | None, dial: Dial | None = None
    ) -> None:
        """Everything the client holds, from its resolved config (and the caller's http_client;
        `dial`: how its lean pool connects, for warmup()'s rehearsal)."""
        self._config = config
        self.input_budget = config.input_budget
        self.base_url = config.base_url
        self.wire = config.wire
        self.stream = config.stream
        self.total_timeout = config.total_timeout
        self.retry = config.retry
        spec = WIRES[config.wire]
        self._wire: Wire = spec.build(config.max_tokens)
        self._samples = (spec.samples, spec.stream_samples)  # what warmup()'s rehearsal answers with
        self._decode_status = takes_status(self._wire.decode)
        self._url = self._wire.url(config.base_url)
        self._redactor = Redactor(list(config.credentials))
        self._errors = Errors(self._url, config.base_url, self._redactor, config.retry)
        self._headers = (config.headers, config.stream_headers)  # indexed by "streamed?"
        self._sender: Sender = make_sender(config.pool, self._url, self._headers, http_client, dial)
        self._rehearsed = False
        self._binding = LoopBinding()  # open or closed, and the one event loop it serves

    def __repr__(self) -> str:
        return f"FluxClient(base_url={self.base_url!r}, wire={self.wire!r})"

    def redact(self, text: str) -> str:
        """`text` with this client's credentials (the API key, credential header values) cut out.
        The agent passes every tool outcome through it: a tool that raises or returns its key
        never hands it to the model, the journal, an event or a log line."""
        return self._redactor.text(text)

    async def __aenter__(self) -> FluxClient:
        # Build the transport for this event loop now (its library's import, an SSL context: tens
        # of ms on a busy machine), so the first request is as fast as the next and its
        # total_timeout is spent on the request only. See benchmarks/bench_first_request.py.
        self._binding.check_open()
        self._sender.prepare()
        self._binding.depth += 1
        return self

    async def warmup(self, connections: int = 1) -> None:
        """Open `connections` connections to the endpoint now (TLS handshake included) and keep
        them in the pool, and run the request path once over on canned bytes, so the first
        requests neither wait for a connect nor run cold code.

        A new connection costs a round trip (three with TLS), and a fresh process runs its first
        requests on code CPython has not yet optimized (it quickens a function after 8 calls):
        the first request of a process cost ~4x a later one in CPU even on a warm connection.
        The rehearsal sends 16 canned requests through this client's own code (and 16 streamed
        ones when the client streams) to a loopback connection the client opens to itself and
        answers with the wire's sample answers (nothing leaves the process, those requests carry
        no credential, their deltas reach no caller; 10-15 ms of CPU on a busy machine, once per
        client). Opt in where that latency counts (a server answering its first
        user): call it once after entering the client. Unused connections close after the pool's
        keep-alive expiry (5 s), like any idle connection; requests open more as they need them.
        Raises `APIConnectionError` / `APITimeoutError` (the connect timeout) when the endpoint
        cannot be reached, so a wrong `base_url` shows here. With `transport="httpcore"` or
        `"sharded"` the connections are opened for httpcore's pool (no request is sent); with
        `"aiohttp"` (it offers no way to open one without a request) the first request still
        connects. An httpx transport's rehearsal twin (an httpx client of the same kind) sends
        to a loopback listener the rehearsal opens in this process and closes before returning
        (~30-80 ms of CPU). A caller's `http_client` and environment proxies are not rehearsed
        (httpx would send to the proxy).
        """
        if not is_number(connections, whole=True) or connections < 0:
            raise ConfigurationError(
                f"warmup(connections=...) takes a whole number >= 0, got {connections!r}"
            )
        self._binding.check()
        limit = self.total_timeout if self.total_timeout is not None else self.input_budget.request_timeout
        try:
            with anyio.move_on_after(limit) as scope:  # the bound of a request, also with no connect timeout
                await self._sender.preconnect(connections)
                await self._rehearse()
        except httpx.HTTPError as e:
            failure = self._errors.transport(e)
            raise self._redactor.exception(failure.error) from e
        if scope.cancelled_caught:
            raise APITimeoutError(f"opening connections to {self._url} took longer than {limit:g} s")
        await sweep()

    async def _rehearse(self) -> None:
        """The request path, plain and streamed, run on canned bytes by a twin of this client
        (`rehearsal.py`), once per client. The lean transport's twin is handed a loopback
        connection; an httpx transport's (it takes none) dials a loopback listener of the
        rehearsal's own, through an httpx client of the same transport kind."""
        samples, stream_samples = self._samples
        if self._rehearsed or not samples:
            return
        streamed = self.stream and bool(stream_samples)
        answers = replies(samples, stream_samples if streamed else ())
        if isinstance(self._sender, LeanSender):
            await rehearse(answers, lambda dial: self._twin(dial, None, streamed))
        else:
            owned = getattr(self._sender, "_owned", False)  # a caller's http_client: not ours to copy
            http = rehearsal_http(self._config.pool) if owned else None
            if http is None:
                return
            try:
                await rehearse_listening(answers, lambda origin: self._twin(origin, http, streamed))
            finally:
                await http.aclose()
        self._rehearsed = True

    async def _twin(self, where: Dial | str, http: httpx.AsyncClient | None, streamed: bool) -> None:
        """`perform` by a twin of this client, built as this one was (the same attribute layouts),
        its credentials masked: over `where`, the lean pool's `Dial`, or with `http` to the
        loopback origin `where`."""
        config = rehearsal_config(self._config)
        twin = FluxClient.__new__(FluxClient)
        if isinstance(where, str):
            config = replace(config, base_url=where + httpx.URL(config.base_url).path)
            twin._setup(config, http)  # the rehearsal's httpx client: closed by the caller
        else:
            twin._setup(config, None, where)
            prepared = cast(LeanSender, self._sender).pool._ssl
            cast(LeanSender, twin._sender).pool._ssl = prepared  # by preconnect: not ~30 ms again
        try:
            await perform(twin.request, streamed)
        finally:
            await twin.aclose()

    async def __aexit__(self, *exc: object) -> None:
        self._binding.depth -= 1
        if self._binding.depth <= 0:  # nested blocks over one client: the outermost closes it
            await self.aclose()

    async def aclose(self) -> None:
        self._binding.closed = True
        await self._sender.aclose()

    def fresh_pool(self) -> FluxClient | None:
        """A copy of this client with a new connection pool of its own (None if the pool is the caller's).

        A connection pool belongs to the event loop it was used in; `Agent.run_sync` starts a new
        loop per call, so it runs on a copy like this and closes it afterwards.
        """
        if getattr(self._sender, "http", None) is not None and not getattr(self._sender, "_owned", True):
            return None
        twin = copy.copy(self)
        twin._sender = make_sender(self._config.pool, self._url, self._headers, None)
        twin._binding = LoopBinding()
        return twin

    # --- the Model protocol -------------------------------------------------------------------

    async def request(self, request: ModelRequest, emit: Emit | None = None) -> ModelTurn:
        """Send one model request (with retries) and return the assistant turn.

        With `emit` (and `stream=True`), the answer is streamed: text and tool-call deltas are
        awaited into `emit` as they arrive, and the turn comes back with `streamed=True`.
        """
        self._binding.check()
        limit = self.total_timeout if self.total_timeout is not None else self.input_budget.request_timeout
        deadline = own_deadline(limit, getattr(request, "deadline", math.inf))
        streaming = emit is not None and self.stream
        body = self._wire.encode(request, stream=streaming)
        progress = _Progress() if streaming else None
        attempt = 0
        try:  # (one coroutine: a layer more is one more object per waiting request)
            while True:
                try:
                    try:  # queued for a connection with no scope: `Expired` past the deadline
                        slot = await self._sender.acquire(deadline)
                    except httpx.HTTPError as e:  # the pool's timeout, a connect that failed
                        raise self._errors.transport(e) from e
                    with anyio.CancelScope(deadline=deadline):
                        if progress is None:
                            return await self._post(body, slot)
                        return await self._stream(body, request, emit, progress, slot)  # type: ignore[arg-type]
                    raise Expired  # only reached when the deadline cancelled the request
                except Failure as f:
                    if (
                        not f.retryable
                        or attempt >= self.retry.max_retries
                        or (progress and progress.emitted)
                    ):
                        raise f.error from f.__cause__
                    delay = self.retry.delay(attempt, f.headers)
                if anyio.current_time() + delay >= deadline:
                    await anyio.sleep_until(deadline)
                    raise Expired
                await anyio.sleep(delay)
                self._binding.check_open()  # closed meanwhile (by another task): no retry can succeed
                attempt += 1
        except Expired:  # (not contextlib.suppress: 3 GC-tracked objects per waiting request)
            error = self._errors.total_time(limit, configured=self.total_timeout is not None)
            raise self._redactor.exception(error) from None
        except APIError as e:
            raise self._redactor.exception(e) from e.__cause__

    async def _post(self, body: bytes, slot: Any) -> ModelTurn:
        """One plain request over `slot` (the sender's `acquire`) → the decoded turn, or a `Failure`."""
        try:
            response = await self._sender.send(body, stream=False, slot=slot)
            try:
                if not 200 <= response.status_code < 300:  # a final 1xx (101) is no answer either
                    raise self._errors.status(response, await read_some(response, _ERROR_BODY_BYTES))
                content = await read_body(response, self.input_budget.max_response_bytes)
            finally:
                await response.aclose()
        except httpx.HTTPError as e:
            raise self._errors.transport(e) from e
        return self._decode(content, response.headers.get("x-request-id"), response.status_code)

    def _decode(self, content: bytes, request_id: str | None, status: int) -> ModelTurn:
        """The body (within `max_response_bytes`) → the turn, on the event loop: orjson holds the
        GIL while it parses, so a worker thread gave the other runs nothing (measured) and cost a
        thread the user did not ask for. The codec is told the real 2xx status (its errors name
        it), unless it is a `Wire` written before `decode` took `status`."""
        if self._decode_status:
            return self._wire.decode(content, request_id=request_id, status=status)
        return self._wire.decode(content, request_id=request_id)

    async def _stream(
        self, body: bytes, request: ModelRequest, emit: Emit, progress: _Progress, slot: Any
    ) -> ModelTurn:
        """One streamed request: deltas awaited into `emit` as they arrive; the turn, or a `Failure`."""
        try:
            response = await self._sender.send(body, stream=True, slot=slot)
            try:
                return await self._read_stream(response, request, emit, progress)
            finally:
                await response.aclose()
        except httpx.HTTPError as e:
            failure = self._errors.transport(e)
            if progress.emitted:
                failure.error.message += " (part of the answer had already been streamed: not retried)"
                failure.error.args = (failure.error.message,)
            raise failure from e

    async def _read_stream(
        self, response: Response, request: ModelRequest, emit: Emit, progress: _Progress
    ) -> ModelTurn:
        budget = self.input_budget
        if not 200 <= response.status_code < 300:  # a final 1xx (101) is no answer either
            raise self._errors.status(response, await read_some(response, _ERROR_BODY_BYTES))
        request_id = response.headers.get("x-request-id")
        if "text/event-stream" not in response.headers.get("content-type", ""):
            # A server that ignored `stream: true`: a plain answer, emitted whole by the loop.
            content = await read_body(response, budget.max_response_bytes)
            return self._decode(content, request_id, response.status_code)
        assembler = self._wire.assembler(request.run_id, request.step, request_id)
        # sse_events reads only `headers` and `aiter_bytes()`, which every `Response` has.
        events = sse_events(
            cast(httpx.Response, response), budget.max_sse_line_bytes, budget.max_response_bytes
        )
        # The lean transport's response keeps the idle deadline in its own reads (no cancel scope).
        clock = response if isinstance(response, LeanResponse) else None
        try:
            if await pump(events, assembler, emit, budget, progress, clock):
                streamed: ModelTurn = assembler.result()
                return streamed
        finally:
            await events.aclose()  # type: ignore[attr-defined]
        raise self._errors.idle(budget.stream_idle_timeout, request_id, progress.emitted)


class _Progress:
    """Whether any part of a streamed answer has reached the caller (then it is never retried)."""

    __slots__ = ("emitted",)

    def __init__(self) -> None:
        self.emitted = False

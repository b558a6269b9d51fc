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
import functools
import os
from typing import Any, Literal

import anyio
import anyio.to_thread
import httpx

from .._budget import InputBudget
from .._exceptions import (
    APIConnectionError,
    APIError,
    APIResponseError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    InternalServerError,
    RateLimitError,
    ToolsNotSupportedError,
)
from .._json import loads
from .._model import Emit, ModelRequest
from .._retry import Failure, RetryPolicy
from .._seams import Wire
from .._types import ModelTurn
from .._wire.anthropic import DEFAULT_MAX_TOKENS, AnthropicWire
from .._wire.openai import OpenAIWire
from .bounded import pump, read_body, read_some, sse_events
from .config import check_client_options
from .secrets import CREDENTIAL_HEADERS, Redactor
from .transport import TransportKind, make_transport, prepare
from .transport import http_client as make_http_client

__all__ = ["FluxClient", "DEFAULT_BASE_URL", "DEFAULT_ANTHROPIC_BASE_URL", "DEFAULT_TIMEOUT"]

DEFAULT_BASE_URL = "https://api.fluxrouter.ai/v1"
DEFAULT_ANTHROPIC_BASE_URL = "https://api.fluxrouter.ai/anthropic"
# LLM answers can take minutes; connecting should not. (openai-python uses the same shape.)
DEFAULT_TIMEOUT = httpx.Timeout(600.0, connect=10.0)
_USER_AGENT = "agentloop/0.1"
_TRANSPORTS = ("auto", "httpcore", "sharded", "aiohttp")
_THREAD_BODY_BYTES = 1024 * 1024  # bodies larger than this are parsed off the event loop
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
      `"httpcore"` (httpx's own pool), `"sharded"`, `"aiohttp"`, or any `httpx.AsyncBaseTransport`.
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
        check_client_options(  # every caller mistake is refused here (see _clientconfig)
            api_key=api_key,
            base_url=base_url,
            max_tokens=max_tokens,
            stream=stream,
            timeout=timeout,
            total_timeout=total_timeout,
            retry=retry,
            headers=headers,
            http_client=http_client,
            transport=transport,
            max_connections=max_connections,
        )
        key = api_key if api_key is not None else os.environ.get("FLUX_API_KEY")
        if not key:
            raise ConfigurationError(
                "no API key: pass FluxClient(api_key=...) or set the FLUX_API_KEY environment variable"
            )
        self._api_key = key
        if wire not in (None, "openai", "anthropic"):
            raise ConfigurationError(f"unknown wire {wire!r}; supported: 'openai', 'anthropic'")
        url = (
            base_url
            or os.environ.get("FLUX_BASE_URL")
            or (DEFAULT_ANTHROPIC_BASE_URL if wire == "anthropic" else DEFAULT_BASE_URL)
        )
        url = url.rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise ConfigurationError(f"base_url must start with http:// or https://, got {url!r}")
        _refuse_full_endpoint(url)
        if wire is None:
            wire = "anthropic" if url.endswith("/anthropic") or "/anthropic/" in url else "openai"
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise ConfigurationError(f"max_tokens must be a positive integer, got {max_tokens!r}")
        if total_timeout is not None and total_timeout <= 0:
            raise ConfigurationError(f"total_timeout must be positive seconds or None, got {total_timeout!r}")
        if input_budget is not None and not isinstance(input_budget, InputBudget):
            raise ConfigurationError(f"input_budget must be an InputBudget, got {input_budget!r}")
        self.input_budget = input_budget or InputBudget()
        self.base_url = url
        self._wire: Wire = AnthropicWire(max_tokens=max_tokens) if wire == "anthropic" else OpenAIWire()
        self.wire = wire
        self._url = self._wire.url(url)
        self.stream = stream
        self.total_timeout = total_timeout
        self.retry = retry or RetryPolicy()
        self._headers = {
            "content-type": "application/json",
            "accept": "application/json",
            "user-agent": _USER_AGENT,
            **(headers or {}),
            **self._wire.auth_headers(key),
        }
        self._stream_headers = {**self._headers, "accept": "text/event-stream", "cache-control": "no-cache"}
        # The key, and every credential header value as sent ("Bearer <key>", a proxy's token).
        credentials = [v for k, v in self._headers.items() if k.lower() in CREDENTIAL_HEADERS]
        self._redactor = Redactor([key, *credentials])
        if timeout is None:
            timeout = DEFAULT_TIMEOUT
        if isinstance(transport, str) and transport not in _TRANSPORTS:
            raise ConfigurationError(
                f"unknown transport {transport!r}; use one of {', '.join(_TRANSPORTS)} or an httpx transport"
            )
        self._owns_http = http_client is None
        self._pool_args = (timeout, transport, max_connections)  # to build a fresh pool: fresh_pool()
        self._transport: object = None  # what __aenter__ prepares for the running loop
        if http_client is None:
            # Keep-alive as large as the pool: with fewer, every request past it opens a new connection.
            limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
            built = _built_transport(transport, limits)
            self._transport = built
            http_client = make_http_client(timeout, built, limits)
        self._http = http_client

    def __repr__(self) -> str:
        return f"FluxClient(base_url={self.base_url!r}, wire={self.wire!r})"

    async def __aenter__(self) -> FluxClient:
        # Build the transport for this event loop now (importing its library: aiohttp takes
        # 0.3-0.7 s), so the first request is as fast as the next and its total_timeout is spent
        # on the request only. See benchmarks/bench_first_request.py.
        prepare(self._transport)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    def fresh_pool(self) -> FluxClient | None:
        """A copy of this client with a new connection pool of its own (None if the pool is the caller's).

        A connection pool belongs to the event loop it was used in; `Agent.run_sync` starts a new
        loop per call, so it runs on a copy like this and closes it afterwards.
        """
        if not self._owns_http:
            return None
        timeout, transport, max_connections = self._pool_args
        twin = copy.copy(self)
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        built = _built_transport(transport, limits)
        twin._transport = built  # its own: entering the twin must not build the original's
        twin._http = make_http_client(timeout, built, limits)
        return twin

    # --- the Model protocol -------------------------------------------------------------------

    async def request(self, request: ModelRequest, emit: Emit | None = None) -> ModelTurn:
        """Send one model request (with retries) and return the assistant turn.

        With `emit` (and `stream=True`), the answer is streamed: text and tool-call deltas are
        awaited into `emit` as they arrive, and the turn comes back with `streamed=True`.
        """
        limit = self.total_timeout if self.total_timeout is not None else self.input_budget.request_timeout
        try:
            with anyio.move_on_after(limit):
                return await self._request(request, emit)
            if self.total_timeout is not None:
                raise APITimeoutError(
                    f"the model request to {self._url} took longer than total_timeout={limit:g} s "
                    "(retries included); raise FluxClient(total_timeout=...) if the model needs longer"
                )
            raise APITimeoutError(
                f"the model request to {self._url} took longer than InputBudget.request_timeout={limit:g} s "
                "(retries included; the bound every request has when FluxClient(total_timeout=...) is not set); "
                "raise FluxClient(total_timeout=...) if the model needs longer"
            )
        except APIError as e:
            raise self._redactor.exception(e) from e.__cause__

    async def _request(self, request: ModelRequest, emit: Emit | None) -> ModelTurn:
        streaming = emit is not None and self.stream
        body = self._wire.encode(request, stream=streaming)
        progress = _Progress() if streaming else None
        policy = self.retry
        attempt = 0
        while True:
            try:
                if progress is None:
                    return await self._post(body)
                return await self._stream(body, request, emit, progress)  # type: ignore[arg-type]
            except Failure as f:
                if (
                    not f.retryable
                    or attempt >= policy.max_retries
                    or (progress is not None and progress.emitted)
                ):
                    raise f.error from f.__cause__
                delay = policy.delay(attempt, f.headers)
            await anyio.sleep(delay)
            attempt += 1

    async def _post(self, body: bytes) -> ModelTurn:
        """One plain request → the decoded turn, or a `Failure`."""
        try:
            async with self._http.stream("POST", self._url, content=body, headers=self._headers) as response:
                if response.status_code >= 300:
                    raise self._status_failure(response, await read_some(response, _ERROR_BODY_BYTES))
                content = await read_body(response, self.input_budget.max_response_bytes)
        except httpx.HTTPError as e:
            raise self._transport_failure(e) from e
        return await self._decode(content, response.headers.get("x-request-id"))

    async def _decode(self, content: bytes, request_id: str | None) -> ModelTurn:
        """The body → the turn; a large body is parsed in a worker thread (orjson takes 40-80 ms
        for 5-10 MB, which would stall every other run on the loop). Small ones stay inline."""
        turn: ModelTurn
        if len(content) <= _THREAD_BODY_BYTES:
            turn = self._wire.decode(content, request_id=request_id)
        else:
            decode = functools.partial(self._wire.decode, content, request_id=request_id)
            turn = await anyio.to_thread.run_sync(decode, abandon_on_cancel=True)
        return turn

    async def _stream(self, body: bytes, request: ModelRequest, emit: Emit, progress: _Progress) -> ModelTurn:
        """One streamed request: deltas awaited into `emit` as they arrive; the turn, or a `Failure`."""
        budget = self.input_budget
        try:
            async with self._http.stream(
                "POST", self._url, content=body, headers=self._stream_headers
            ) as response:
                if response.status_code >= 300:
                    raise self._status_failure(response, await read_some(response, _ERROR_BODY_BYTES))
                request_id = response.headers.get("x-request-id")
                if "text/event-stream" not in response.headers.get("content-type", ""):
                    # A server that ignored `stream: true`: a plain answer, emitted whole by the loop.
                    content = await read_body(response, budget.max_response_bytes)
                    return await self._decode(content, request_id)
                assembler = self._wire.assembler(request.run_id, request.step, request_id)
                events = sse_events(response, budget.max_sse_line_bytes, budget.max_response_bytes)
                try:
                    if await self._pump(events, assembler, emit, progress):
                        streamed: ModelTurn = assembler.result()
                        return streamed
                finally:
                    await events.aclose()  # type: ignore[attr-defined]
                raise self._idle_failure(request_id, progress)
        except httpx.HTTPError as e:
            failure = self._transport_failure(e)
            if progress.emitted:
                failure.error.message += " (part of the answer had already been streamed: not retried)"
                failure.error.args = (failure.error.message,)
            raise failure from e

    async def _pump(self, events: Any, assembler: Any, emit: Emit, progress: _Progress) -> bool:
        """Feed SSE events to the assembler and its deltas to `emit`. False: the stream went idle."""
        return await pump(events, assembler, emit, self.input_budget.stream_idle_timeout, progress)

    # --- errors -------------------------------------------------------------------------------

    def _idle_failure(self, request_id: str | None, progress: _Progress) -> Failure:
        idle = self.input_budget.stream_idle_timeout
        error = APITimeoutError(
            f"the stream from {self._url} sent no event for InputBudget.stream_idle_timeout={idle:g} s "
            "(keep-alives do not count); raise FluxClient(input_budget=InputBudget(stream_idle_timeout=...)) "
            "if the model pauses longer"
            + (" (part of the answer had already been streamed: not retried)" if progress.emitted else ""),
            request_id=request_id,
        )
        return Failure(error, retryable=True)

    def _transport_failure(self, e: httpx.HTTPError) -> Failure:
        if isinstance(e, httpx.DecodingError):  # e.g. a body that claims gzip and is not
            error: APIError = APIResponseError(
                f"the response from {self._url} could not be decoded ({self._redact(str(e)) or type(e).__name__}); "
                "this is a router or proxy fault, retry later or report it"
            )
            return Failure(error, retryable=False)
        if not isinstance(e, httpx.TransportError):  # httpx's other request errors: a broken exchange
            error = APIConnectionError(
                f"the request to {self._url} failed: {type(e).__name__}: {self._redact(str(e))}"
            )
            return Failure(error, retryable=False)
        if isinstance(e, httpx.TimeoutException):
            error = APITimeoutError(
                f"request to {self._url} timed out ({type(e).__name__}); raise FluxClient(timeout=...) "
                "if the model needs longer"
            )
        else:
            error = APIConnectionError(
                f"could not reach {self._url} or the connection broke: "
                f"{self._redact(str(e)) or type(e).__name__}; check the base URL and the network"
            )
        return Failure(error, retryable=True)

    def _status_failure(self, response: httpx.Response, content: bytes) -> Failure:
        headers = self._redactor.headers(response.headers)
        retryable = self.retry.should_retry_status(response.status_code, headers)
        return Failure(self._status_error(response, content, headers), retryable=retryable, headers=headers)

    def _redact(self, text: str) -> str:
        return self._redactor.text(text)

    def _status_error(
        self, response: httpx.Response, content: bytes, headers: dict[str, str]
    ) -> APIStatusError:
        status = response.status_code
        text = self._redact(content.decode(response.encoding or "utf-8", "replace"))
        try:
            body: Any = self._redactor.value(loads(text))  # again: JSON escapes can spell the key
        except ValueError:
            body = text[:2000]
        # One sentence, whatever the server's ends with: "...key. Check..." never "...key.. Check...".
        message = (
            (_error_message(body) or self._redact(response.reason_phrase) or "no error message")
            .rstrip()
            .rstrip(".")
        )
        request_id = response.headers.get("x-request-id")
        where = f"FluxRouter answered {status} for POST {self._url}"
        kwargs = {"status_code": status, "body": body, "request_id": request_id, "headers": headers}
        if status in (400, 422):
            if _says_tools_unsupported(message):
                return ToolsNotSupportedError(
                    f"{where}: {message}. The routed model does not support tool calling: pin a "
                    "tool-capable model, e.g. Agent(model='flux-pinned-gpt-5') (any flux-pinned-* id "
                    "of a model verified to support tools).",
                    **kwargs,
                )
            return BadRequestError(
                f"{where}: {message}. The request was rejected; retrying will not help.", **kwargs
            )
        if status in (401, 403):
            return AuthenticationError(
                f"{where}: {message}. Check the API key (FLUX_API_KEY or FluxClient(api_key=...)) "
                "and its permissions.",
                **kwargs,
            )
        if status == 429:
            return RateLimitError(
                f"{where}: {message}. Rate limited after {self.retry.max_retries} retries; slow down "
                "or raise RetryPolicy(max_retries=...).",
                **kwargs,
            )
        if status >= 500:
            return InternalServerError(f"{where}: {message}. The router failed; try again later.", **kwargs)
        if status in (404, 405):
            return APIStatusError(
                f"{where}: {message}. Check base_url ({self.base_url!r}): it is the API root, e.g. "
                f"{DEFAULT_BASE_URL!r} or {DEFAULT_ANTHROPIC_BASE_URL!r}; the client appends the endpoint's path.",
                **kwargs,
            )
        return APIStatusError(f"{where}: {message}", **kwargs)


def _refuse_full_endpoint(url: str) -> None:
    """A pasted endpoint (…/v1/chat/completions, …/anthropic/v1/messages) would 404 on every
    request with the path appended twice: say at construction what to pass instead."""
    for endpoint in ("/chat/completions", "/messages"):
        if url.endswith(endpoint):
            root = url.removesuffix(endpoint)
            if endpoint == "/messages" and root.endswith("/anthropic/v1"):
                root = root.removesuffix("/v1")
            raise ConfigurationError(
                f"base_url {url!r} is a full endpoint; pass the API root instead: base_url={root!r} "
                f"(the client appends {endpoint})"
            )


def _error_message(body: Any) -> str | None:
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            msg = err.get("message") or err.get("detail")
            return str(msg) if msg else None
        if isinstance(err, str):
            return err
    if isinstance(body, str) and body.strip():
        return body.strip()[:500]
    return None


def _says_tools_unsupported(message: str) -> bool:
    m = message.lower()
    return ("tool" in m or "function" in m) and any(
        s in m for s in ("not support", "unsupported", "does not support", "doesn't support", "not available")
    )


def _built_transport(
    transport: httpx.AsyncBaseTransport | TransportKind, limits: httpx.Limits
) -> httpx.AsyncBaseTransport | None:
    """The transport a new pool uses: the caller's own, a built one, or None for httpx's default."""
    if not isinstance(transport, str):
        return transport
    # Environment proxies are honoured by httpx's own transport only: keep it then.
    return None if _env_proxies() else make_transport(transport, limits)


def _env_proxies() -> bool:
    return any(k.lower() in ("http_proxy", "https_proxy", "all_proxy") for k in os.environ)


class _Progress:
    """Whether any part of a streamed answer has reached the caller (then it is never retried)."""

    __slots__ = ("emitted",)

    def __init__(self) -> None:
        self.emitted = False

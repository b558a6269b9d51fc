"""FluxClient: one shared httpx connection pool, typed errors, retries, and a wire adapter.

A client is meant to be long-lived and shared by many agents and concurrent runs. It never
holds per-run state. The API key is kept out of every repr, log line and error message: error
texts coming back from the server are scrubbed of it before they are put into exceptions.
"""

from __future__ import annotations

import os
from typing import Any, Literal

import anyio
import httpx

from ._exceptions import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    InternalServerError,
    RateLimitError,
    ToolsNotSupportedError,
)
from ._json import loads
from ._model import Emit, ModelRequest
from ._retry import RetryPolicy
from ._types import ModelTurn
from ._wire._openai import OpenAIWire

__all__ = ["FluxClient", "DEFAULT_BASE_URL", "DEFAULT_TIMEOUT"]

DEFAULT_BASE_URL = "https://api.fluxrouter.ai/v1"
# LLM answers can take minutes; connecting should not. (openai-python uses the same shape.)
DEFAULT_TIMEOUT = httpx.Timeout(600.0, connect=10.0)
_USER_AGENT = "agentloop/0.1"


class FluxClient:
    """An async client for FluxRouter (or any OpenAI-compatible endpoint).

    - `api_key`: defaults to `$FLUX_API_KEY`; a missing key is a `ConfigurationError` here, not
      a 401 later.
    - `base_url`: defaults to `$FLUX_BASE_URL`, else `https://api.fluxrouter.ai/v1`.
    - `timeout`: seconds or an `httpx.Timeout` (connect / read / write / pool); a run's own
      deadline (a cancel scope around it) always wins.
    - `retry`: a `RetryPolicy` (2 retries by default, openai-python's rules).
    - `http_client` / `transport`: the seams for a custom `httpx.AsyncClient` or transport (tests,
      proxies, another HTTP stack). A client passed in is not closed by `aclose()`.

    Use it as `async with FluxClient() as client:` or call `await client.aclose()`.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        wire: Literal["openai"] | None = None,
        timeout: float | httpx.Timeout | None = None,
        retry: RetryPolicy | None = None,
        headers: dict[str, str] | None = None,
        http_client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 1000,
    ) -> None:
        key = api_key if api_key is not None else os.environ.get("FLUX_API_KEY")
        if not key:
            raise ConfigurationError(
                "no API key: pass FluxClient(api_key=...) or set the FLUX_API_KEY environment variable"
            )
        self._api_key = key
        url = (base_url or os.environ.get("FLUX_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise ConfigurationError(f"base_url must start with http:// or https://, got {url!r}")
        self.base_url = url
        if wire not in (None, "openai"):
            raise ConfigurationError(f"unknown wire {wire!r}; supported: 'openai'")
        self._wire = OpenAIWire
        self.wire = self._wire.name
        self._url = url + self._wire.path
        self.retry = retry or RetryPolicy()
        self._headers = {
            "content-type": "application/json",
            "accept": "application/json",
            "user-agent": _USER_AGENT,
            **(headers or {}),
            **self._wire.auth_headers(key),
        }
        if timeout is None:
            timeout = DEFAULT_TIMEOUT
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(
            timeout=timeout,
            transport=transport,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=100),
            # Env proxies are honoured as httpx does; the key never goes into the URL.
        )

    def __repr__(self) -> str:
        return f"FluxClient(base_url={self.base_url!r}, wire={self.wire!r})"

    async def __aenter__(self) -> FluxClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    # --- the Model protocol -------------------------------------------------------------------

    async def request(self, request: ModelRequest, emit: Emit | None = None) -> ModelTurn:
        """Send one chat request (with retries) and return the assistant turn."""
        body = self._wire.encode(request)
        policy = self.retry
        attempt = 0
        while True:
            try:
                response = await self._http.post(self._url, content=body, headers=self._headers)
            except httpx.TimeoutException as e:
                error: APIError = APITimeoutError(
                    f"request to {self._url} timed out ({type(e).__name__}); raise FluxClient(timeout=...) "
                    "if the model needs longer"
                )
                headers: dict[str, str] = {}
                retryable = True
            except httpx.TransportError as e:
                error = APIConnectionError(
                    f"could not reach {self._url}: {self._redact(str(e)) or type(e).__name__}; check "
                    "the base URL and the network"
                )
                headers = {}
                retryable = True
            else:
                if response.status_code < 300:
                    return self._wire.decode(response.content, request_id=response.headers.get("x-request-id"))
                headers = dict(response.headers)
                error = self._status_error(response)
                retryable = policy.should_retry_status(response.status_code, headers)
            if not retryable or attempt >= policy.max_retries:
                raise error
            await anyio.sleep(policy.delay(attempt, headers))
            attempt += 1

    # --- errors -------------------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        # Keys shorter than 8 characters are test placeholders; replacing them would mangle text.
        key = self._api_key
        return text.replace(key, "[redacted]") if len(key) >= 8 and key in text else text

    def _status_error(self, response: httpx.Response) -> APIStatusError:
        status = response.status_code
        text = self._redact(response.text)
        try:
            body: Any = loads(text)
        except ValueError:
            body = text[:2000]
        message = _error_message(body) or response.reason_phrase or "no error message"
        request_id = response.headers.get("x-request-id")
        where = f"FluxRouter answered {status} for POST {self._url}"
        kwargs = {"status_code": status, "body": body, "request_id": request_id, "headers": dict(response.headers)}
        if status in (400, 422):
            if _says_tools_unsupported(message):
                return ToolsNotSupportedError(
                    f"{where}: {message}. The routed model does not support tool calling: pin a "
                    "tool-capable model, e.g. Agent(model='flux-pinned-gpt-5') (any flux-pinned-* id "
                    "of a model verified to support tools).",
                    **kwargs,
                )
            return BadRequestError(f"{where}: {message}. The request was rejected; retrying will not help.", **kwargs)
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
        return APIStatusError(f"{where}: {message}", **kwargs)


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

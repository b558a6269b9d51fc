"""What went wrong with one HTTP exchange, as the typed error a user can act on.

`Failure` (in `_retry`) carries the error and whether the retry policy may re-send the request.
Every text that leaves here went through the client's `Redactor`: a router that echoes the key
back in an error body or a reason phrase does not leak it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import httpx

from .._exceptions import (
    APIConnectionError,
    APIError,
    APIResponseError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    InternalServerError,
    RateLimitError,
    ToolsNotSupportedError,
)
from .._json import loads
from .._retry import Failure, RetryPolicy
from .._wire import DEFAULT_ANTHROPIC_BASE_URL, DEFAULT_BASE_URL
from .h1 import ResponseHead
from .secrets import Redactor

__all__ = ["Errors", "takes_status"]


class Errors:
    """Builds the `Failure`s of one client (its URL, its redactor, its retry policy)."""

    __slots__ = ("base_url", "redactor", "retry", "url")

    def __init__(self, url: str, base_url: str, redactor: Redactor, retry: RetryPolicy) -> None:
        self.url, self.base_url, self.redactor, self.retry = url, base_url, redactor, retry

    def idle(self, idle: float, request_id: str | None, emitted: bool) -> Failure:
        error = APITimeoutError(
            f"the stream from {self.url} sent no event for InputBudget.stream_idle_timeout={idle:g} s "
            "(keep-alives do not count); raise FluxClient(input_budget=InputBudget(stream_idle_timeout=...)) "
            "if the model pauses longer"
            + (" (part of the answer had already been streamed: not retried)" if emitted else ""),
            request_id=request_id,
        )
        return Failure(error, retryable=True)

    def total_time(self, limit: float, *, configured: bool) -> APITimeoutError:
        """A request past its total time (`configured`: FluxClient's `total_timeout`, else the
        budget's `request_timeout`): not retried."""
        if configured:
            return APITimeoutError(
                f"the model request to {self.url} took longer than total_timeout={limit:g} s "
                "(retries included); raise FluxClient(total_timeout=...) if the model needs longer"
            )
        return APITimeoutError(
            f"the model request to {self.url} took longer than InputBudget.request_timeout={limit:g} s "
            "(retries included; the bound every request has when FluxClient(total_timeout=...) is not set); "
            "raise FluxClient(total_timeout=...) if the model needs longer"
        )

    def transport(self, e: httpx.HTTPError) -> Failure:
        redact = self.redactor.text
        if isinstance(e, httpx.DecodingError):  # e.g. a body that claims gzip and is not
            error: APIError = APIResponseError(
                f"the response from {self.url} could not be decoded ({redact(str(e)) or type(e).__name__}); "
                "this is a router or proxy fault, retry later or report it"
            )
            return Failure(error, retryable=False)
        if not isinstance(e, httpx.TransportError):  # httpx's other request errors: a broken exchange
            error = APIConnectionError(
                f"the request to {self.url} failed: {type(e).__name__}: {redact(str(e))}"
            )
            return Failure(error, retryable=False)
        if isinstance(e, httpx.TimeoutException):
            error = APITimeoutError(
                f"request to {self.url} timed out ({type(e).__name__}); raise FluxClient(timeout=...) "
                "if the model needs longer"
            )
        else:
            error = APIConnectionError(
                f"could not reach {self.url} or the connection broke: "
                f"{redact(str(e)) or type(e).__name__}; check the base URL and the network"
            )
        return Failure(error, retryable=True)

    def status(self, response: ResponseHead, content: bytes) -> Failure:
        headers = self.redactor.headers(response.headers)
        retryable = self.retry.should_retry_status(response.status_code, headers)
        error = self._status_error(response, content, headers)
        return Failure(error, retryable=retryable, headers=headers)

    def _status_error(
        self, response: ResponseHead, content: bytes, headers: dict[str, str]
    ) -> APIStatusError:
        status = response.status_code
        redact = self.redactor.text
        text = redact(content.decode(response.encoding or "utf-8", "replace"))
        try:
            body: Any = self.redactor.value(loads(text))  # again: JSON escapes can spell the key
        except ValueError:
            body = text[:2000]
        # One sentence, whatever the server's ends with: "...key. Check..." never "...key.. Check...".
        message = (
            (_error_message(body) or redact(response.reason_phrase) or "no error message")
            .rstrip()
            .rstrip(".")
        )
        where = f"FluxRouter answered {status} for POST {self.url}"
        kwargs = {
            "status_code": status,
            "body": body,
            "request_id": response.headers.get("x-request-id"),
            "headers": headers,
        }
        cls, advice = self._advice(status, message)
        return cls(f"{where}: {message}{advice}", **kwargs)

    def _advice(self, status: int, message: str) -> tuple[type[APIStatusError], str]:
        if status in (400, 422):
            if _says_tools_unsupported(message):
                return ToolsNotSupportedError, (
                    ". The routed model does not support tool calling: pin a "
                    "tool-capable model, e.g. Agent(model='flux-pinned-gpt-5') (any flux-pinned-* id "
                    "of a model verified to support tools)."
                )
            return BadRequestError, ". The request was rejected; retrying will not help."
        if status in (401, 403):
            return AuthenticationError, (
                ". Check the API key (FLUX_API_KEY or FluxClient(api_key=...)) and its permissions."
            )
        if status == 429:
            return RateLimitError, (
                f". Rate limited after {self.retry.max_retries} retries; slow down "
                "or raise RetryPolicy(max_retries=...)."
            )
        if status >= 500:
            return InternalServerError, ". The router failed; try again later."
        if status in (404, 405):
            return APIStatusError, (
                f". Check base_url ({self.base_url!r}): it is the API root, e.g. "
                f"{DEFAULT_BASE_URL!r} or {DEFAULT_ANTHROPIC_BASE_URL!r}; the client appends the endpoint's path."
            )
        return APIStatusError, ""


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


def takes_status(decode: Callable[..., Any]) -> bool:
    """Whether a `Wire.decode` takes the `status` keyword (a third-party wire written before it
    existed does not, and is called without it; its errors then say what it knows)."""
    try:
        parameters = inspect.signature(decode).parameters.values()
    except (TypeError, ValueError):  # no signature to read (a C callable): the old call is safe
        return False
    return any(
        (p.name == "status" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))
        or p.kind is p.VAR_KEYWORD
        for p in parameters
    )

"""RetryPolicy: when and how long to wait before re-sending a model request, as data.

The rules are openai-python's, the ecosystem's expectation: retry connection errors, timeouts,
408, 409, 429 and every status >= 500; 2 retries; backoff `min(0.5 * 2**n, 8)` seconds times
`1 - 0.25 * random()`; honour `retry-after-ms`, then `retry-after` (seconds or an HTTP date)
when it is at most 60 s; `x-should-retry: true|false` overrides the status rule.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ._budget import is_number
from ._exceptions import APIError, ConfigurationError

__all__ = ["RetryPolicy", "Failure"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a `FluxClient` retries. `RetryPolicy(max_retries=0)` turns retries off."""

    max_retries: int = 2
    initial_delay: float = 0.5
    max_delay: float = 8.0
    jitter: float = 0.25  # the delay is multiplied by 1 - jitter * random()
    max_retry_after: float = 60.0  # a server-requested wait longer than this is not honoured
    retry_statuses: frozenset[int] = frozenset({408, 409, 429})  # plus every status >= 500

    def __post_init__(self) -> None:
        # Checked here, not at the first failure: a string, a negative or a NaN delay passed
        # construction and raised a raw TypeError / ValueError out of the run only once the router
        # first failed, the moment the caller most needs the typed error.
        if not is_number(self.max_retries, whole=True) or self.max_retries < 0:
            raise ConfigurationError(
                f"RetryPolicy.max_retries must be an int >= 0 (0 turns retries off), got {self.max_retries!r}"
            )
        for name in ("initial_delay", "max_delay", "jitter", "max_retry_after"):
            _check_seconds(name, getattr(self, name))
        if self.jitter > 1:
            raise ConfigurationError(f"RetryPolicy.jitter must be between 0 and 1, got {self.jitter!r}")
        statuses = self.retry_statuses
        if (
            isinstance(statuses, str | bytes)
            or not isinstance(statuses, Iterable)
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in statuses)
        ):
            raise ConfigurationError(
                f"RetryPolicy.retry_statuses must be a set of HTTP status ints, got {statuses!r}"
            )
        object.__setattr__(self, "retry_statuses", frozenset(statuses))

    def should_retry_status(self, status: int, headers: Mapping[str, str]) -> bool:
        override = headers.get("x-should-retry")
        if override is not None:
            override = override.strip().lower()
            if override == "true":
                return True
            if override == "false":
                return False
        return status in self.retry_statuses or status >= 500

    def delay(self, retry_index: int, headers: Mapping[str, str] | None = None) -> float:
        """Seconds to wait before retry number `retry_index` (0 for the first retry)."""
        if headers:
            server = _retry_after(headers)
            if server is not None and 0 <= server <= self.max_retry_after:
                return server
        backoff = min(self.initial_delay * 2.0**retry_index, self.max_delay)
        return backoff * (1 - self.jitter * random.random())


def _check_seconds(name: str, value: object) -> None:
    if not is_number(value) or value < 0:
        raise ConfigurationError(f"RetryPolicy.{name} must be a finite number >= 0, got {value!r}")


def _number(text: str) -> float:
    """A header's number, ASCII only: Python's `float` also reads other scripts' digits
    (Arabic-Indic '10' is 10.0) and `1_0`, so a header httpx decoded as UTF-8 waited where the lean
    transport's (Latin-1) did not."""
    if not text.isascii() or "_" in text:
        raise ValueError(text)
    return float(text)


def _retry_after(headers: Mapping[str, str]) -> float | None:
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return _number(ms) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return _number(value)
    except ValueError:
        parsed = email.utils.parsedate_tz(value)
        if parsed is None:
            return None
        try:
            return email.utils.mktime_tz(parsed) - time.time()
        except (OverflowError, ValueError):  # a year no clock holds (99999999999): no date at all
            return None


class Failure(Exception):
    """Internal: one failed attempt. `error` is what the caller gets if it is not retried.

    Never escapes the client: `FluxClient.request` raises `error` (an `APIError`) in its place.
    """

    __slots__ = ("error", "headers", "retryable")

    def __init__(self, error: APIError, *, retryable: bool, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retryable = retryable
        self.headers = headers or {}

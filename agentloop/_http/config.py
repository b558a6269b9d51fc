"""FluxClient's arguments, checked before anything is built.

Split from `_agentconfig` so the HTTP layer depends on nothing above it (the agent's checks need the
tool registry; the client's do not). The key itself is never echoed in a message.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from .._exceptions import ConfigurationError
from .._retry import RetryPolicy

__all__ = ["check_client_options", "check_int", "positive_seconds"]


def check_int(name: str, value: Any, *, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(f"{name} must be an integer >= {minimum} or None, got {value!r}")


def check_client_options(
    *,
    api_key: Any,
    base_url: Any,
    max_tokens: Any,
    stream: Any,
    timeout: Any,
    total_timeout: Any,
    retry: Any,
    headers: Any,
    http_client: Any,
    transport: Any,
    max_connections: Any,
) -> None:
    """FluxClient's arguments, checked before anything is built (the key itself is never echoed)."""
    if api_key is not None and (
        not isinstance(api_key, str) or any(c.isspace() or ord(c) < 32 for c in api_key)
    ):
        what = (
            type(api_key).__name__
            if not isinstance(api_key, str)
            else "a str with whitespace or control characters"
        )
        raise ConfigurationError(
            f"api_key must be the key as a str without spaces or newlines, got {what} (the key is not shown); "
            "check how it was read (e.g. .strip() a line read from a file)."
        )
    if base_url is not None and not isinstance(base_url, str):
        raise ConfigurationError(
            f"base_url must be a str such as 'https://api.fluxrouter.ai/v1', got {base_url!r}"
        )
    check_int("max_tokens", max_tokens)
    if not isinstance(stream, bool):
        raise ConfigurationError(f"stream must be True or False, got {stream!r}")
    if isinstance(timeout, httpx.Timeout):
        parts = {
            "connect": timeout.connect,
            "read": timeout.read,
            "write": timeout.write,
            "pool": timeout.pool,
        }
        bad = {k: v for k, v in parts.items() if v is not None and v <= 0}
        if bad:
            raise ConfigurationError(
                f"timeout: every part of the httpx.Timeout must be positive or None, got {bad}"
            )
    elif timeout is not None:
        positive_seconds("timeout", timeout)
    if total_timeout is not None:
        positive_seconds("total_timeout", total_timeout)
    if retry is not None and not isinstance(retry, RetryPolicy):
        raise ConfigurationError(
            f"retry must be a RetryPolicy (e.g. RetryPolicy(max_retries=5)) or None, got {retry!r}"
        )
    if headers is not None:
        if not isinstance(headers, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise ConfigurationError(f"headers must be a dict of str to str, got {headers!r}")
        owned = sorted(k for k in headers if k.lower() in ("authorization", "x-api-key"))
        if owned:
            raise ConfigurationError(
                f"headers may not set {', '.join(owned)}: the client sends the API key itself; pass api_key=... instead."
            )
    if http_client is not None and not isinstance(http_client, httpx.AsyncClient):
        raise ConfigurationError(
            f"http_client must be an httpx.AsyncClient, got {type(http_client).__name__}"
        )
    if not isinstance(transport, (str, httpx.AsyncBaseTransport)):
        raise ConfigurationError(
            f"transport must be 'auto', 'httpcore', 'sharded', 'aiohttp' or an httpx.AsyncBaseTransport, got {transport!r}"
        )
    if http_client is not None and transport != "auto":
        raise ConfigurationError(
            "transport= and http_client= disagree: a custom http_client brings its own transport. Pass one of them."
        )
    check_int("max_connections", max_connections)


def positive_seconds(name: str, value: Any) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not value > 0
        or value == float("inf")
    ):
        raise ConfigurationError(f"{name} must be a positive number of seconds or None, got {value!r}")

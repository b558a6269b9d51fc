"""FluxClient's arguments, checked before anything is built.

Split from `_agentconfig` so the HTTP layer depends on nothing above it (the agent's checks need the
tool registry; the client's do not). The key itself is never echoed in a message.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from .._budget import InputBudget, check_int, is_number
from .._exceptions import ConfigurationError
from .._retry import RetryPolicy
from .._wire import WIRES, sniff_wire
from .secrets import CREDENTIAL_HEADERS

__all__ = [
    "DEFAULT_TIMEOUT",
    "ClientConfig",
    "ClientOptions",
    "PoolConfig",
    "check_client_options",
    "check_int",
    "positive_seconds",
    "resolve_config",
]

# LLM answers can take minutes; connecting should not. (openai-python uses the same shape.)
DEFAULT_TIMEOUT = httpx.Timeout(600.0, connect=10.0)
USER_AGENT = "agentloop/0.1"
TRANSPORTS = ("auto", "lean", "httpcore", "sharded", "aiohttp")


@dataclass(frozen=True, slots=True)
class PoolConfig:
    """What a connection pool is built from (kept so `fresh_pool()` can build an identical one)."""

    timeout: httpx.Timeout
    transport: Any  # a TransportKind name or the caller's httpx.AsyncBaseTransport
    max_connections: int


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """Everything `FluxClient(...)` resolved from its arguments and the environment, once.

    Grouped as httpx groups `Timeout` / `Limits`: the client reads it, never re-derives it.
    `headers` are the request headers of a plain request, `stream_headers` of a streamed one
    (both with the key); `credentials` are the values the redactor must never let out.
    """

    api_key: str
    base_url: str
    wire: str
    max_tokens: int
    stream: bool
    total_timeout: float | None
    retry: RetryPolicy
    input_budget: InputBudget
    headers: Mapping[str, str]
    stream_headers: Mapping[str, str]
    credentials: tuple[str, ...]
    pool: PoolConfig


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """`FluxClient(...)`'s keyword arguments as the caller passed them (unchecked, unresolved)."""

    api_key: Any = None
    base_url: Any = None
    wire: Any = None
    max_tokens: Any = None
    stream: Any = True
    timeout: Any = None
    total_timeout: Any = None
    retry: Any = None
    headers: Any = None
    http_client: Any = None
    transport: Any = "auto"
    max_connections: Any = 1000
    input_budget: Any = None


def check_client_options(o: ClientOptions) -> None:
    """FluxClient's arguments, checked before anything is built (the key itself is never echoed)."""
    _check_key(o.api_key)
    if o.base_url is not None and not isinstance(o.base_url, str):
        raise ConfigurationError(
            f"base_url must be a str such as 'https://api.fluxrouter.ai/v1', got {o.base_url!r}"
        )
    check_int("max_tokens", o.max_tokens)
    if not isinstance(o.stream, bool):
        raise ConfigurationError(f"stream must be True or False, got {o.stream!r}")
    _check_timeout(o.timeout)
    if o.total_timeout is not None:
        positive_seconds("total_timeout", o.total_timeout)
    if o.retry is not None and not isinstance(o.retry, RetryPolicy):
        raise ConfigurationError(
            f"retry must be a RetryPolicy (e.g. RetryPolicy(max_retries=5)) or None, got {o.retry!r}"
        )
    if o.headers is not None:
        _check_headers(o.headers)
    _check_transport(o.http_client, o.transport)
    check_int("max_connections", o.max_connections)
    if o.input_budget is not None and not isinstance(o.input_budget, InputBudget):
        raise ConfigurationError(f"input_budget must be an InputBudget, got {o.input_budget!r}")


def _check_key(api_key: Any, name: str = "api_key") -> None:
    if api_key is not None and (
        not isinstance(api_key, str)
        or not api_key.isascii()
        or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in api_key)
    ):
        what = (
            type(api_key).__name__
            if not isinstance(api_key, str)
            else "a str with whitespace, control or non-ASCII characters"
        )
        raise ConfigurationError(
            f"{name} must be the key as a str without spaces or newlines, got {what} (the key is not shown); "
            "check how it was read (e.g. .strip() a line read from a file)."
        )


def _check_timeout(timeout: Any) -> None:
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


def _check_headers(headers: Any) -> None:
    if not isinstance(headers, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise ConfigurationError(f"headers must be a dict of str to str, got {headers!r}")
    owned = sorted(k for k in headers if k.lower() in ("authorization", "x-api-key"))
    if owned:
        raise ConfigurationError(
            f"headers may not set {', '.join(owned)}: the client sends the API key itself; pass api_key=... instead."
        )
    check_header_text(headers)


def _check_transport(http_client: Any, transport: Any) -> None:
    if http_client is not None and not isinstance(http_client, httpx.AsyncClient):
        raise ConfigurationError(
            f"http_client must be an httpx.AsyncClient, got {type(http_client).__name__}"
        )
    if not isinstance(transport, (str, httpx.AsyncBaseTransport)):
        raise ConfigurationError(
            f"transport must be 'auto', 'lean', 'httpcore', 'sharded', 'aiohttp' or an httpx.AsyncBaseTransport, "
            f"got {transport!r}"
        )
    if http_client is not None and transport != "auto":
        raise ConfigurationError(
            "transport= and http_client= disagree: a custom http_client brings its own transport. Pass one of them."
        )


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VALUE = re.compile(r"[\t\x20-\x7e]*")


def check_header_text(headers: Mapping[str, str]) -> None:
    """Names are HTTP tokens, values printable ASCII: a CR or LF in a value would end the header
    and let the rest forge others (header injection), so it is refused here, not sent."""
    for name, value in headers.items():
        if _TOKEN.fullmatch(name) is None or _VALUE.fullmatch(value) is None:
            raise ConfigurationError(
                f"header {name!r}: names must be HTTP tokens and values printable ASCII without CR/LF "
                f"(got value {value[:100]!r})"
            )
        if name.lower() in ("content-length", "transfer-encoding"):
            raise ConfigurationError(f"headers may not set {name}: the client frames the body itself")


def positive_seconds(name: str, value: Any) -> None:
    if not is_number(value) or value <= 0:
        raise ConfigurationError(f"{name} must be a positive number of seconds or None, got {value!r}")


def resolve_config(o: ClientOptions) -> ClientConfig:
    """Checked options (`check_client_options`) and the environment → the client's config."""
    key = o.api_key if o.api_key is not None else os.environ.get("FLUX_API_KEY")
    if o.api_key is None:  # the environment's key is checked as an argument is: it goes into a header
        _check_key(key or None, "the FLUX_API_KEY environment variable")
    if not key:
        raise ConfigurationError(
            "no API key: pass FluxClient(api_key=...) or set the FLUX_API_KEY environment variable"
        )
    if o.wire is not None and o.wire not in WIRES:
        raise ConfigurationError(f"unknown wire {o.wire!r}; supported: {', '.join(map(repr, WIRES))}")
    url = _base_url(o.base_url, o.wire)
    name = o.wire if o.wire is not None else sniff_wire(url)
    codec = WIRES[name].build(o.max_tokens)
    sent = {
        "content-type": "application/json",
        "accept": "application/json",
        "user-agent": USER_AGENT,
        **{
            k.lower(): v for k, v in (o.headers or {}).items()
        },  # one spelling: a caller's "Accept" replaces ours
        **codec.auth_headers(key),
    }
    return ClientConfig(
        api_key=key,
        base_url=url,
        wire=name,
        max_tokens=o.max_tokens,
        stream=o.stream,
        total_timeout=o.total_timeout,
        retry=o.retry or RetryPolicy(),
        input_budget=o.input_budget or InputBudget(),
        headers=sent,
        stream_headers={**sent, "accept": "text/event-stream", "cache-control": "no-cache"},
        # The key, and every credential header value as sent ("Bearer <key>", a proxy's token).
        credentials=(key, *(v for k, v in sent.items() if k.lower() in CREDENTIAL_HEADERS)),
        pool=pool_config(o.timeout, o.transport, o.max_connections),
    )


def pool_config(timeout: float | httpx.Timeout | None, transport: Any, max_connections: int) -> PoolConfig:
    if isinstance(transport, str) and transport not in TRANSPORTS:
        raise ConfigurationError(
            f"unknown transport {transport!r}; use one of {', '.join(TRANSPORTS)} or an httpx transport"
        )
    if timeout is None:
        timeout = DEFAULT_TIMEOUT
    elif not isinstance(timeout, httpx.Timeout):
        timeout = httpx.Timeout(timeout)
    return PoolConfig(timeout, transport, max_connections)


def _base_url(base_url: str | None, wire: str | None) -> str:
    default = WIRES[wire or "openai"].default_base_url
    url = (base_url or os.environ.get("FLUX_BASE_URL") or default).rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ConfigurationError(f"base_url must start with http:// or https://, got {url!r}")
    _refuse_secrets_in_url(url)
    try:  # a typo'd address ("http://[::1", a newline) would otherwise fail mid-run, as httpx's error
        parsed = httpx.URL(url)
    except httpx.InvalidURL as e:
        raise ConfigurationError(f"base_url {url!r} is not a valid URL ({e}); check it for typos") from None
    if not parsed.host:
        raise ConfigurationError(
            f"base_url {url!r} names no host; pass one such as 'https://api.fluxrouter.ai/v1'"
        )
    if parsed.port is not None and not 0 < parsed.port < 65536:  # 99999 was a raw OverflowError mid-run
        raise ConfigurationError(f"base_url {url!r} has port {parsed.port}; a port is 1-65535")
    _refuse_full_endpoint(url)
    return url


def _refuse_full_endpoint(url: str) -> None:
    """A pasted endpoint (…/v1/chat/completions, …/anthropic/v1/messages) would 404 on every
    request with the path appended twice: say at construction what to pass instead."""
    for spec in WIRES.values():
        endpoint = spec.endpoint
        if url.endswith(endpoint):
            root = url.removesuffix(endpoint)
            if spec.url_marker and root.endswith(spec.url_marker + "/v1"):
                root = root.removesuffix("/v1")
            raise ConfigurationError(
                f"base_url {url!r} is a full endpoint; pass the API root instead: base_url={root!r} "
                f"(the client appends {endpoint})"
            )


def _refuse_secrets_in_url(url: str) -> None:
    """A URL is shown in reprs, logs and every connection error, so it must not hold a secret:
    `https://user:KEY@host` (userinfo, which the client would never send either) or a query
    (`?key=...`; the client appends the endpoint's path after it, so it 404s as well). Checked
    before any other message could echo the URL, and the refusals never show the secret part."""
    scheme, _, rest = url.partition("://")
    netloc = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    if "@" in netloc:
        host = netloc.rsplit("@", 1)[1]
        raise ConfigurationError(
            f"base_url must not carry credentials ('{scheme}://[credentials removed]@{host}...'): a URL "
            "shows in reprs, logs and errors, and the client never sends them. Pass the key as "
            "FluxClient(api_key=...) or FLUX_API_KEY, and the URL without 'user:password@'"
        )
    if "?" in rest or "#" in rest:
        root = url.split("?", 1)[0].split("#", 1)[0]
        raise ConfigurationError(
            f"base_url must be the API root without a query or fragment, e.g. {root!r}: the client "
            "appends the endpoint's path to it (a query would end up before the path), and a URL "
            "shows in reprs, logs and errors (a key in '?key=...' would too). Pass the key as "
            "FluxClient(api_key=...) or FLUX_API_KEY; other fields as FluxClient(headers={...})"
        )

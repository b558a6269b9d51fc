"""Keeping the API key out of everything an exception carries.

An error leaves `FluxClient` only after `Redactor.exception` has gone over it and its whole
cause / context chain: messages and args, `headers` and `body`, and the request objects that
httpx and aiohttp hang on their exceptions (an `httpx.ConnectError` carries the request with its
`authorization` header; an aiohttp response error its `request_info.headers`). Credentials
headers are blanked whatever their value; the key is cut out of every other string. A link of the
chain that still shows the key after that (an object this module does not know) is cut off: the
error loses a cause, never leaks a key.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from typing import Any

import httpx

__all__ = ["Redactor", "REDACTED", "CREDENTIAL_HEADERS"]

REDACTED = "[redacted]"
# Headers that carry credentials on either wire (and through proxies): never kept, whatever their value.
CREDENTIAL_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "x-api-key", "api-key", "cookie", "set-cookie"}
)
_MIN_SECRET = 8  # shorter "keys" are test placeholders; cutting them out would mangle ordinary text
_WALK_DEPTH = 6  # how deep the leak check follows attributes (request → headers → raw list → item)
_WALK_NODES = (
    10_000  # objects the leak check may visit (a transport error reaches ~270); past it: assume a leak
)


class Redactor:
    """Cuts `secrets` (the API key, the credential header values) out of text, data and errors."""

    __slots__ = ("_bytes", "_secrets")

    def __init__(self, secrets: Iterable[str]) -> None:
        found = {s for s in secrets if isinstance(s, str) and len(s) >= _MIN_SECRET}
        self._secrets = tuple(sorted(found, key=len, reverse=True))  # "Bearer k" before "k"
        self._bytes = tuple(s.encode("utf-8", "replace") for s in self._secrets)

    def text(self, s: str) -> str:
        for secret in self._secrets:
            if secret in s:
                s = s.replace(secret, REDACTED)
        return s

    def value(self, obj: Any) -> Any:
        """`obj` with the secrets cut out of every string in it (dicts, lists and tuples copied)."""
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, (bytes, bytearray)):
            for secret in self._bytes:
                obj = obj.replace(secret, REDACTED.encode())
            return obj
        if isinstance(obj, Mapping):
            return {self.value(k): self.value(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return type(obj)(self.value(v) for v in obj) if not hasattr(obj, "_fields") else obj
        return obj

    def headers(self, headers: Mapping[str, str] | httpx.Headers) -> dict[str, str]:
        items = headers.multi_items() if isinstance(headers, httpx.Headers) else list(headers.items())
        out: dict[str, str] = {}
        for name, value in items:
            key = str(name).lower()
            out[key] = REDACTED if key in CREDENTIAL_HEADERS else self.text(str(value))
        return out

    # --- exceptions ---------------------------------------------------------------------------

    def exception(self, exc: BaseException) -> BaseException:
        """Scrub `exc` and every exception it links to, in place; returns `exc`."""
        seen: set[int] = set()
        stack: list[BaseException] = [exc]
        while stack:
            e = stack.pop()
            if id(e) in seen:
                continue
            seen.add(id(e))
            self._scrub(e)
            for link in ("__cause__", "__context__"):
                nxt = getattr(e, link)
                if nxt is None:
                    continue
                self._scrub(nxt)
                if self.leaks(nxt):  # something this module does not know holds the key: drop it
                    setattr(e, link, None)
                    e.__suppress_context__ = True
                else:
                    stack.append(nxt)
            if isinstance(e, BaseExceptionGroup):
                stack.extend(e.exceptions)
        return exc

    def _scrub(self, e: BaseException) -> None:
        e.args = tuple(self.value(a) for a in e.args)
        for name, value in list(getattr(e, "__dict__", {}).items()):
            new = self._scrub_attr(value)
            if new is not value:
                with contextlib.suppress(AttributeError):  # a read-only attribute: the leak check decides
                    setattr(e, name, new)

    def _scrub_attr(self, value: Any) -> Any:
        if isinstance(value, httpx.Request):
            value.headers = httpx.Headers(self.headers(value.headers))
            if self._secrets and any(s in str(value.url) for s in self._secrets):
                value.url = httpx.URL(self.text(str(value.url)))
            return value
        if isinstance(value, httpx.Response):
            value.headers = httpx.Headers(self.headers(value.headers))
            if value._request is not None:  # `.request` raises when it is unset
                self._scrub_attr(value._request)
            return value
        if isinstance(value, httpx.Headers):
            return httpx.Headers(self.headers(value))
        if hasattr(value, "_fields") and "headers" in value._fields:  # aiohttp RequestInfo (a NamedTuple)
            return value._replace(headers=_multidict(self.headers(value.headers)))
        if _is_multidict(value):
            return _multidict(self.headers(value))
        if isinstance(value, (str, bytes, bytearray, Mapping, list, tuple)):
            new = self.value(value)
            return value if new == value else new
        return value

    def leaks(self, obj: Any) -> bool:
        """Whether a secret still shows in `obj`'s str / repr or in its attributes (bounded walk)."""
        if not self._secrets:
            return False
        return _walk(obj, self._secrets, self._bytes, _WALK_DEPTH, set())


def _walk(obj: Any, secrets: tuple[str, ...], raw: tuple[bytes, ...], depth: int, seen: set[int]) -> bool:
    if id(obj) in seen or depth < 0:
        return False
    if len(seen) >= _WALK_NODES:
        return True  # too much to check on an error path: drop the link rather than risk it
    seen.add(id(obj))
    if isinstance(obj, (bytes, bytearray, memoryview)):
        data = bytes(obj)
        return any(s in data for s in raw)
    try:
        texts = [str(obj), repr(obj)]
    except Exception:  # a broken __repr__ cannot show a key
        texts = []
    if any(s in t for t in texts for s in secrets):
        return True
    if isinstance(obj, (str, int, float, bool, type(None))):
        return False
    children: list[Any] = []
    if isinstance(obj, Mapping):
        children = [*obj.keys(), *obj.values()]
    elif isinstance(obj, (list, tuple, set, frozenset)):
        children = list(obj)
    if isinstance(obj, BaseException):
        children += list(obj.args)
    d = getattr(obj, "__dict__", None)
    if isinstance(d, dict):
        children += list(d.values())
    for slot in getattr(type(obj), "__slots__", ()):
        if isinstance(slot, str) and hasattr(obj, slot):
            children.append(getattr(obj, slot))
    return any(_walk(c, secrets, raw, depth - 1, seen) for c in children)


def _is_multidict(value: Any) -> bool:
    return type(value).__name__ in ("CIMultiDict", "CIMultiDictProxy", "MultiDict", "MultiDictProxy")


def _multidict(headers: dict[str, str]) -> Any:
    try:
        from multidict import CIMultiDict, CIMultiDictProxy
    except ImportError:  # pragma: no cover - only aiohttp hands us multidicts
        return headers
    return CIMultiDictProxy(CIMultiDict(headers))

"""The inspector's guard: security headers on every response, the Host check, the access token.

A model can write HTML and a tool can return it, so pages are served under a strict
Content-Security-Policy (scripts and styles only from the inspector's own static files, no
inline script, no eval), on top of escaping every value. The Host check stops DNS rebinding
(a web page whose domain points at 127.0.0.1 reading the journal); the token guards a
non-loopback bind. POST forms also carry a per-process CSRF token. A request body (a decision
form is a few hundred bytes) is cut off at MAX_BODY: any page can make a browser POST to
127.0.0.1, and a form is parsed whole in memory.
"""

from __future__ import annotations

import hmac
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs

__all__ = ["Guard", "CSP", "LOOPBACK", "WILDCARDS"]

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
]
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")
WILDCARDS = ("0.0.0.0", "::")  # binds that answer on every address of the machine
COOKIE = "agentloop_ui_token"
MAX_BODY = 64 * 1024  # bytes of a request body (a decision's override value included)


class BodyTooLarge(Exception):
    pass


class Guard:
    """ASGI middleware: Host allow-list, optional token (query `?token=`, cookie, or Bearer).

    `hosts=None` (a token on a wildcard bind only): any Host. A DNS-rebinding page is then
    another origin, which has neither the token nor its SameSite=Strict cookie."""

    def __init__(self, app: Any, *, hosts: set[str] | None, token: str | None) -> None:
        self.app = app
        self.hosts = hosts
        self.token = token

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", ())}
        host = headers.get("host", "")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if self.hosts is not None and name not in self.hosts:
            await _plain(
                send, 421, f"unexpected Host header {host!r}: open the inspector by the URL it printed"
            )
            return
        set_cookie = False
        if self.token is not None:
            given = _token_of(scope, headers)
            if given is None or not hmac.compare_digest(given.encode(), self.token.encode()):
                await _plain(send, 401, "this inspector needs its token: open the URL `agentloop ui` printed")
                return
            set_cookie = COOKIE not in _cookies(headers)

        async def secured(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                extra = list(HEADERS)
                if set_cookie:
                    extra.append(
                        (b"set-cookie", f"{COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/".encode())
                    )
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        length = headers.get("content-length") or "0"
        if not (length.isascii() and length.isdigit()) or int(length) > MAX_BODY:
            await _plain(send, 413, f"request body over {MAX_BODY} bytes: a decision is a short form")
            return
        seen = 0

        async def capped() -> dict[str, Any]:  # a chunked body has no length: count it as it comes
            nonlocal seen
            message: dict[str, Any] = await receive()
            seen += len(message.get("body", b""))
            if seen > MAX_BODY:
                raise BodyTooLarge(f"request body over {MAX_BODY} bytes")
            return message

        try:
            await self.app(scope, capped, secured)
        except BodyTooLarge as e:
            await _plain(send, 413, f"{e}: a decision is a short form")


def _cookies(headers: dict[str, str]) -> dict[str, str]:
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(headers.get("cookie", ""))
    except Exception:
        return {}
    return {k: v.value for k, v in jar.items()}


def _token_of(scope: dict[str, Any], headers: dict[str, str]) -> str | None:
    auth = headers.get("authorization", "")
    if auth.startswith("Bearer "):
        return auth[7:]
    cookie = _cookies(headers).get(COOKIE)
    if cookie:
        return cookie
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
    return values[0] if values else None


async def _plain(send: Any, status: int, text: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain; charset=utf-8"), *HEADERS],
        }
    )
    await send({"type": "http.response.body", "body": text.encode()})

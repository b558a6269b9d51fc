"""HTTP/1.1 response framing for the lean transport, without I/O: the head, the body's framing.

Only what a client of one JSON/SSE endpoint needs, and strict where leniency would be a hole:
a head is at most `MAX_HEAD_BYTES` (h11's default is 16 KiB, aiohttp's 8 KiB per line; a router's
head is well under 2 KiB), folded header lines, bad names and conflicting `Content-Length`s are
refused, `Transfer-Encoding` wins over `Content-Length` (RFC 9112 6.3) and such a connection is
not reused. Violations raise `httpx.RemoteProtocolError`, so the client maps them as it maps
httpx's own (a retryable `APIConnectionError`).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from typing import Protocol

import httpx

__all__ = [
    "CHUNKED",
    "MAX_HEAD_BYTES",
    "Dechunker",
    "UNTIL_CLOSE",
    "Head",
    "Response",
    "ResponseHead",
    "StreamIdle",
    "body_framing",
    "chunk_size",
    "encode_head",
    "parse_head",
]

MAX_HEAD_BYTES = 64 * 1024
MAX_HEADERS = 256
MAX_CHUNK_LINE = 4096  # a chunk-size line, extensions included
CHUNKED = -1  # body_framing(): chunked transfer coding
UNTIL_CLOSE = -2  # body_framing(): the body runs until the server closes the connection

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_STATUS = re.compile(rb"HTTP/1\.([01]) ([0-9]{3})(?: ([^\r\n]*))?")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
_NEXT = re.compile(rb"\r\n([0-9A-Fa-f]{1,16})\r\n")  # a chunk's end, the next chunk's plain size line


class ResponseHead(Protocol):
    """What the client reads of a response besides its body (httpx.Response has it too)."""

    @property
    def status_code(self) -> int: ...
    @property
    def reason_phrase(self) -> str: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def encoding(self) -> str | None: ...


class Response(ResponseHead, Protocol):
    """A response with its body still to read (`LeanResponse`, httpx.Response)."""

    def aiter_bytes(self) -> AsyncIterator[bytes]: ...
    async def aclose(self) -> None: ...


class StreamIdle(Exception):
    """A streamed body's idle deadline (`LeanResponse.idle_deadline`) passed while its read waited
    for bytes: not a fault of the connection; `bounded.pump` turns it into "the stream went idle"."""


class Head:
    """A parsed response head: status, reason, headers (lowercase names, repeats joined by ", " as
    httpx does) and the `Set-Cookie` values kept apart (they cannot be joined)."""

    __slots__ = ("cookies", "headers", "http10", "reason_phrase", "status_code")

    def __init__(
        self, status: int, reason: str, headers: dict[str, str], cookies: list[str], http10: bool = False
    ) -> None:
        self.status_code, self.reason_phrase, self.headers, self.cookies = status, reason, headers, cookies
        self.http10 = http10  # HTTP/1.0: the connection closes after the response unless it says keep-alive


def _bad(what: str) -> httpx.RemoteProtocolError:
    return httpx.RemoteProtocolError(f"malformed HTTP response from the server: {what}")


def parse_head(raw: bytes) -> Head:
    """`raw`: the bytes before the blank line that ends the head (line ends CRLF or LF)."""
    lines = raw.split(b"\n")
    m = _STATUS.fullmatch(lines[0].rstrip(b"\r"))
    if m is None:
        raise _bad(f"status line {lines[0][:100]!r}")
    if len(lines) > MAX_HEADERS + 1:
        raise _bad(f"more than {MAX_HEADERS} header lines")
    headers: dict[str, str] = {}
    cookies: list[str] = []
    for line in lines[1:]:
        name, colon, value = line.rstrip(b"\r").partition(b":")
        if not colon or _TOKEN.fullmatch(name) is None or b"\r" in value or b"\0" in value:
            raise _bad(f"header line {line[:100]!r}")  # also a folded line (it starts with a space)
        key = name.decode("ascii").lower()
        text = value.strip(b" \t").decode("latin-1")
        if key == "set-cookie":
            cookies.append(text)
        old = headers.get(key)
        headers[key] = text if old is None else f"{old}, {text}"
    return Head(int(m.group(2)), (m.group(3) or b"").decode("latin-1"), headers, cookies, m.group(1) == b"0")


def body_framing(head: Head) -> tuple[int, bool]:
    """(length in bytes, or CHUNKED / UNTIL_CLOSE; may the connection be reused afterwards)."""
    status, headers = head.status_code, head.headers
    connection = headers.get("connection", "").lower()
    keep = "keep-alive" in connection if head.http10 else "close" not in connection
    if status in (204, 304) or 100 <= status < 200:
        return 0, keep
    te = headers.get("transfer-encoding")
    if te is not None:
        if te.rsplit(",", 1)[-1].strip().lower() != "chunked":
            return UNTIL_CLOSE, False
        return CHUNKED, keep and "content-length" not in headers  # both: a smuggling shape, do not reuse
    cl = headers.get("content-length")
    if cl is None:
        return UNTIL_CLOSE, False
    values = {v.strip() for v in cl.split(",")}
    # isascii: the head is Latin-1 text, and str.isdigit() is True for '²', which int() refuses
    length = values.pop() if len(values) == 1 else ""
    if not (length.isascii() and length.isdigit()) or len(length) > 18:
        raise _bad(f"content-length {cl[:100]!r}")
    return int(length), keep


def chunk_size(line: bytes) -> int:
    """The size on a chunk-size line (extensions after `;` ignored)."""
    size = line.split(b";", 1)[0].strip(b" \t\r")
    if _HEX.fullmatch(size) is None:
        raise _bad(f"chunk size {line[:100]!r}")
    return int(size, 16)


def encode_head(method: str, target: str, headers: Mapping[str, str]) -> bytes:
    """The request head up to (not including) `Content-Length`, which is added per request.

    Header names and values were checked at construction (`config.check_headers`)."""
    lines = [f"{method} {target} HTTP/1.1"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\ncontent-length: ").encode("ascii")


class Dechunker:
    """Chunked transfer coding decoded from a buffer without I/O: `take(buf)` decodes every chunk
    (and the start of the last one) that `buf` holds, at once.

    Why not one chunk per call: a router writes one SSE event per chunk, so one network read holds
    ~20 of them; decoding them in one pass makes one piece of body per read, and everything above
    (the SSE parser, the idle clock, the hand-over to the consumer) runs once per read, not per event.
    The limits are those of a line-by-line reader: a chunk-size line at most `MAX_CHUNK_LINE`
    bytes, the trailers at most `MAX_HEAD_BYTES` in all, a chunk's data followed by its line end.
    """

    __slots__ = ("left", "state", "trailers")

    def __init__(self) -> None:
        self.state = _SIZE
        self.left = 0  # bytes of the current chunk's data not yet taken
        self.trailers = 0  # bytes of trailer lines so far

    @property
    def done(self) -> bool:
        return self.state == _DONE

    def take(self, buf: bytearray) -> bytes:
        """The body bytes `buf` holds (removed from it with their framing); b"" when none yet."""
        out: list[bytearray] = []
        pos, end = 0, len(buf)
        state, left = self.state, self.left
        match, append = _NEXT.match, out.append
        while pos < end and state != _DONE:
            if state == _DATA:
                while (stop := pos + left) <= end:  # whole chunks, back to back (the usual)
                    append(buf[pos:stop])
                    m = match(buf, stop)  # the chunk's end and the next size line, in one match
                    if m is None:
                        pos, left, state = stop, 0, _END
                        break
                    pos, left = m.end(), int(m.group(1), 16)
                    if not left:
                        state = _TRAILERS
                        break
                else:  # the buffer ends inside this chunk
                    append(buf[pos:end])
                    pos, left = end, stop - end
                    break
                continue
            nl = buf.find(b"\n", pos)
            limit = self._limit(state)
            if nl < 0:
                if end - pos > limit:
                    self._raise_long(state, limit)
                break
            if nl - pos > limit:
                self._raise_long(state, limit)
            line = bytes(buf[pos:nl]).rstrip(b"\r")
            pos = nl + 1
            if state == _SIZE:
                left = chunk_size(line)
                state = _DATA if left else _TRAILERS
            elif state == _END:
                if line:
                    raise _malformed("a chunk is longer than its size")
                state = _SIZE
            elif line:
                self.trailers += len(line) + 2
            else:
                state = _DONE
        del buf[:pos]
        self.state, self.left = state, left
        return bytes(out[0]) if len(out) == 1 else b"".join(out)

    def _limit(self, state: int) -> int:
        if state == _SIZE:
            return MAX_CHUNK_LINE
        return 2 if state == _END else MAX_HEAD_BYTES - self.trailers

    @staticmethod
    def _raise_long(state: int, limit: int) -> None:
        what = {_SIZE: "chunk size", _END: "chunk end"}.get(state, "trailers")
        raise _malformed(f"{what} line longer than {limit} bytes")

    def where(self) -> str:
        """Where in the body a connection closed early (for the error message)."""
        if self.state == _DATA:
            return "inside a chunk"
        return (
            "in the chunked body ("
            + {_SIZE: "chunk size", _END: "chunk end"}.get(self.state, "trailers")
            + ")"
        )


def _malformed(what: str) -> httpx.RemoteProtocolError:
    return httpx.RemoteProtocolError(f"malformed HTTP response: {what}")


_SIZE, _DATA, _END, _TRAILERS, _DONE = range(5)  # Dechunker's states: what the next bytes are

"""Bounded decoding of a compressed body for the httpx transports.

httpx decodes `Content-Encoding: gzip` / `deflate` one network chunk at a time with no bound on
what a chunk inflates to, and the aiohttp transport hands it the whole body as one chunk: a
255 KB gzip bomb grew the process by 132 MB (httpcore) and 261 MB (aiohttp) before
`max_response_bytes` could count a byte. `Inflating` reads the raw bytes instead and inflates
them in pieces of at most 64 KiB, so the budget stops the body within one piece of its limit
(as the lean transport does).
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Mapping

import httpx

__all__ = ["Inflating", "compressed", "inflated"]

_PIECE = 65536  # decoded bytes per step


def compressed(headers: Mapping[str, str]) -> str | None:
    """The body's content coding, or None when it is not compressed."""
    coding = headers.get("content-encoding")
    if coding is None:
        return None
    coding = coding.strip().lower()
    return None if coding in ("", "identity") else coding


class Inflating:
    """An `httpx.Response` whose `aiter_bytes()` inflates `aiter_raw()` in bounded pieces."""

    __slots__ = ("_coding", "_response")

    def __init__(self, response: httpx.Response, coding: str) -> None:
        self._response, self._coding = response, coding

    @property
    def status_code(self) -> int:
        return self._response.status_code

    @property
    def reason_phrase(self) -> str:
        return self._response.reason_phrase

    @property
    def headers(self) -> Mapping[str, str]:
        return self._response.headers

    @property
    def encoding(self) -> str | None:
        return self._response.encoding

    def aiter_bytes(self) -> AsyncIterator[bytes]:
        return inflated(self._response.aiter_raw(), self._coding)

    async def aclose(self) -> None:
        await self._response.aclose()


async def inflated(raw: AsyncIterator[bytes], coding: str) -> AsyncIterator[bytes]:
    """`raw` decoded from `coding` (gzip / deflate) in pieces of at most 64 KiB: what a bomb
    inflates to is produced piece by piece, so a byte budget downstream stops it in time."""
    if coding not in ("gzip", "x-gzip", "deflate"):
        raise httpx.DecodingError(f"unsupported content-encoding {coding[:50]!r}")
    inflate = zlib.decompressobj(zlib.MAX_WBITS | (16 if "gzip" in coding else 0))
    try:
        async for piece in raw:
            while piece:
                out = inflate.decompress(piece, _PIECE)
                piece = inflate.unconsumed_tail
                if out:
                    yield out
        if not inflate.eof:
            raise httpx.DecodingError("the compressed body ends early")
    except zlib.error as e:
        raise httpx.DecodingError(f"the body is not valid {coding}: {e}") from e

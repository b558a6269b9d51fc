"""A whole (not streamed) answer's body as JSON, on every wire: what is not JSON, too deep, or holds
a lone surrogate is a typed error saying which; `preview` shows a body in an error."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from .. import _json
from .._exceptions import APIResponseError
from .assembler import lone_surrogate, too_deep

__all__ = ["load_body", "preview"]

Slots = Callable[[Any], Iterator[tuple[dict[str, Any], str]]]


def load_body(
    content: bytes, request_id: str | None, status: int = 200, arguments: Slots | None = None
) -> Any:
    """A 2xx body (`status`, named in the errors) as JSON; not JSON at all is a typed error on
    every wire, never a crash.

    JSON holding a lone surrogate escape is an error naming it and where, unless every one is in
    a tool call's arguments sent as an object (`arguments`: where the wire puts those): they are
    then written back as JSON text with the escape kept, and the dispatcher refuses that call as
    `invalid_arguments` saying why, as it does for arguments sent as text. The model resends the
    call; its siblings and the run go on, whichever way the wire carried the arguments."""
    try:
        return _json.loads(content)
    except _json.SurrogateError as e:
        data = e.value
        for owner, key in arguments(data) if arguments is not None else ():
            if not isinstance(owner[key], str) and _json.lone_surrogate(owner[key]) is not None:
                owner[key] = json.dumps(owner[key])  # ASCII, the escape kept: the model sees what it sent
        where = _json.lone_surrogate(data)
        if where is None:
            return data
        raise APIResponseError(
            f"the endpoint answered {status} with {lone_surrogate(where)}",
            body=preview(content),
            request_id=request_id,
        ) from None
    except _json.DepthError as e:  # the codec's one depth limit, on every wire
        raise APIResponseError(
            f"the endpoint answered {status} with a body that is {too_deep(e)}; this is a router or proxy "
            "fault, retry later or report it with the request id",
            body=preview(content),
            request_id=request_id,
        ) from None
    except ValueError:
        raise APIResponseError(
            f"the endpoint answered {status} with a body that is not JSON{_what_instead(content)}; this "
            "is a router or proxy fault, retry later or report it with the request id",
            body=preview(content),
            request_id=request_id,
        ) from None


def _what_instead(content: bytes) -> str:
    """What a body that is not JSON is, when that is plain: empty (a 204 or 205, or a proxy that
    cut it), or a stream of server-sent events (a router that streamed unasked, or labelled its
    stream application/json). The bare "not JSON" sent readers looking for a syntax error."""
    head = bytes(content[:64]).lstrip()
    if not head:
        return " (it is empty)"
    if head.startswith((b"data:", b"event:", b"id:", b"retry:", b": ")):
        return " (it is a stream of server-sent events, where one JSON answer was expected)"
    return ""


def preview(data: Any, limit: int = 2000) -> str:
    if isinstance(data, bytes | bytearray):
        return bytes(data[:limit]).decode("utf-8", "replace")
    text = data if isinstance(data, str) else repr(data)
    return text[:limit]

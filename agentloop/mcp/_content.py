"""What comes back from an MCP server, as agentloop needs it: results as text for the model, the
`mcp` SDK's objects as their JSON wire form, errors described, and the HTTP transport owned."""

from __future__ import annotations

import json
from contextlib import AsyncExitStack
from typing import Any

__all__ = ["OwnedHTTP", "describe", "render_content", "wire_form"]


class OwnedHTTP:
    """The streamable-HTTP transport plus the HTTP client it uses, closed together (ours to close)."""

    def __init__(self, client: Any, transport: Any) -> None:
        self._client, self._transport = client, transport

    async def __aenter__(self) -> Any:
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(self._client)
            streams = await stack.enter_async_context(self._transport)
            self._stack = stack.pop_all()
        return streams

    async def __aexit__(self, *exc: Any) -> bool | None:
        return await self._stack.__aexit__(*exc)


def wire_form(model: Any) -> dict[str, Any]:
    """An `mcp` result object as its JSON wire form (camelCase keys, the protocol's own names)."""
    if isinstance(model, dict):
        return model
    data: dict[str, Any] = model.model_dump(mode="json", by_alias=True, exclude_none=True)
    return data


def describe(e: BaseException) -> str:
    error = getattr(e, "error", None)  # mcp's MCPError carries ErrorData
    message = getattr(error, "message", None) or str(e) or "no details"
    return f"{type(e).__name__}: {message}"


def render_content(content: Any, structured: Any = None) -> str:
    """MCP content blocks → one text for the model: text blocks joined, anything else described.

    Binary data (images, audio, blobs) is never pasted in: the model gets its kind and size.
    With no content blocks, the structured result is sent as JSON.
    """
    parts: list[str] = []
    for block in content or ():
        kind = block.get("type")
        if kind == "text":
            parts.append(block.get("text", ""))
        elif kind in ("image", "audio"):
            size = len(block.get("data", "")) * 3 // 4
            parts.append(f"[{kind}: {block.get('mimeType', 'unknown type')}, about {size} bytes, not shown]")
        elif kind == "resource":
            res = block.get("resource") or {}
            if "text" in res:
                parts.append(f"[resource {res.get('uri', '')}]\n{res['text']}")
            else:
                parts.append(f"[resource {res.get('uri', '')}: {res.get('mimeType', 'binary')}, not shown]")
        elif kind == "resource_link":
            label = block.get("name") or block.get("title") or ""
            parts.append(f"[resource link {label}: {block.get('uri', '')}]".replace("link :", "link:"))
        else:
            parts.append(f"[{kind or 'unknown'} content, not shown]")
    if not parts and structured is not None:
        return json.dumps(structured, ensure_ascii=False)
    return "\n".join(parts)

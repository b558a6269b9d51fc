"""How an MCP server's tools are named and checked before they are built: local names a model API
accepts, schemas jsonschema accepts, and errors that name the server and the tool."""

from __future__ import annotations

import re
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from agentloop import ToolDefinitionError

__all__ = ["checked_schema", "local_name", "suggest"]

_BAD_NAME_CHARS = re.compile(r"[^a-zA-Z0-9_-]")
_MAX_NAME = 64


def local_name(server: str, prefix: str, remote: str) -> str:
    """`prefix` + the server's tool name, with what a model API rejects replaced by `_`."""
    local = prefix + _BAD_NAME_CHARS.sub("_", remote)
    if not local or len(local) > _MAX_NAME:
        raise ToolDefinitionError(
            f"MCP server {server!r}, tool {remote!r}: the local name {local!r} is not 1-{_MAX_NAME} "
            "characters long. Use a shorter prefix, or leave the tool out with exclude=[...]."
        )
    return local


def checked_schema(server: str, remote: str, schema: Any) -> dict[str, Any]:
    """A server tool's `inputSchema`, if it is a valid JSON Schema object."""
    if not isinstance(schema, dict):
        raise ToolDefinitionError(
            f"MCP server {server!r}, tool {remote!r}: its inputSchema is not a JSON object ({schema!r}). "
            f"Fix the tool on the server, or leave it out with exclude=[{remote!r}]."
        )
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as e:
        raise ToolDefinitionError(
            f"MCP server {server!r}, tool {remote!r}: its inputSchema is not a valid JSON Schema "
            f"(at {e.json_path}: {e.message}). Fix the tool on the server, or leave it out with "
            f"exclude=[{remote!r}]."
        ) from None
    return schema


def suggest(name: str) -> str:
    stem = _BAD_NAME_CHARS.sub("_", name.split()[0].rsplit("/", 1)[-1]).strip("_")[:20] or "mcp"
    return f"{stem}_"

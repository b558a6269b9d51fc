"""What a tool's Python source says about its arguments: docstrings and type annotations."""

from __future__ import annotations

import contextlib
import sys
import types
import typing
from typing import Any

from .._exceptions import ToolDefinitionError

__all__ = ["lazy", "parse_doc", "type_hints"]


def lazy(module: str) -> Any:  # jsonschema, docstring_parser: ~35 ms of imports paid at registration
    return __import__(module)  # rather than by `import agentloop`


def parse_doc(doc: str | None) -> tuple[str, dict[str, str]]:
    """(description without the params section, {param: description}) for Google/NumPy/reST docstrings."""
    if not doc:
        return "", {}
    try:
        parsed = lazy("docstring_parser").parse(doc)
    except lazy("docstring_parser").ParseError:  # odd docstring: keep it whole rather than fail registration
        return doc.strip(), {}
    text = "\n\n".join(p for p in (parsed.short_description, parsed.long_description) if p)
    return text, {p.arg_name: p.description for p in parsed.params if p.description}


def _ours(frame: types.FrameType) -> bool:
    """A frame of this package (its locals are the schema builder's, not the tool author's)."""
    name = frame.f_globals.get("__name__", "")
    return isinstance(name, str) and (name == __package__ or name.startswith(f"{__package__}."))


def type_hints(obj: Any, what: str) -> dict[str, Any]:
    try:
        return typing.get_type_hints(obj, include_extras=True)
    except NameError:
        pass  # string annotation naming a local type (e.g. a class defined inside a test function)
    except Exception as e:
        raise ToolDefinitionError(f"Cannot evaluate the type annotations of {what}: {e}") from None
    # Fallback: closure cells, then locals of the calling frames (nearest first, skipping this package),
    # never shadowing the real globals, which get_type_hints would otherwise lose to localns.
    func = getattr(obj, "__func__", obj)
    globalns = getattr(func, "__globals__", None) or vars(sys.modules.get(obj.__module__, typing))
    localns: dict[str, Any] = {}
    code = getattr(func, "__code__", None)
    cells = getattr(func, "__closure__", None) or ()
    for var, cell in zip(code.co_freevars if code else (), cells, strict=True):  # one cell per free var
        with contextlib.suppress(ValueError):  # an empty cell
            localns[var] = cell.cell_contents
    frame: types.FrameType | None = sys._getframe(1)
    while frame is not None:
        if not _ours(frame):
            for k, v in frame.f_locals.items():
                if k not in globalns:
                    localns.setdefault(k, v)
        frame = frame.f_back
    try:
        return typing.get_type_hints(obj, localns=localns, include_extras=True)
    except Exception as e:
        raise ToolDefinitionError(
            f"Cannot resolve the type annotations of {what}: {e}. Define the types where the function can "
            "see them (module level), or pass an explicit parameters= schema."
        ) from None

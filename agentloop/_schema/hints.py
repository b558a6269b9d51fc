"""What a tool's Python source says about its arguments: docstrings and type annotations."""

from __future__ import annotations

import contextlib
import re
import sys
import types
import typing
from typing import Any

from .._exceptions import ToolDefinitionError

__all__ = ["lazy", "parse_doc", "type_hints"]


def lazy(module: str) -> Any:  # jsonschema, docstring_parser: ~35 ms of imports paid at registration
    return __import__(module)  # rather than by `import agentloop`


def parse_doc(doc: str | None) -> tuple[str, dict[str, str]]:
    """(description without the params section, {param: description}) for Google/NumPy/reST docstrings.

    The description is the docstring as written minus the sections docstring_parser reads as parameters
    (their text goes to the parameters' schema): `Returns:`, `Example:`, `Note:` and prose after `Args:`
    stay, in order, because docstring_parser's own description would drop them. It is never longer than
    the docstring.
    """
    if not doc:
        return "", {}
    dp = lazy("docstring_parser")
    try:
        parsed = dp.parse(doc)
    except dp.ParseError:  # odd docstring: keep it whole rather than fail registration
        return doc.strip(), {}
    params = {p.arg_name: p.description for p in parsed.params if p.description}
    if not parsed.params:  # nothing was read as a parameter: nothing to take out of the text
        return doc.strip(), params
    strip = _STRIPPERS.get(parsed.style.name, _strip_fields)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(strip(doc.strip().splitlines()))).strip(), params


# Section titles whose entries docstring_parser returns as parameters (google.py / numpydoc.py).
_GOOGLE_TITLES = frozenset({"Args", "Arguments", "Parameters", "Params", "Attributes"})
_NUMPY_TITLES = _GOOGLE_TITLES | {
    "Attribute", "Other Parameters", "Other Params", "Other Arguments", "Other Args", "Receives", "Receive"
}  # fmt: skip
_FIELD = re.compile(r"\s*[:@](?:param|parameter|arg|argument|attribute|key|keyword|type)\b[^:]*:")
_UNDERLINE = re.compile(r"\s*-{3,}\s*$")
_NUMPY_ITEM = re.compile(r"\*{0,2}\w+(?:\s*,\s*\*{0,2}\w+)*\s*(?::.*)?$")  # `x, y : float, optional`


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _strip_google(lines: list[str]) -> list[str]:
    """Drop `Args:`-like sections: the title and the lines indented under it."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        title = lines[i].strip()
        if title.endswith(":") and title[:-1].rstrip() in _GOOGLE_TITLES:
            ind, i = _indent(lines[i]), i + 1
            while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > ind):
                i += 1
            out.append("")  # the text either side stays a separate paragraph
            continue
        out.append(lines[i])
        i += 1
    return out


def _numpy_title(lines: list[str], i: int) -> bool:
    return bool(lines[i].strip()) and i + 1 < len(lines) and bool(_UNDERLINE.match(lines[i + 1]))


def _strip_numpy(lines: list[str]) -> list[str]:
    """Drop `Parameters` / `---` sections: up to the next titled section or an unindented non-item line."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        if not (_numpy_title(lines, i) and lines[i].strip() in _NUMPY_TITLES):
            out.append(lines[i])
            i += 1
            continue
        ind, i = _indent(lines[i]), i + 2
        while i < len(lines) and not _numpy_title(lines, i):
            line = lines[i]
            if line.strip() and _indent(line) <= ind and not _NUMPY_ITEM.match(line.strip()):
                break  # prose after the parameters
            i += 1
        out.append("")
    return out


def _strip_fields(lines: list[str]) -> list[str]:
    """Drop reST / epydoc `:param x:` and `:type x:` fields with their indented continuation lines."""
    out: list[str] = []
    ind = -1  # the indent of the field being dropped; -1: not in one
    for line in lines:
        if _FIELD.match(line):
            ind = _indent(line)
        elif ind >= 0 and line.strip() and _indent(line) > ind:
            pass  # continuation of the dropped field
        else:
            ind = -1
            out.append(line)
    return out


_STRIPPERS = {"GOOGLE": _strip_google, "NUMPYDOC": _strip_numpy}


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

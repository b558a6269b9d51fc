"""A model's tool-call arguments, checked within the run's `InputBudget` before a tool sees them.

Parsing, validation and conversion cost time in proportion to the arguments, and the model
decides how large they are. Three rules keep one hostile answer from costing the process more
than its own run:

- **Bounded input.** Arguments over `max_argument_bytes`, or nested deeper than
  `max_json_depth`, are refused before any schema work. Validation stops after
  `max_violations + 1` violations (jsonschema's errors are generated lazily; see `_validate.py`
  for the keywords that were not lazy).
- **Off the loop when large.** Arguments over `INLINE_BYTES` are parsed, validated and
  converted in a worker thread (`anyio.to_thread`, one at a time per run), so the event loop,
  and every other run on it, keeps going. Small ones, nearly all of them, stay inline: a thread
  hop would cost more than the check.
- **Bounded output.** Every error text fed back to the model is cut to `max_error_bytes` with a
  visible marker; names and values are echoed only in part.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import anyio
import anyio.to_thread

from .. import _json
from .._budget import InputBudget

if TYPE_CHECKING:
    from .tool import Tool

__all__ = [
    "ArgumentsError",
    "parse_arguments",
    "Checked",
    "Rejected",
    "INLINE_BYTES",
    "check_arguments",
    "clip",
    "truncate",
    "too_many_calls_text",
]

# Up to this size arguments are checked on the event loop: a flat 8 KiB object validates in well
# under a millisecond, and most arguments are a few hundred bytes.
INLINE_BYTES = 8 * 1024
_LINE_CHARS = 300  # one listed violation, at most


class Checked(NamedTuple):
    arguments: dict[str, Any]  # as parsed: what the record, events and journal show
    kwargs: dict[str, Any] | None  # converted for the function; None for the process modes (the child binds)


class Rejected(NamedTuple):
    status: str
    content: str  # the tool message, already within max_error_bytes
    error: str


class ArgumentsError(ValueError):
    """The arguments of one call cannot be used; the message is written for the model."""


def parse_arguments(raw: Any, max_depth: int = _json.MAX_DEPTH) -> dict[str, Any]:
    """Parse a tool call's `arguments` leniently (see wire-notes: `""`, `null`, missing → `{}`).

    Providers normally send a JSON string; some send an already-parsed object; some models send
    the object's JSON text encoded twice (a JSON string of it): one level is unwrapped
    (`_json.object_in_text`). Nesting deeper than `max_depth` is refused
    (`InputBudget.max_json_depth` in a run).
    """
    if raw is None or raw == "":
        return {}
    if isinstance(raw, str):
        try:
            value = _json.loads_exact(raw, max_depth=max_depth)  # an int argument must not arrive rounded
            value = _json.object_in_text(value, max_depth=max_depth, exact=True)
        except _json.DepthError as e:
            raise ArgumentsError(f"{e}. Send flatter arguments.") from None
        except _json.SurrogateError as e:  # valid JSON, but that text is not a character
            raise ArgumentsError(
                f"The arguments hold {e.problem}: half of a UTF-16 pair, not a character, so the text "
                "cannot be used. Write the text as characters (or both halves of the pair)."
            ) from None
        except ValueError as e:
            raise ArgumentsError(
                f"The arguments are not valid JSON ({e}). Send the arguments as one JSON object "
                "that matches the tool's parameters schema."
            ) from None
    else:
        value = raw
        if _json.depth_exceeds(value, max_depth):
            raise ArgumentsError(
                f"the JSON is nested deeper than {max_depth} levels. Send flatter arguments."
            )
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ArgumentsError(
            f"The arguments must be a JSON object, got {type(value).__name__ if not isinstance(value, list) else 'an array'}. "
            "Send the arguments as one JSON object that matches the tool's parameters schema."
        )
    return value


def clip(text: str, limit: int) -> str:
    """`text` as an error message may echo it: at most `limit` characters, with a marker when cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…[{len(text)} characters, cut]"


def truncate(text: str, max_bytes: int) -> str:
    """`text` cut to at most `max_bytes` UTF-8 bytes, the cut marked so the reader knows."""
    if len(text) * 4 <= max_bytes:  # cheap: UTF-8 is at most 4 bytes a character
        return text
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= max_bytes:
        return text
    marker = f"\n[error text truncated: {len(data)} bytes, limit {max_bytes}]"
    keep = max_bytes - len(marker.encode())
    if keep <= 0:  # a budget smaller than the marker: the marker alone, cut
        return marker.encode()[:max_bytes].decode("utf-8", "ignore")
    return data[:keep].decode("utf-8", "ignore") + marker


def _size(raw: str, limit: int) -> int | None:
    """The UTF-8 size of `raw` when it is over `limit`, else None (without encoding when possible)."""
    if len(raw) * 4 <= limit:
        return None
    if len(raw) > limit:
        return len(raw)  # at least this many bytes
    n = len(raw.encode("utf-8", "surrogatepass"))
    return n if n > limit else None


def raw_text(raw: Any) -> str | None:
    """The arguments as text (what the size budget counts); None when they are not JSON at all."""
    if raw is None or isinstance(raw, str):
        return raw or ""
    try:
        return _json.dumps_str(raw)
    except (TypeError, ValueError):
        return None


def check_arguments(tool: Tool, raw: Any, budget: InputBudget, bind: bool) -> Checked | Rejected:
    """Parse, bound, validate and (with `bind`) convert one call's arguments. Synchronous: the
    caller decides whether it runs on the loop or in a thread."""
    name = tool.name
    text = raw_text(raw)
    if text is None:
        return Rejected(
            "invalid_arguments", f"Invalid arguments for tool {name!r}: they are not JSON.", "invalid JSON"
        )
    over = _size(text, budget.max_argument_bytes)
    if over is not None:
        return Rejected(
            "invalid_arguments",
            f"Invalid arguments for tool {name!r}: the arguments are {over} bytes, more than the limit of "
            f"{budget.max_argument_bytes} bytes. Send smaller arguments (e.g. split the work into several calls).",
            "arguments too large",
        )
    try:
        args = parse_arguments(text, max_depth=budget.max_json_depth)
    except ArgumentsError as e:
        # The conversation carries "{}" in this call's place (valid for every provider), so the
        # model is shown what it sent: it cannot fix what it cannot see.
        return Rejected(
            "invalid_arguments",
            f"Invalid arguments for tool {name!r}: {e} You sent: {clip(text, _LINE_CHARS)}",
            "invalid JSON",
        )
    try:
        problems = tool.validation_errors(args, limit=budget.max_violations + 1)
    except RecursionError:  # a $ref cycle that consumes no input ({"$ref": "#/$defs/a"} -> a -> b -> a)
        return Rejected(
            "invalid_arguments",
            f"Tool {name!r} cannot be called: its parameters schema refers to itself without end "
            "(a $ref cycle), so no arguments can be checked. Do not call it again.",
            "schema recursion",
        )
    if problems:
        return Rejected("invalid_arguments", violations_text(name, problems, budget), "schema violation")
    if not bind:
        return Checked(args, None)
    try:
        return Checked(args, tool.bind(args))
    except (TypeError, ValueError) as e:  # e.g. a string with a "format" the schema cannot check
        why = str(e)
    except Exception as e:  # a pydantic validator's or a dataclass __post_init__'s own error, on
        why = f"{type(e).__name__}: {e}"  # the model's values (it escaped Agent.run: the run lost)
    return Rejected(
        "invalid_arguments", f"Invalid arguments for tool {name!r}: {clip(why, _LINE_CHARS)}", "conversion"
    )


def violations_text(name: str, problems: list[str], budget: InputBudget) -> str:
    shown = problems[: budget.max_violations]
    if len(problems) > len(shown):
        head = f"more than {len(shown)} schema violations; the first {len(shown)}:"
    else:
        head = f"{len(shown)} schema violation{'s' if len(shown) > 1 else ''}:"
    listed = "\n".join(f"- {clip(p, _LINE_CHARS)}" for p in shown)
    return (
        f"Invalid arguments for tool {name!r}: {head}\n{listed}\nFix the arguments to match the tool's "
        "parameters schema and call it again."
    )


async def checked_arguments(
    tool: Tool, raw: Any, budget: InputBudget, bind: bool, limiter: Callable[[], anyio.CapacityLimiter]
) -> Checked | Rejected:
    """`check_arguments`, in a worker thread when the arguments are large (see the module docs)."""
    size = len(raw) if isinstance(raw, str) else (0 if raw is None else INLINE_BYTES + 1)
    if size <= INLINE_BYTES:
        return check_arguments(tool, raw, budget, bind)
    # abandon_on_cancel: a deadline cancels the run at once; the thread finishes its bounded work.
    return await anyio.to_thread.run_sync(
        check_arguments, tool, raw, budget, bind, limiter=limiter(), abandon_on_cancel=True
    )


def too_many_calls_text(count: int, budget: InputBudget) -> str:
    return (
        f"Not run: the message has {count} tool calls, more than the limit of {budget.max_tool_calls} "
        f"per message; only the first {budget.max_tool_calls} were considered. Call fewer tools at once."
    )

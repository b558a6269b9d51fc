"""Structured output: `Agent(output_type=T)` makes `result.output` a validated `T`.

`T` is a dataclass, a TypedDict, a pydantic model (when pydantic is installed; agentloop does
not depend on it), `list[...]` or any type tools accept, a union of them, a union with `str`
(text fallback), or an explicit JSON schema (`JsonSchema({...})` or a plain dict), whose
output is the validated JSON value.

Two mechanisms, one loop:

- "tool": a final-answer tool `final_result` whose parameters are the output schema. Works on
  every tool-capable model and on the Anthropic wire. Without a text fallback the tool choice is
  "required", so the model answers by calling it. A valid call ends the run; the other calls of
  that message are not run (they get a "not run" result, so the conversation stays valid).
- "native": the OpenAI wire's `response_format: json_schema`; the answer text is the JSON.

"auto" (the default) picks "native" on the OpenAI wire when the agent has no tools and no
text fallback, "tool" otherwise; when the route refuses the response format (a 400 naming it),
the run repeats the step through the tool (`native_refused` in `output_step.py`). An invalid answer is fed back to the model with the JSON paths
of its errors and retried; after `output_retries` failed answers the run raises
`OutputValidationError`, which carries the last answer and the partial result.

Schemas are wrapped as `{"response": ...}` when the type is not an object (a list, a union):
both mechanisms need an object at the root.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from collections.abc import Mapping
from itertools import islice
from typing import Any, Literal, Union

import anyio.to_thread

from .. import _json
from .._budget import InputBudget
from .._exceptions import ConfigurationError, ResumeError, ToolDefinitionError
from .._json import jsonable  # re-exported: the output-side name of the one JSON-data form
from .._schema import Unsupported, build  # one type -> schema mapping for tools and outputs
from .._tools.arguments import INLINE_BYTES, clip, truncate
from .._tools.validate import build_validator, precise

__all__ = ["TOOL_NAME", "JsonSchema", "OutputInvalid", "OutputMode", "OutputSpec", "jsonable"]

OutputMode = Literal["auto", "tool", "native"]
TOOL_NAME = "final_result"
_MODES = ("auto", "tool", "native")
_LINE = 300  # characters of one listed error, at most (as for tool arguments)


@dataclasses.dataclass(frozen=True)
class JsonSchema:
    """An explicit JSON schema as an output type; `result.output` is the validated JSON value."""

    schema: dict[str, Any]
    name: str = "output"
    description: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class StoredOutput:
    """Internal: a structured output read back from the journal, as JSON data, until validated."""

    data: Any


class OutputInvalid(Exception):
    """Internal: one answer failed validation; `errors` are `"<json path>: <message>"` lines."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


_SCHEMA_DEPTH = _json.MAX_DEPTH - 10  # room for the request around it, as for a tool's schema


def _sendable(schema: dict[str, Any], name: str) -> dict[str, Any]:
    """The schema and name go out with every request, and jsonschema recurses: a schema nested
    5,000 deep raised a raw RecursionError here, one holding a lone surrogate a raw TypeError at
    the first request (as a tool's schema is checked at registration)."""
    if _json.depth_exceeds(schema, _SCHEMA_DEPTH):
        raise ConfigurationError(
            f"output_type: the schema is nested deeper than {_SCHEMA_DEPTH} levels; flatten it "
            "(use $defs and $ref for repeated parts)"
        )
    try:
        copied: dict[str, Any] = _json.loads(_json.dumps(schema))
    except (TypeError, ValueError) as e:
        raise ConfigurationError(
            f"output_type: the schema cannot be sent as JSON ({e}); use str keys, JSON values and valid Unicode"
        ) from None
    if problem := _json.not_unicode("output_type's name", name):
        raise ConfigurationError(problem)
    return copied


class OutputSpec:
    """What a run must answer with, and how the answer is asked for, checked and converted."""

    __slots__ = (
        "allows_text",
        "auto",
        "convert",
        "definition",
        "mode",
        "name",
        "response_format",
        "schema",
        "type",
        "validator",
        "wrapped",
    )  # fmt: skip

    def __init__(self, output_type: Any, mode: OutputMode, *, wire: str | None, has_tools: bool) -> None:
        if mode not in _MODES:
            raise ConfigurationError(f"output_mode must be one of {', '.join(_MODES)}, got {mode!r}")
        self.type = output_type
        members = _union_members(output_type)
        self.allows_text = str in members
        structured = [m for m in members if m is not str]
        if not structured:
            raise ConfigurationError(
                "output_type=str is the default; pass a structured type, or leave it out"
            )
        self.name = "output"
        schema, self.convert = self._schema(structured)
        self.wrapped = schema.get("type") != "object"
        if self.wrapped:
            schema = {"type": "object", "properties": {"response": schema}, "required": ["response"],
                      "additionalProperties": False}  # fmt: skip
        from jsonschema import Draft202012Validator
        from jsonschema.exceptions import SchemaError

        schema = _sendable(schema, self.name)
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as e:
            raise ConfigurationError(
                f"output_type: not a valid JSON schema at {e.json_path}: {e.message}"
            ) from None
        self.schema = schema
        try:  # the bounded validator tools use: RE2 patterns, lazy errors (see _validate.py)
            self.validator = build_validator(schema, TOOL_NAME)
        except ToolDefinitionError as e:
            raise ConfigurationError(f"output_type: {e}") from None
        self.auto = mode == "auto"  # chosen here: a route that refuses "native" falls back to the tool
        if mode == "auto":
            mode = "native" if wire == "openai" and not has_tools and not self.allows_text else "tool"
        if mode == "native" and wire == "anthropic":
            raise ConfigurationError(
                "output_mode='native' needs the OpenAI wire's response_format; the Anthropic wire has none. "
                "Use output_mode='tool' or 'auto' (which picks the final_result tool there)."
            )
        if mode == "native" and self.allows_text:
            raise ConfigurationError(
                "output_mode='native' cannot express a text fallback (str in the output type); use "
                "output_mode='tool' or 'auto'"
            )
        self.mode = mode
        description = "Give the final answer. Call this once, when the answer is complete."
        self.definition = {"type": "function", "function": {"name": TOOL_NAME, "description": description,
                                                             "parameters": schema}}  # fmt: skip
        self.response_format = {"type": "json_schema", "json_schema": {"name": self.name, "schema": schema}}

    def _schema(self, structured: list[Any]) -> tuple[dict[str, Any], Any]:
        if len(structured) == 1:
            only = structured[0]
            if isinstance(only, JsonSchema):
                self.name = only.name
                return dict(only.schema), None
            if isinstance(only, Mapping):
                return dict(only), None
            pyd = _pydantic_schema(only)
            if pyd is not None:
                self.name = only.__name__
                return pyd
            self.name = getattr(only, "__name__", "output")
            tp: Any = only
        else:
            tp = Union[tuple(structured)]  # noqa: UP007 - a union built at run time from a list
        try:
            return build(tp, ())
        except Unsupported as e:
            raise ConfigurationError(
                f"output_type {tp!r} cannot be turned into a JSON schema: {e.why}. Use a dataclass, "
                "TypedDict, pydantic model, list/dict of those, a union, or JsonSchema({...})."
            ) from None

    def as_tool(self) -> OutputSpec:
        """The same output asked for through the final_result tool (a copy: the agent's stays as it is)."""
        twin = copy.copy(self)
        twin.mode = "tool"
        return twin

    # --- checking answers -------------------------------------------------------------------

    def parse(self, raw: Any, budget: InputBudget | None = None) -> Any:
        """A JSON text (tool arguments or native answer) or already-decoded value → the output.

        The answer comes from the model: it is held to `budget` like tool arguments (size and
        depth before parsing, at most `max_violations + 1` errors, each line cut)."""
        budget = budget or InputBudget()
        if isinstance(raw, str):
            size = (
                len(raw.encode("utf-8", "surrogatepass")) if len(raw) * 4 > budget.max_argument_bytes else 0
            )
            if size > budget.max_argument_bytes:
                raise OutputInvalid([
                    f"$: the answer is {size} bytes, more than the limit of {budget.max_argument_bytes} "
                    "bytes (InputBudget.max_argument_bytes); give a shorter answer"
                ])  # fmt: skip
            try:
                value = _json.loads(raw, max_depth=budget.max_json_depth) if raw.strip() else None
            except ValueError as e:
                raise OutputInvalid([f"$: the answer is not valid JSON ({clip(str(e), _LINE)})"]) from None
        else:
            value = raw
        return self.validate(value, budget)

    async def parse_async(self, raw: Any, budget: InputBudget) -> Any:
        """`parse`, in a worker thread when the answer is large, so the event loop keeps going."""
        if not isinstance(raw, str) or len(raw) <= INLINE_BYTES:
            return self.parse(raw, budget)
        return await anyio.to_thread.run_sync(self.parse, raw, budget, abandon_on_cancel=True)

    def validate(self, value: Any, budget: InputBudget | None = None) -> Any:
        if not self.validator.is_valid(value):
            limit = (budget or InputBudget()).max_violations + 1
            found = map(precise, islice(self.validator.iter_errors(value), limit))
            errors = sorted(found, key=lambda e: [(isinstance(p, str), p) for p in e.absolute_path])
            raise OutputInvalid(
                [clip(f"{_path(e.json_path, self.wrapped)}: {e.message}", _LINE) for e in errors]
            )
        if self.wrapped:
            value = value["response"]
        if self.convert is None:
            return value
        try:
            return self.convert(value)
        except Exception as e:
            raise OutputInvalid([clip(f"$: {type(e).__name__}: {e}", _LINE)]) from None

    def restore(self, stored: Any) -> Any:
        """A journaled output → the output again: its data validated again; text stays text when
        text is allowed, else it is a native answer's JSON text (journaled before its "end")."""
        if isinstance(stored, str) and self.allows_text:
            return stored
        try:
            if not isinstance(stored, StoredOutput):
                return self.parse(stored)
            return self.validate({"response": stored.data} if self.wrapped else stored.data)
        except OutputInvalid as e:
            raise ResumeError(
                f"the journaled output of this run no longer validates against output_type ({e}); was "
                "output_type changed since the run finished? Resume it with the agent that ran it."
            ) from None

    def feedback(self, errors: list[str], budget: InputBudget | None = None) -> str:
        budget = budget or InputBudget()
        shown = errors[: budget.max_violations]
        more = f" (more than {len(shown)}; the first {len(shown)})" if len(errors) > len(shown) else ""
        listed = "\n".join(f"- {e}" for e in shown)
        how = f"Call {TOOL_NAME} again" if self.mode == "tool" else "Answer again with only the JSON"
        text = f"The final answer does not match the required schema{more}:\n{listed}\n{how} with the errors fixed."
        return truncate(text, budget.max_error_bytes)

    def text_refused(self) -> str:
        return (
            f"Plain text is not a final answer here: give the final answer by calling the {TOOL_NAME} tool."
        )


def _path(json_path: str, wrapped: bool) -> str:
    if wrapped and json_path.startswith("$.response"):
        return "$" + json_path[len("$.response") :]
    return json_path


def _union_members(tp: Any) -> list[Any]:
    origin = typing.get_origin(tp)
    if origin is Union or origin is types.UnionType:
        return list(typing.get_args(tp))
    return [tp]


def _pydantic_schema(tp: Any) -> tuple[dict[str, Any], Any] | None:
    """(schema, converter) for a pydantic model class; None when pydantic is absent or it is not one."""
    if not isinstance(tp, type) or not any(c.__module__.startswith("pydantic") for c in tp.__mro__[1:]):
        return None
    validate = getattr(tp, "model_validate", None)
    schema = getattr(tp, "model_json_schema", None)
    if validate is None or schema is None:
        return None
    return schema(), validate

"""The validator for tool arguments: jsonschema Draft 2020-12, with bounded work on hostile input.

Two changes from the stock `Draft202012Validator`, both because the instance comes from a model:

- **Regular expressions run on RE2** (google-re2, linear time). Python's `re` backtracks:
  `^(a+)+$` against 28 characters took 59 s. `pattern`, `patternProperties` and
  `additionalProperties` (which consults `patternProperties`) use patterns compiled once, at
  registration; a pattern RE2 cannot compile (lookarounds, backreferences) is a
  `ToolDefinitionError` there. Without google-re2 (a platform with no wheel) a schema with a
  pattern is refused at registration rather than checked in exponential time, except
  agentloop's own patterns (`bytes`, `Decimal` parameters): `leaves.OWN_PATTERNS` holds a
  Python `re` regex for each that matches the same texts in linear time.
- **`anyOf` / `oneOf` stop at each branch's first error.** The stock keywords collect every
  error of every branch (`list(...)`), so `xs: list[int] | None` fed 100,000 strings built
  100,000 error objects even for a yes/no `is_valid`. Here a branch is tried until its first
  error, and at most `_CONTEXT` errors are kept as the context of the failure.

Messages that quote the instance quote it through `reprlib` (bounded), never whole.
"""

from __future__ import annotations

import reprlib
from collections.abc import Callable, Iterator
from functools import cache
from itertools import islice
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jsonschema.exceptions import ValidationError

from .._exceptions import ToolDefinitionError
from .._schema.leaves import OWN_PATTERNS

__all__ = ["build_validator", "collect_patterns", "precise", "short_repr"]

_CONTEXT = 3  # branch errors kept as the context of an anyOf / oneOf failure
_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 80
_repr.maxlist = _repr.maxdict = _repr.maxtuple = _repr.maxset = 6
_repr.maxlevel = 3


def short_repr(value: Any) -> str:
    """`repr` cut to a few lines whatever the size of `value` (cost bounded too)."""
    return _repr.repr(value)


def precise(error: ValidationError) -> ValidationError:
    """The error the model can act on. An `anyOf` failure whose branches all but one fail on the
    instance's type (`X | None`, `list[X] | None`, `Model | None`) is that one branch's error:
    `$.a.zip: 'x' is not of type 'integer'`, not `$.a: {...} is not valid under any of the given
    schemas`, which named no field to fix. Ambiguous failures (`int | str` given 1.5) stay as they are."""
    while error.context:
        meant = [e for e in error.context if not (e.validator == "type" and not e.relative_path)]
        if len(meant) != 1:
            break
        error = meant[0]
    return error


def _first_errors(validator: Any, instance: Any, subschema: Any, index: int) -> list[ValidationError]:
    return list(islice(validator.descend(instance, subschema, schema_path=index), 1))


def _any_of(validator: Any, any_of: list[Any], instance: Any, schema: Any) -> Iterator[ValidationError]:
    context: list[ValidationError] = []
    for index, subschema in enumerate(any_of):
        errs = _first_errors(validator, instance, subschema, index)
        if not errs:
            return
        context.extend(errs)
    from jsonschema.exceptions import ValidationError

    yield ValidationError(
        f"{short_repr(instance)} is not valid under any of the given schemas", context=context[:_CONTEXT]
    )


def _one_of(validator: Any, one_of: list[Any], instance: Any, schema: Any) -> Iterator[ValidationError]:
    context: list[ValidationError] = []
    valid: list[int] = []
    for index, subschema in enumerate(one_of):
        errs = _first_errors(validator, instance, subschema, index)
        if errs:
            context.extend(errs)
        else:
            valid.append(index)
            if len(valid) > 1:
                break
    if not valid:
        from jsonschema.exceptions import ValidationError

        yield ValidationError(
            f"{short_repr(instance)} is not valid under any of the given schemas", context=context[:_CONTEXT]
        )
    elif len(valid) > 1:
        from jsonschema.exceptions import ValidationError

        yield ValidationError(
            f"{short_repr(instance)} is valid under more than one of the given schemas "
            f"(oneOf branches {valid[0]} and {valid[1]})"
        )


@cache
def _bounded() -> Any:
    from jsonschema import Draft202012Validator, validators

    return validators.extend(Draft202012Validator, {"anyOf": _any_of, "oneOf": _one_of})


def build_validator(schema: dict[str, Any], tool_name: str, patterns: dict[str, Any] | None = None) -> Any:
    """The validator for `schema`, built once at registration. Raises `ToolDefinitionError`.
    `patterns`: `collect_patterns(schema, tool_name)` when the caller has it already."""
    if patterns is None:
        patterns = collect_patterns(schema, tool_name)
    if not patterns:
        return _bounded()(schema)
    return _with_patterns(patterns)(schema)


def _with_patterns(compiled: dict[str, Any]) -> Any:
    """A validator class whose regex keywords use this schema's RE2 patterns."""

    def search(pattern: str, text: str) -> bool:
        regex = compiled.get(pattern)
        if regex is None:  # a pattern the registration walk did not see ($ref to elsewhere)
            regex = compiled[pattern] = _compile(pattern, None)
        return regex.search(text) is not None

    def pattern(validator: Any, patrn: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
        if validator.is_type(instance, "string") and not search(patrn, instance):
            from jsonschema.exceptions import ValidationError

            yield ValidationError(f"{short_repr(instance)} does not match {patrn!r}")

    def pattern_properties(
        validator: Any, pp: dict[str, Any], instance: Any, schema: Any
    ) -> Iterator[ValidationError]:
        if not validator.is_type(instance, "object"):
            return
        for patrn, subschema in pp.items():
            for k, v in instance.items():
                if search(patrn, k):
                    yield from validator.descend(v, subschema, path=k, schema_path=patrn)

    def additional_properties(
        validator: Any, ap: Any, instance: Any, schema: Any
    ) -> Iterator[ValidationError]:
        if not validator.is_type(instance, "object"):
            return
        props = schema.get("properties", {})
        pats = list(schema.get("patternProperties", {}))
        extras = [k for k in instance if k not in props and not any(search(p, k) for p in pats)]
        if validator.is_type(ap, "object"):
            for extra in extras:
                yield from validator.descend(instance[extra], ap, path=extra)
        elif not ap and extras:
            shown = ", ".join(short_repr(k) for k in sorted(extras)[:_CONTEXT])
            more = f" and {len(extras) - _CONTEXT} more" if len(extras) > _CONTEXT else ""
            from jsonschema.exceptions import ValidationError

            yield ValidationError(f"Additional properties are not allowed ({shown}{more} unexpected)")

    keywords: dict[str, Callable[..., Any]] = {
        "pattern": pattern,
        "patternProperties": pattern_properties,
        "additionalProperties": additional_properties,
    }
    from jsonschema import validators

    return validators.extend(_bounded(), keywords)


_DATA_KEYS = frozenset({"const", "enum", "default", "examples"})  # values are data, not schemas
_MAP_KEYS = frozenset({"properties", "$defs", "definitions", "dependentSchemas"})  # {name: schema}


def collect_patterns(schema: Any, tool_name: str) -> dict[str, Any]:
    """Every regex of `schema`, compiled with RE2 (no recursion: schemas can be deep). The fast
    check searches with the same objects (`compile_fast_check(schema, patterns)`)."""
    found: dict[str, Any] = {}
    uses_unevaluated = False
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        for key, value in node.items():
            if key in _DATA_KEYS:
                continue
            if key == "pattern" and isinstance(value, str):
                found[value] = _compile(value, tool_name)
            elif key == "patternProperties" and isinstance(value, dict):
                for p in value:
                    found[p] = _compile(p, tool_name)
                stack.extend(value.values())
            elif key in _MAP_KEYS and isinstance(value, dict):
                stack.extend(value.values())
            else:
                uses_unevaluated = uses_unevaluated or key == "unevaluatedProperties"
                stack.append(value)
    if found and uses_unevaluated:
        # jsonschema evaluates patternProperties for unevaluatedProperties with Python's `re`,
        # in code this module cannot reach: refuse rather than let a backtracking regex run.
        raise ToolDefinitionError(
            f"tool {tool_name!r}: a schema that combines regular expressions (pattern / "
            "patternProperties) with unevaluatedProperties cannot be checked in linear time; "
            "use additionalProperties instead of unevaluatedProperties"
        )
    return found


def _compile(pattern: str, tool_name: str | None) -> Any:
    where = f"tool {tool_name!r}: " if tool_name else ""
    try:
        import re2 as _re2
    except ImportError:
        _re2 = None
    if _re2 is None:
        own = OWN_PATTERNS.get(pattern)
        if own is not None:  # bytes, Decimal: the most ordinary signatures must register
            return own
        raise ToolDefinitionError(
            f"{where}the schema uses the regular expression {pattern!r}, and google-re2 (the "
            "linear-time engine agentloop checks patterns with) is not installed; install it "
            "(pip install google-re2) or remove the pattern from the schema"
        )
    options = _re2.Options()
    options.log_errors = False
    try:
        return _re2.compile(pattern, options)
    except Exception as e:  # re2.error: the message says which construct
        raise ToolDefinitionError(
            f"{where}the regular expression {pattern!r} cannot be compiled by RE2, the linear-time "
            f"engine agentloop checks patterns with ({e}); rewrite it without lookarounds or "
            "backreferences"
        ) from None

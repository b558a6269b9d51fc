"""A cheap, conservative "could this JSON value match this schema?", to pick a union's member.

`int | Node`, where `Node` is recursive, used to be decided by validating the whole value against
each member, at every level of the tree: a hostile 440 KB argument ten levels deep took 20 s
(the size times the depth). The value has already passed the tool's whole schema when a union
converts it, so the member is usually clear from the top of the value alone: its JSON type, and
for an object its keys. `may_match` answers False only when the member certainly does not match;
the union validates in depth only among the members still possible (rare: two members of the
same shape).
"""

from __future__ import annotations

from typing import Any

__all__ = ["may_match"]

_JSON_TYPES = {
    "null": lambda v: v is None,
    "boolean": lambda v: type(v) is bool,
    "integer": lambda v: type(v) is int or (type(v) is float and v.is_integer()),
    "number": lambda v: type(v) in (int, float),
    "string": lambda v: type(v) is str,
    "array": lambda v: type(v) is list,
    "object": lambda v: type(v) is dict,
}


def may_match(schema: Any, defs: dict[str, Any], v: Any, hops: int = 0) -> bool:
    """False only when `v` certainly does not match `schema` (whose `$ref`s point into `defs`)."""
    if not isinstance(schema, dict) or hops > 8:  # a chain of refs: give up, the caller validates
        return True
    ref = schema.get("$ref")
    target = defs.get(ref[len("#/$defs/") :]) if isinstance(ref, str) and ref.startswith("#/$defs/") else None
    if target is not None and not may_match(target, defs, v, hops + 1):
        return False
    kind = schema.get("type")
    kinds = [kind] if isinstance(kind, str) else kind if isinstance(kind, list) else None
    if kinds is not None and not any(_JSON_TYPES.get(k, lambda _: True)(v) for k in kinds):
        return False
    subs = schema.get("anyOf")
    if isinstance(subs, list) and not any(may_match(s, defs, v, hops + 1) for s in subs):
        return False
    if type(v) is dict:
        return _keys_fit(schema, v)
    most = schema.get("maxItems")
    if type(v) is list and isinstance(most, int):
        return bool(schema.get("minItems", 0) <= len(v) <= most)
    return True


def _keys_fit(schema: dict[str, Any], v: dict[str, Any]) -> bool:
    required = schema.get("required")
    if isinstance(required, list) and not all(k in v for k in required):
        return False
    props = schema.get("properties")
    if schema.get("additionalProperties") is False and isinstance(props, dict):
        return all(k in props for k in v)
    return True

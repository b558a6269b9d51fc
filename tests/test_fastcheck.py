"""The fast acceptance check never accepts what jsonschema rejects (property-based)."""

from __future__ import annotations

from helpers import examples
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from agentloop._tools.fastcheck import compile_fast_check  # internal unit under test

SCALAR_TYPES = ["string", "integer", "number", "boolean", "null"]

scalar_schema = st.one_of(
    st.builds(lambda t: {"type": t}, st.sampled_from(SCALAR_TYPES)),
    st.builds(
        lambda e: {"type": "string", "enum": e},
        st.lists(st.text(max_size=3), min_size=1, max_size=3, unique=True),
    ),
    st.builds(lambda e: {"enum": e}, st.lists(st.text(max_size=3), min_size=1, max_size=3, unique=True)),
    st.builds(lambda t: {"type": t, "description": "d", "default": None}, st.sampled_from(SCALAR_TYPES)),
)
bound_values = st.one_of(
    st.integers(-3, 3), st.floats(-3, 3, allow_nan=False), st.sampled_from([2**64, 1e300])
)
bounded_schema = st.one_of(
    st.builds(
        lambda t, k, b: {"type": t, k: b},
        st.sampled_from(["integer", "number", ["integer", "null"], ["number", "string"]]),
        st.sampled_from(["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"]),
        bound_values,
    ),
    st.builds(
        lambda t, k, n: {"type": t, k: n},
        st.sampled_from(["string", ["string", "null"], ["string", "integer"]]),
        st.sampled_from(["minLength", "maxLength"]),
        st.integers(0, 4),
    ),
)
field_schema = st.one_of(
    scalar_schema,
    bounded_schema,
    st.builds(lambda f: {"type": "array", "items": f}, st.one_of(scalar_schema, bounded_schema)),
)


@st.composite
def schemas(draw):  # type: ignore[no-untyped-def]
    props = draw(st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), field_schema, max_size=4))
    required = draw(st.lists(st.sampled_from(sorted(props)) if props else st.nothing(), unique=True))
    return {"type": "object", "properties": props, "required": required, "additionalProperties": False}


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=3),
    st.sampled_from([0, 1, 1.0, True, False, "", "a"]),
)
arguments = st.dictionaries(
    st.sampled_from(["a", "b", "c", "d", "e"]),
    st.one_of(json_scalars, st.lists(json_scalars, max_size=2)),
    max_size=5,
)


@settings(max_examples=examples(150), deadline=None)
@given(schemas(), arguments)
def test_fast_acceptance_implies_jsonschema_acceptance(schema: dict, args: dict) -> None:
    check = compile_fast_check(schema)
    assert check is not None  # every schema of this shape gets a fast path
    if check(args):
        assert Draft202012Validator(schema).is_valid(args), (schema, args)


def test_other_shapes_get_no_fast_path() -> None:
    assert compile_fast_check({"type": "object", "properties": {"x": {"type": "array"}}}) is None
    assert (
        compile_fast_check({"type": "object", "properties": {"x": {"type": "string"}}}) is None
    )  # extra keys allowed
    assert (
        compile_fast_check(
            {
                "type": "object",
                "properties": {"x": {"type": "number", "multipleOf": 0.5}},
                "additionalProperties": False,
            }
        )
        is None
    )
    assert (
        compile_fast_check(
            {"type": "object", "properties": {"x": {"enum": [1, True]}}, "additionalProperties": False}
        )
        is None
    )


def test_fast_path_accepts_typical_arguments() -> None:
    schema = {
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "City"},
            "days": {"type": "integer", "default": 1},
        },
        "required": ["city"],
        "additionalProperties": False,
    }
    check = compile_fast_check(schema)
    assert check is not None
    assert check({"city": "Lisbon"}) and check({"city": "Lisbon", "days": 3})
    assert not check({"days": 3}) and not check({"city": "Lisbon", "days": True}) and not check({"city": 1})
    assert not check({"city": "Lisbon", "extra": 1})

"""The encoded JSON a run keeps (a request body, held while the model answers) is its own size.

orjson >= 3.12 returns bytes that keep its whole working buffer: at least 4 KB, often 8-16x the
text. With 10,000 runs waiting on a slow model, each holding its request body, that was 4 KB
per run for a one-line conversation and ~1 MB per run for a 100 KB one (benchmarks/
bench_many_runs.py --model http --trace found it). Measured with tracemalloc, which counts the
bytes each allocation asked for: not a timing.
"""

from __future__ import annotations

import json
import tracemalloc

import pytest
from helpers import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from agentloop._json import dumps, dumps_str, loads  # internal unit under test

_HEADER = 64  # a bytes object's own header (33 bytes on CPython 3.11) and allocator rounding


def held_bytes_per_value(make: object, n: int = 50) -> float:
    """Bytes still allocated per value when n results of `make()` are kept alive."""
    assert callable(make)
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        kept = [make() for _ in range(n)]
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    assert len(kept) == n
    return sum(s.size_diff for s in after.compare_to(before, "filename")) / n


@pytest.mark.parametrize("size", [10, 300, 5_000, 50_000, 200_000])
def test_an_encoded_body_takes_no_more_memory_than_its_length(size: int) -> None:
    body = {"model": "flux-auto", "messages": [{"role": "user", "content": "x" * size}]}
    length = len(dumps(body))
    held = held_bytes_per_value(lambda: dumps(body))
    assert held <= length + _HEADER, f"{held:.0f} bytes held for {length} bytes of JSON"


def test_the_check_above_sees_what_the_kept_values_hold() -> None:
    """The measurement could pass by seeing nothing: it sees 4 KB held beside 300 bytes."""
    held = held_bytes_per_value(lambda: (bytes(300), bytes(4096)))
    assert 4096 + 300 <= held <= 4096 + 300 + 3 * _HEADER


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=examples(80), deadline=None)
@given(json_values)
def test_the_bytes_are_the_same_json_as_before(value: object) -> None:
    encoded = dumps(value)
    assert isinstance(encoded, bytes)
    assert encoded.decode() == dumps_str(value)
    assert json.loads(encoded) == json.loads(dumps_str(value))
    assert loads(encoded) == loads(dumps_str(value))


def test_a_value_json_cannot_hold_is_still_a_type_error() -> None:
    with pytest.raises(TypeError):
        dumps({"x": object()})
    with pytest.raises(TypeError):
        dumps_str({"x": object()})
    assert dumps({"big": 2**70}) == b'{"big":1180591620717411303424}'

"""`agentloop.abc.repair_tool_call_ids`: the loop's tool-call id repair, public for a `Model` that must
repair ids before the loop sees them (Temporal's model activity). From the outside, any ids."""

from __future__ import annotations

import re
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from agentloop.abc import repair_tool_call_ids

SAFE = re.compile(r"[a-zA-Z0-9_-]{1,64}")
ids = st.one_of(st.none(), st.integers(), st.text(max_size=70), st.sampled_from(["a", "b", "call_1", ""]))


def calls(values: list[Any]) -> list[dict[str, Any]]:
    return [{"id": v, "type": "function", "function": {"name": "f", "arguments": "{}"}} for v in values]


@given(earlier=st.lists(ids, max_size=6), answer=st.lists(ids, min_size=1, max_size=6))
def test_repaired_ids_are_safe_unique_and_valid_ones_are_kept(earlier: list[Any], answer: list[Any]) -> None:
    conversation = [{"role": "assistant", "content": None, "tool_calls": calls(earlier)}]
    used = {v for v in earlier if isinstance(v, str)}
    tool_calls = calls(answer)
    repair_tool_call_ids(conversation, tool_calls)
    got = [c["id"] for c in tool_calls]
    assert all(isinstance(i, str) and SAFE.fullmatch(i) for i in got)
    assert len(set(got)) == len(got) and not set(got) & used
    kept: set[str] = set()
    for before, after in zip(answer, got, strict=True):
        if isinstance(before, str) and SAFE.fullmatch(before) and before not in used and before not in kept:
            assert after == before  # a valid, new id is the model's own: never replaced
        kept.add(after)
    assert conversation[0]["tool_calls"] == calls(earlier)  # the conversation is only read

"""Temporal's WorkerOptions / ToolActivityOptions refuse a number that could only fail mid-run.

Before: `ToolActivityOptions(heartbeat_timeout=nan)` (or `inf`, or `maximum_attempts=2.5`) was
accepted, and `WorkerOptions` checked nothing: the value reached `timedelta(seconds=...)` in
workflow code, where NaN raises ValueError and 1e20 OverflowError on every replay of the workflow
task. Now: a `ConfigurationError` at construction that names the field and says what to pass.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import pytest

pytest.importorskip("temporalio", reason="temporalio is not installed: pip install 'agentloop[temporal]'")

from helpers import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from agentloop import ConfigurationError
from agentloop.abc import is_number
from agentloop.temporal import ToolActivityOptions, WorkerOptions

SECONDS = {
    ToolActivityOptions: ("start_to_close_timeout", "heartbeat_timeout"),
    WorkerOptions: (
        "heartbeat_timeout",
        "model_timeout",
        "default_tool_timeout",
        "graceful_shutdown_timeout",
    ),
}
COUNTS = {ToolActivityOptions: ("maximum_attempts",), WorkerOptions: ("model_attempts",)}
LONGEST = timedelta.max.days * 86_400  # seconds: what timedelta(seconds=...) in the workflow holds
NOT_FINITE = [math.nan, math.inf, -math.inf]
NOT_SECONDS = [*NOT_FINITE, 0, -1, 1e20, True, "30", [30]]
NOT_COUNTS = [*NOT_FINITE, 0, -1, 2.5, 3.0, True, "3"]

CASES = [
    (cls, name, bad, "a positive, finite number of seconds")
    for cls, names in SECONDS.items()
    for name in names
    for bad in NOT_SECONDS
] + [
    (cls, name, bad, "a whole number >= 1")
    for cls, names in COUNTS.items()
    for name in names
    for bad in NOT_COUNTS
]


@pytest.mark.parametrize(("cls", "name", "bad", "want"), CASES, ids=lambda v: getattr(v, "__name__", repr(v)))
def test_a_number_that_could_only_fail_mid_run_is_refused_at_construction(
    cls: Any, name: str, bad: Any, want: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        cls(**{name: bad})
    message = str(info.value)
    assert f"{cls.__name__}.{name} must be {want}" in message and repr(bad) in message
    assert "leave it out" in message  # what to pass instead


@pytest.mark.parametrize("cls", [ToolActivityOptions, WorkerOptions])
def test_the_defaults_and_ordinary_values_are_accepted(cls: Any) -> None:
    cls()
    cls(**{name: 0.5 for name in SECONDS[cls]}, **{name: 1 for name in COUNTS[cls]})
    cls(**{name: 86_400 for name in SECONDS[cls]}, **{name: 10 for name in COUNTS[cls]})


def test_the_longest_accepted_duration_is_one_the_workflow_can_hold() -> None:
    options = WorkerOptions(model_timeout=LONGEST, heartbeat_timeout=LONGEST + 0.5 - 1)
    assert timedelta(seconds=options.model_timeout) and timedelta(seconds=options.heartbeat_timeout)
    with pytest.raises(ConfigurationError, match=f"at most {LONGEST}"):
        WorkerOptions(model_timeout=LONGEST + 1)


def test_a_tool_option_none_keeps_its_default() -> None:
    assert ToolActivityOptions(start_to_close_timeout=None, heartbeat_timeout=None, maximum_attempts=None)


def test_tool_options_must_be_tool_activity_options() -> None:
    with pytest.raises(ConfigurationError, match=r"tool_options\['search'\] must be a ToolActivityOptions"):
        WorkerOptions(tool_options={"search": {"heartbeat_timeout": 5}})  # type: ignore[dict-item]


@settings(max_examples=examples(50), deadline=None)
@given(
    value=st.one_of(st.floats(), st.integers(-(2**70), 2**70), st.booleans(), st.none(), st.text(max_size=3))
)
def test_is_number_is_the_rule_the_options_follow(value: Any) -> None:
    """A seconds field takes a value exactly when `agentloop.abc.is_number` does and it is in
    (0, timedelta's range]: one rule for every configuration object."""
    fits = is_number(value) and 0 < value <= LONGEST
    try:
        WorkerOptions(model_timeout=value)
    except ConfigurationError:
        assert not fits
    else:
        assert fits

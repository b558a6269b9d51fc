"""Helpers shared by several test files: one place, so a fix or a change of API lands once.

Everything here goes through the public API (`agentloop.cli.main` is what the `agentloop` command runs).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any, TextIO

from agentloop import RunResult
from agentloop.cli import main as cli_main


def cli(argv: Sequence[str], *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """`agentloop <argv>` in-process, as the user types it; `out` / `err` catch what it prints."""
    with contextlib.ExitStack() as stack:
        if out is not None:
            stack.enter_context(contextlib.redirect_stdout(out))
        if err is not None:
            stack.enter_context(contextlib.redirect_stderr(err))
        return cli_main(list(argv))


def runs_main(argv: Sequence[str], *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """`agentloop runs <argv>`."""
    return cli(["runs", *argv], out=out, err=err)


def ui_main(argv: Sequence[str], *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """`agentloop ui <argv>`."""
    return cli(["ui", *argv], out=out, err=err)


__all__ = ["assert_valid_conversation", "cli", "runs_main", "ui_main"]


def assert_valid_conversation(conversation: RunResult | list[dict[str, Any]]) -> None:
    """Every assistant tool call is answered by exactly one tool message, right after its assistant
    message and in the model's order; no tool message answers nothing. Given a RunResult, its call
    records also have distinct ids."""
    if isinstance(conversation, RunResult):
        assert len({r.id for r in conversation.tool_calls}) == len(conversation.tool_calls)
        conversation = conversation.messages
    messages = conversation
    for i, m in enumerate(messages):
        if m["role"] == "assistant" and m.get("tool_calls"):
            ids = [c["id"] for c in m["tool_calls"]]
            answers = [x.get("tool_call_id") for x in messages[i + 1 : i + 1 + len(ids)]]
            assert answers == ids, (ids, answers)
            after = messages[i + 1 + len(ids) : i + 2 + len(ids)]
            assert not after or after[0]["role"] != "tool", f"a tool message answers nothing: {after[0]}"

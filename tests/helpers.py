"""Helpers shared by several test files: one place, so a fix or a change of API lands once.

Everything here goes through the public API (`agentloop.cli.main` is what the `agentloop` command runs).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import TextIO

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


__all__ = ["cli", "runs_main", "ui_main"]

"""The kinds of journal entries, named once.

What each kind's data holds, how it is written and how it is replayed is in `recorder.py`; this
module is on the package's lowest floor so that the journal's readers (`journal_query.py`'s SQL)
name the kinds too.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Entry"]


class Entry(StrEnum):
    """The kinds of journal entries. The values are what the journal stores (plain strings)."""

    MODEL = "model"  # a model answer (ids repaired), before its calls run
    MESSAGE = "message"  # a message the loop itself added (output-validation feedback)
    HANDOFF = "handoff"  # the agent the run passed to, and the conversation it starts from
    TOOL_START = "tool_start"  # a call is about to run (a crash after it: outcome unknown)
    TOOL_END = "tool_end"  # a call's outcome
    PAUSED = "paused"  # calls waiting for a human decision
    APPROVALS = "approvals"  # the decisions given to resume
    RESUMED = "resumed"  # where a resume picked up (for the inspector; replay ignores it)
    FAILED = "failed"  # why a run stopped with an error (for the inspector; replay ignores it)
    END = "end"  # the run's final result

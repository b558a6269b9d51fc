"""The extension points of agentloop (as `trio.abc` is for trio): implement one to plug in.

- `Model`: answers one `ModelRequest` with a `ModelTurn` (streaming through `Emit`).
- `Wire`: the codec `FluxClient` speaks on HTTP (OpenAI chat-completions, Anthropic Messages).
- `ToolExecutor`: runs a tool out of the event loop's process and returns a `ToolOutcome` (a
  typed record; the dispatcher writes the model's text from it). The "process" / "isolated"
  fork servers are ones (`ToolRegistry.sandbox_for`); give your own with `sandbox=executor`.
- `ToolSource`: registers tools into an agent's registry when given in `Agent(tools=[...])`.
- `Journal`: where durable runs are recorded; `JournaledRun`, `JournalEntry`, `RunInfo` are what it
  stores, and `replay(journaled_run) -> Replay` is the state a run resumes from (what the run
  inspector shows). `STATUS_GROUPS`: the status filters of `Journal.query_runs`.
- `repair_tool_call_ids(conversation, tool_calls)`: what the loop does to every answer's tool-call
  ids (non-empty, unique, safe for every provider), for a `Model` that must do it first, where
  randomness is allowed (Temporal's model activity: the workflow is replayed).
- `is_number(value, whole=False)`: the one test agentloop's configuration objects put a number
  through (an int, or with `whole=False` a finite float; never a bool, NaN or an infinity), for
  the configuration of an integration or a seam of yours (Temporal's `WorkerOptions` uses it).
- A `Decision` (`True`, `False`, `Reject`, `Override`) in the JSON form runs journal and send
  between processes: `decision_to_data` / `decision_from_data`; `check_decisions(pending,
  decisions)` checks that every pending call is decided (as `Agent.resume` does).

`agentloop.temporal`, `agentloop.mcp` and `agentloop.testing` are built on these and on the names
`agentloop` exports; see docs/architecture.md.
"""

from __future__ import annotations

from . import _fix_module_names
from ._budget import is_number
from ._ids import repair_tool_call_ids
from ._run.approval import check_decisions, decision_from_data, decision_to_data
from ._run.journal import Journal, JournaledRun, JournalEntry, RunInfo
from ._run.journal_query import STATUS_GROUPS
from ._run.recorder import Entry, Replay, replay
from ._seams import Emit, Model, ModelRequest, ToolExecutor, ToolOutcome, ToolSource, Wire

__all__ = [
    "Emit",
    "Journal",
    "Model",
    "ModelRequest",
    "ToolExecutor",
    "ToolOutcome",
    "ToolSource",
    "Wire",
    "repair_tool_call_ids",
    "is_number",
    # what a journal stores and how a run is rebuilt from it
    "Entry",
    "JournaledRun",
    "JournalEntry",
    "RunInfo",
    "Replay",
    "replay",
    "STATUS_GROUPS",
    # decisions on paused calls, in their data form
    "check_decisions",
    "decision_from_data",
    "decision_to_data",
]

# Shown as `agentloop.abc.X` (reprs, tracebacks, pickles), not as the private module that defines
# them: private paths move between releases, a pickled `ToolOutcome` or `Replay` must not break.
_fix_module_names(__all__, __name__, globals())

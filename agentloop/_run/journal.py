"""Durable runs: the `Journal` interface and the records it stores (`SQLiteJournal` is in `sqlite.py`,
the entry kinds with their writers and replay in `recorder.py`).

With `Agent(journal=...)` every run is journaled under its `run_id`, and each of these is
committed before the loop moves on: the run's start (its conversation), every model answer (ids
repaired), the start of every tool call (right before the tool runs), every tool outcome, an
approval pause and the decisions, the end. `Agent.resume(run_id)` replays the journal and goes
on from where it stops:

- journaled model answers are not requested again;
- finished tool calls are not run again: their journaled results are used;
- a call that started but did not finish (the process died while it ran) is run again only if
  its tool was registered with `idempotent=True`; otherwise it is not run, and the model gets a
  tool result saying its outcome is unknown (status `outcome_unknown`);
- calls that had not started run normally; a finished run is returned as it is.

One process at a time: a run is leased to the process that runs or resumes it. A second
`resume` of the same run while the first is alive raises `RunLockedError`. The lease of a
process that died (same machine: the process is gone, at once; another machine: `lease_ttl`
seconds without a journal write) is taken over. Holders are named by boot id, pid and process
start time, not by host name (see `lease.py`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from .journal_query import RunPage, RunSummary, default_query

__all__ = ["Journal", "JournaledRun", "JournalEntry", "RunInfo", "RunSummary", "RunPage"]


@dataclass(frozen=True, slots=True)
class JournalEntry:
    seq: int
    kind: str  # an `Entry` kind (recorder.py): "model", "tool_start", "tool_end", "end", ...
    step: int
    call_id: str | None
    data: dict[str, Any]
    at: float


@dataclass(frozen=True, slots=True)
class RunInfo:
    run_id: str
    status: str  # "running", "interrupted" (listed: its process is gone), "paused", or its stop reason
    model: str | None
    steps: int
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class JournaledRun:
    info: RunInfo
    header: dict[str, Any]  # {"model", "messages": the conversation the run started with}
    entries: list[JournalEntry]


class Journal(ABC):
    """Where durable runs are committed. Every method commits before it returns."""

    @abstractmethod
    async def create(self, run_id: str, header: dict[str, Any]) -> str:
        """Journal a new run and lease it to the caller; return the lease token."""

    @abstractmethod
    async def acquire(self, run_id: str) -> str:
        """Lease an existing run (`RunNotFoundError`, `RunLockedError`); return the token."""

    @abstractmethod
    async def release(self, run_id: str, token: str) -> None: ...

    @abstractmethod
    async def append(
        self,
        run_id: str,
        kind: str,
        data: dict[str, Any],
        *,
        step: int = 0,
        call_id: str | None = None,
        status: str | None = None,
    ) -> None:
        """Commit one entry (and the run's new status, if given)."""

    @abstractmethod
    async def load(self, run_id: str) -> JournaledRun: ...

    @abstractmethod
    async def list_runs(self) -> list[RunInfo]: ...

    @abstractmethod
    async def delete(self, run_id: str) -> None: ...

    async def query_runs(
        self,
        *,
        status: str | None = None,
        search: str | None = None,
        limit: int = 50,
        after: tuple[float, str] | None = None,
    ) -> RunPage:
        """One page of runs, newest first (what `agentloop ui` lists).

        `status`: a group of `STATUS_GROUPS` ("final", "paused", "interrupted", "failed",
        "step_limit", "other_limit"); `search`: text in the run's prompt or final output
        (case-insensitive; SQLite folds ASCII letters only);
        `after`: the `cursor` of the previous page. This default reads every run (fine for
        small journals); `SQLiteJournal` answers it with indexed SQL.
        """
        return await default_query(self, status=status, search=search, limit=limit, after=after)

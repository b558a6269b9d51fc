"""Errors of Temporal runs, in agentloop's one exception tree."""

from __future__ import annotations

from agentloop import ConfigurationError, MissingDependencyError, RunError

__all__ = ["IncompatibleWorkerError", "TemporalRunError", "TemporalNotInstalledError"]


class TemporalRunError(RunError):
    """A run on Temporal failed for good (e.g. the model endpoint kept failing, or it was cancelled
    or terminated). `error_type` names the cause (e.g. `AuthenticationError`), `run_id` the
    workflow; the Temporal UI / `temporal workflow show --workflow-id RUN_ID` has the history."""

    def __init__(self, message: str, *, run_id: str, error_type: str | None = None) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.error_type = error_type


class TemporalNotInstalledError(MissingDependencyError):
    """`agentloop.temporal` was imported without the `temporalio` package (a `MissingDependencyError`,
    so also a `ConfigurationError` and an `ImportError`, as before)."""


class IncompatibleWorkerError(TemporalRunError, ConfigurationError):
    """The worker that took the run cannot honour its agent: the spec needs a feature (or has a
    field) of a newer agentloop than the worker's. The run failed at once, before any model
    request or tool call. The message names the feature and the agentloop version it needs:
    upgrade the workers of the task queue (workers before clients) and start the run again."""

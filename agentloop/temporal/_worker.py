"""The worker: the agent workflow and its activities on a task queue, and `agentloop worker`.

`create_worker(client, task_queue, tools=registry, model=FluxClient())` returns a
`temporalio.worker.Worker` (use it with `async with` or `await worker.run()`; it may share a
worker with your own workflows via `workflows=` / `activities=`). Workflows run in Temporal's
sandbox: the workflow module itself is loaded afresh for every run under the sandbox's
restrictions (a clock read or a random number in it fails the workflow task), while the loop's
modules, anyio and sniffio are passed through: they hold no global mutable state, and
re-importing them for every run would only cost time.

`worker_main(argv)` is `agentloop worker --task-queue Q --tool module:registry`. SIGTERM or
SIGINT stop polling at once; in-flight activities get `--graceful-shutdown-timeout` seconds to
finish (their results are recorded), after which they are cancelled and handed back to
Temporal, which retries them on another worker (idempotent tools) or reports an unknown
outcome; either way no workflow is lost: its state is in Temporal's history.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import fields
from datetime import timedelta
from typing import Any

import anyio
from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from agentloop import ConfigurationError, Model, ToolDefinitionError, ToolRegistry, import_ref

from ._activities import AgentActivities
from ._spec import WorkerOptions
from ._workflow import AgentWorkflow

__all__ = ["WorkerOptions", "create_worker", "worker_main", "sandbox_runner", "PASSTHROUGH_MODULES"]

# The module whose code runs as the workflow: Temporal's sandbox must load it afresh for every run,
# with its own restricted view of `datetime`, `time`, `random`, ..., so that a clock read or a
# random number in the workflow's own code fails the workflow task instead of breaking replay.
WORKFLOW_MODULE = "agentloop.temporal._workflow"

# Third-party modules the workflow sandbox hands over as they are instead of re-importing them per
# run. They hold no per-run state that matters to a workflow. jsonschema's own dependencies and re2
# are listed too: `import agentloop` may leave them to the first tool registration, which for the
# workflow's tool proxies runs inside the sandbox (attrs reads `platform` at import: refused there).
_THIRD_PARTY_PASSTHROUGH = (
    "anyio",
    "sniffio",
    "structlog",
    "jsonschema",
    "jsonschema_specifications",
    "referencing",
    "attr",
    "attrs",
    "rpds",
    "re2",
    "orjson",
    "docstring_parser",
    # Under pytest the agentloop plugin (entry point pytest11) gets the package's modules
    # assertion-rewritten, and a rewritten module imports `_pytest.assertion.rewrite`: the
    # workflow module and the two `__init__`s, re-run in the sandbox, imported all of pytest
    # (pluggy, pygments...) there again for every workflow run, ~0.35 s of CPU each.
    "_pytest",
)


def _agentloop_passthrough() -> tuple[str, ...]:
    """Every agentloop module except the workflow module and the two packages above it.

    Passing "agentloop" through whole would pass the workflow module through as well (a
    passthrough name covers its submodules), and then the sandbox never checks the workflow's
    code. So each sibling is named instead: the loop's modules (data types, exceptions, the
    loop itself) are shared with the host, which keeps one class per type across the sandbox
    boundary, and the two `__init__` modules re-run cheaply in the sandbox over passed-through
    children. Found with `pkgutil.iter_modules`, which reads directories and imports nothing.
    """
    import pkgutil
    from pathlib import Path

    here = Path(__file__).parent  # agentloop/temporal (still being imported: no attribute yet)
    names: list[str] = []
    for path, prefix in ((here.parent, "agentloop."), (here, "agentloop.temporal.")):
        for info in pkgutil.iter_modules([str(path)], prefix):
            if info.name not in (WORKFLOW_MODULE, "agentloop.temporal"):
                names.append(info.name)
    return tuple(names)


PASSTHROUGH_MODULES = (*_THIRD_PARTY_PASSTHROUGH, *_agentloop_passthrough())


def sandbox_runner(extra_passthrough: Sequence[str] = ()) -> SandboxedWorkflowRunner:
    """Temporal's sandboxed workflow runner: `PASSTHROUGH_MODULES` shared, the workflow code sandboxed."""
    restrictions = SandboxRestrictions.default.with_passthrough_modules(
        *PASSTHROUGH_MODULES, *extra_passthrough
    )
    return SandboxedWorkflowRunner(restrictions=restrictions)


_OPTION_NAMES = tuple(f.name for f in fields(WorkerOptions))


def create_worker(
    client: Client,
    task_queue: str,
    *,
    tools: ToolRegistry,
    model: Model,
    functions: Sequence[Callable[..., Any]] = (),
    options: WorkerOptions | None = None,
    workflows: Sequence[type] = (),
    activities: Sequence[Any] = (),
    **worker_options: Any,
) -> Worker:
    """A Temporal worker that runs agent workflows with `tools` and `model` (see module docs).

    - `functions`: the `History(processor=...)` and handoff `input_filter` functions the agents
      started on this queue use; each runs in an activity on the worker, named by
      `module:qualname` (as tools are named), never sent. A run whose agent names a function the
      worker does not have fails with a clear error before its first model request.
    - `options`: a `WorkerOptions` (timeouts, attempts, the store, `format_tool_error`). Its
      fields passed as keywords (`heartbeat_timeout=...`, the form before `WorkerOptions`) still
      work, with a DeprecationWarning.
    - `worker_options`: passed to `temporalio.worker.Worker` (e.g. `max_concurrent_activities`).

    `model`'s credentials (`FluxClient.redact`) are cut out of every tool outcome and function
    error before it leaves an activity (history, the model's next request): the key is known on
    the worker, where the tools run, never in the workflow.
    """
    if not isinstance(task_queue, str) or not task_queue:
        raise ConfigurationError(f"task_queue must be a non-empty string, got {task_queue!r}")
    options = _options(options, worker_options)
    acts = AgentActivities(model, tools, options=options, functions=functions)
    worker_options.setdefault("workflow_runner", sandbox_runner())
    worker = Worker(
        client,
        task_queue=task_queue,
        workflows=[AgentWorkflow, *workflows],
        activities=[*acts.activities, *activities],
        graceful_shutdown_timeout=timedelta(seconds=options.graceful_shutdown_timeout),
        **worker_options,
    )
    worker.agent_activities = acts  # type: ignore[attr-defined]  # for diagnostics and tests
    return worker


def _options(options: WorkerOptions | None, keywords: dict[str, Any]) -> WorkerOptions:
    """`options`, or the old keyword form folded into one (popped from `keywords`), with a warning."""
    old = {name: keywords.pop(name) for name in _OPTION_NAMES if name in keywords}
    if options is not None and not isinstance(options, WorkerOptions):
        raise ConfigurationError(f"options must be a WorkerOptions, got {options!r}")
    if not old:
        return options or WorkerOptions()
    if options is not None:
        raise ConfigurationError(
            f"create_worker got options= and {sorted(old)} as keywords: put them in the WorkerOptions"
        )
    listed = ", ".join(f"{k}=..." for k in old)
    warnings.warn(
        f"create_worker({listed}) is deprecated: pass options=WorkerOptions({listed})",
        DeprecationWarning,
        stacklevel=3,
    )
    return WorkerOptions(**old)


def load_registry(spec: str) -> ToolRegistry:
    """`module:attribute` → the `ToolRegistry` it names (or a zero-argument callable returning one)."""
    _import_from_cwd()
    obj = import_ref(spec, what="tools registry")
    if not isinstance(obj, ToolRegistry) and callable(obj):
        if _needs_arguments(obj):  # `--tool mod:fn` (a tool function) was called here as a factory
            tools = ToolRegistry()
            tools.register(obj)
            return tools
        obj = obj()
    if not isinstance(obj, ToolRegistry):
        raise ConfigurationError(
            f"{spec!r} names an object of type {type(obj).__name__}, not a ToolRegistry, a function returning one, or a "
            "tool function"
        )
    return obj


def _needs_arguments(fn: Callable[..., Any]) -> bool:
    import inspect

    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # no signature (a builtin): call it as before
        return False
    return any(
        p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        for p in params
    )


def _load_tools(specs: Sequence[str]) -> ToolRegistry:
    """Several `--tool`s: registries (their tools, each still run by its own registry's sandbox)
    and functions, gathered into one registry, as `agentloop run --tool ... --tool ...` gathers them."""
    _import_from_cwd()
    tools = ToolRegistry()
    for spec in specs:
        obj = import_ref(spec, what="tool")
        if isinstance(obj, ToolRegistry):
            tools.include(obj)
        elif callable(obj):
            tools.register(obj)
        else:  # the registry's "cannot register 42" named neither the option nor the reference
            raise ConfigurationError(
                f"--tool {spec!r} names an object of type {type(obj).__name__}, not a function or a ToolRegistry"
            )
    return tools


def _import_from_cwd() -> None:
    """`agentloop worker` runs where the user's modules are: import them from there, as `python -m`
    does (the entry point's sys.path[0] is its bin directory instead)."""
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="agentloop worker", description="Run agentloop agents on a Temporal task queue."
    )
    p.add_argument("--task-queue", required=True, help="the Temporal task queue to poll")
    p.add_argument("--address", default=os.environ.get("TEMPORAL_ADDRESS", "localhost:7233"))
    p.add_argument("--namespace", default=os.environ.get("TEMPORAL_NAMESPACE", "default"))
    p.add_argument(  # --tool / --base-url, named as `agentloop run` names them
        "--tool",
        "--tools",
        dest="tool",
        action="append",
        required=True,
        metavar="MODULE:ATTR",
        help="the tools to run (repeatable): MODULE:REGISTRY for a ToolRegistry, or MODULE:FUNCTION; "
        "MODULE is imported from the current directory like `python -m`",
    )
    p.add_argument(
        "--base-url", default=None, help="FluxRouter endpoint (default $FLUX_BASE_URL or FluxRouter's)"
    )
    p.add_argument("--heartbeat-timeout", type=float, default=30.0, help="seconds (default 30)")
    p.add_argument(
        "--model-timeout", type=float, default=600.0, help="seconds per model request (default 600)"
    )
    p.add_argument("--graceful-shutdown-timeout", type=float, default=30.0, help="seconds (default 30)")
    p.add_argument("--max-concurrent-activities", type=int, default=None)
    p.add_argument(
        "--sticky-timeout", type=float, default=None, help=argparse.SUPPRESS
    )  # tests: fast failover
    return p


def worker_main(argv: Sequence[str] | None = None) -> int:
    """`agentloop worker ...`: run until SIGTERM / SIGINT, then shut down gracefully. Returns 0.

    Called from a script of your own, end the process with `os._exit(code)` after flushing
    stdout/stderr, as the `agentloop worker` command does: temporalio's native runtime keeps
    threads that may call into Python while the interpreter finalizes, which aborts a normal exit
    ("Fatal Python error: PyGILState_Release") now and then, after the worker has stopped cleanly.
    """
    args = _parser().parse_args(argv)
    if not os.environ.get("FLUX_API_KEY"):  # checked before connecting: FluxClient's advice is Python's
        print("agentloop worker: no API key: set the FLUX_API_KEY environment variable", file=sys.stderr)
        return 2
    try:
        tools = load_registry(args.tool[0]) if len(args.tool) == 1 else _load_tools(args.tool)
    except (ConfigurationError, ToolDefinitionError) as e:
        print(f"agentloop worker: {e}", file=sys.stderr)
        return 2
    return anyio.run(_serve, args, tools, backend="asyncio")  # temporalio runs on asyncio


async def _serve(args: argparse.Namespace, tools: ToolRegistry) -> int:
    from agentloop import FluxClient

    try:
        client = await Client.connect(args.address, namespace=args.namespace)
    except Exception as e:  # RuntimeError from the core SDK: the server is not reachable
        print(
            f"agentloop worker: cannot connect to Temporal at {args.address} ({e}); start it or pass --address",
            file=sys.stderr,
        )
        return 1
    options: dict[str, Any] = {}
    if args.max_concurrent_activities:
        options["max_concurrent_activities"] = args.max_concurrent_activities
    if args.sticky_timeout:
        options["sticky_queue_schedule_to_start_timeout"] = timedelta(seconds=args.sticky_timeout)
    async with FluxClient(base_url=args.base_url) as model, tools:
        settings = WorkerOptions(
            heartbeat_timeout=args.heartbeat_timeout,
            model_timeout=args.model_timeout,
            graceful_shutdown_timeout=args.graceful_shutdown_timeout,
        )
        worker = create_worker(client, args.task_queue, tools=tools, model=model, options=settings, **options)
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with worker:
                print(
                    f"agentloop worker: polling task queue {args.task_queue!r} on {args.address}", flush=True
                )
                async for sig in signals:
                    print(
                        f"agentloop worker: {signal.Signals(sig).name}, shutting down gracefully", flush=True
                    )
                    break
            # leaving `async with worker` waited for in-flight activities (or handed them back)
    print("agentloop worker: stopped", flush=True)
    return 0

"""The `agentloop` command: `demo` (offline, against the built-in fake FluxRouter) and `run`.

The CLI is an application, so unlike the library it may configure logging: `-v` sends
agentloop's structlog debug events to stderr.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO

import anyio

from ._agent import Agent
from ._client import FluxClient
from ._events import Event, RunFinished, StepFinished, TextDelta, ToolCallFinished, ToolCallStarted
from ._exceptions import AgentloopError, RunLimitExceeded
from ._tools import ToolRegistry

DEMO_PROMPT = "What's the weather in Lisbon and Porto?"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.verbose:
        _configure_logging()
    try:
        return anyio.run(args.func, args)
    except BaseException as raised:  # noqa: BLE001 - classified below, re-raised if unknown
        e = _unwrap(raised)
        if isinstance(e, KeyboardInterrupt):
            return 130
        if isinstance(e, BrokenPipeError):  # e.g. `agentloop demo --json | head`
            sys.stderr.close()
            return 0
        if isinstance(e, RunLimitExceeded):
            print(f"agentloop: {e}", file=sys.stderr)
            return 3
        if isinstance(e, AgentloopError):
            print(f"agentloop: {type(e).__name__}: {e}", file=sys.stderr)
            return 2
        raise


def _unwrap(e: BaseException) -> BaseException:
    while isinstance(e, BaseExceptionGroup) and len(e.exceptions) == 1:
        e = e.exceptions[0]
    return e


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="agentloop", description="Tool-calling agents on FluxRouter.")
    p.add_argument("-v", "--verbose", action="store_true", help="log agentloop debug events to stderr")
    sub = p.add_subparsers(required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="the weather example, offline against the built-in fake FluxRouter")
    demo.add_argument("prompt", nargs="?", default=DEMO_PROMPT)
    demo.add_argument("--json", action="store_true", help="print one JSON object per event")
    demo.set_defaults(func=_demo)

    run = sub.add_parser("run", help="run a prompt with your tools against FluxRouter")
    run.add_argument("prompt")
    run.add_argument("--tool", action="append", default=[], metavar="MODULE:FUNCTION",
                     help="a tool to offer (repeatable); MODULE:REGISTRY registers a whole ToolRegistry")
    run.add_argument("--model", default="flux-auto", help="model id (default flux-auto; flux-pinned-* pins one)")
    run.add_argument("--base-url", default=None, help="endpoint (default $FLUX_BASE_URL or FluxRouter's)")
    run.add_argument("--max-steps", type=int, default=10)
    run.add_argument("--system", default=None, help="instructions (system message)")
    run.add_argument("--json", action="store_true", help="print one JSON object per event")
    run.set_defaults(func=_run)
    return p


async def _demo(args: argparse.Namespace) -> int:
    from ._demo import demo_tools
    from .testing import FakeFluxRouter, weather_handler

    async with FakeFluxRouter(weather_handler) as router:
        async with FluxClient(base_url=router.base_url, api_key="demo-key") as client:
            if not args.json:
                print(f"fake FluxRouter listening on {router.url} (offline demo)\n")
            agent = Agent(client=client, tools=demo_tools(), model="flux-auto")
            await _print_run(agent, args.prompt, args.json, sys.stdout)
    return 0


async def _run(args: argparse.Namespace) -> int:
    tools = ToolRegistry()
    for spec in args.tool:
        _load_tool(tools, spec)
    async with FluxClient(base_url=args.base_url) as client:
        agent = Agent(client=client, tools=tools, model=args.model, max_steps=args.max_steps, instructions=args.system)
        await _print_run(agent, args.prompt, args.json, sys.stdout)
    return 0


def _load_tool(tools: ToolRegistry, spec: str) -> None:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise SystemExit(f"agentloop: --tool must look like module:function, got {spec!r}")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise SystemExit(f"agentloop: cannot load tool {spec!r}: {e}") from None
    if isinstance(obj, ToolRegistry):
        for tool in obj:
            tools.register(tool.fn, tool.name, tool.description, tool.parameters, sandbox=tool.sandbox, limits=tool.limits)
    else:
        tools.register(obj)


async def _print_run(agent: Agent, prompt: str, as_json: bool, out: TextIO) -> None:
    if not as_json:
        out.write(f"user: {prompt}\n")
    in_text = False
    async with agent.stream(prompt) as events:
        async for event in events:
            if as_json:
                out.write(json.dumps(_event_json(event), default=str) + "\n")
                continue
            if isinstance(event, TextDelta):
                if not in_text:
                    out.write(f"\n[step {event.step}] assistant: ")
                    in_text = True
                out.write(event.text)
            elif isinstance(event, ToolCallStarted):
                out.write(f"[step {event.step}] → {event.name}({event.arguments})  id={event.tool_call_id}\n")
            elif isinstance(event, ToolCallFinished):
                r = event.record
                out.write(f"[step {event.step}] ← {r.name} {r.status} in {r.duration_s * 1000:.2f} ms: {r.content}\n")
            elif isinstance(event, StepFinished):
                out.write(f"[step {event.step}] finished: {event.tool_calls} tool call(s), {event.usage.total_tokens} tokens\n")
            elif isinstance(event, RunFinished):
                r = event.result
                out.write(
                    f"\n\n{r.stop_reason} after {r.steps} step(s), {len(r.tool_calls)} tool call(s), "
                    f"{r.usage.total_tokens} tokens (run {r.run_id})\n"
                )
            out.flush()


def _event_json(event: Event) -> dict[str, Any]:
    from dataclasses import asdict

    data = asdict(event)
    data["type"] = type(event).__name__
    if isinstance(event, RunFinished):
        data["result"].pop("messages", None)
        data["result"]["output"] = event.result.output
    return data


def _configure_logging() -> None:
    import logging

    import structlog

    structlog.configure(
        processors=[structlog.processors.add_log_level, structlog.processors.TimeStamper(fmt="iso"),
                    structlog.dev.ConsoleRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
    )


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

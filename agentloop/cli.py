"""The `agentloop` command (also `python -m agentloop`): `demo` (offline, against the built-in
fake FluxRouter), `run`, `runs` (journaled runs) and `worker` (Temporal).

The CLI is an application, so unlike the library it may configure logging: `-v` sends
agentloop's structlog debug events to stderr. Colour and live redraws only on a terminal; text
that comes from the model or the journal is printed with its control characters escaped.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import anyio

from ._cli_common import (
    add_tool_options,
    cli_text,
    flux_client,
    load_tools,
    refuse_unknown_leading_options,
    safe,
    safe_text,
    until_interrupted,
    unwrap,
)
from ._events import Event, RunFinished, StepFinished, TextDelta, ToolCallFinished, ToolCallStarted
from ._exceptions import AgentloopError, RunLimitExceeded
from ._run.agent import Agent

DEMO_PROMPT = "What's the weather in Lisbon and Porto?"


def _exit_now(code: int) -> None:
    """End the process once the worker has stopped, without interpreter finalization.

    temporalio's native runtime keeps threads that may call back into Python while the
    interpreter finalizes; that aborted `agentloop worker` ("Fatal Python error:
    PyGILState_Release", exit 134) about half the time when it could not reach Temporal. By
    now the worker has shut down (its activities finished or were handed back) and nothing is
    left to clean up but buffered output, which is flushed first.
    """
    import os

    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    process_exit = argv is None  # the `agentloop` command itself, not a caller passing argv
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = []
    while argv[:1] in (["-v"], ["--verbose"]):  # `agentloop -v runs list`: -v before any command
        verbose.append(argv.pop(0))
    if argv[:1] and argv[0] in _DELEGATED:
        if verbose:
            _configure_logging()
        code = _run_delegated(argv[0], argv[1:])
    else:
        code = _run_command(verbose + argv)
    if process_exit and (argv[:1] == ["worker"] or _abandoned_threads()):
        _exit_now(code)
    return code


def _run_command(argv: list[str]) -> int:
    parser = _parser()
    refuse_unknown_leading_options(parser, argv)
    args = parser.parse_args(argv)
    if getattr(args, "prompt", None) == "-":  # `echo "..." | agentloop run -`
        args.prompt = sys.stdin.read()
    if args.verbose:
        _configure_logging()
    try:
        # every subcommand returns its exit status
        status: int = anyio.run(until_interrupted, functools.partial(args.func, args))
    except BaseException as raised:
        e = unwrap(raised)
        if isinstance(e, KeyboardInterrupt):
            print("agentloop: interrupted", file=sys.stderr)
            return 130
        if isinstance(e, BrokenPipeError):  # e.g. `agentloop demo --json | head`
            sys.stderr.close()
            return 0
        if isinstance(e, RunLimitExceeded):
            print(f"agentloop: {safe_text(str(e))}", file=sys.stderr)
            return 3
        if isinstance(e, AgentloopError):
            # a router's error text is in the message: escaped like the model's (no ESC sequences)
            print(f"agentloop: {type(e).__name__}: {cli_text(str(e))}", file=sys.stderr)
            return 2
        raise
    return status


def _abandoned_threads() -> list[threading.Thread]:
    """Tool threads still running once the command is done: a thread tool that timed out, or
    that was running at Ctrl-C, is abandoned (Python cannot stop a thread), and the interpreter
    would wait for it at exit, so `agentloop run` would hang after its run ended."""
    main_thread = threading.main_thread()
    left = [t for t in threading.enumerate() if t is not main_thread and not t.daemon and t.is_alive()]
    if left:
        print(f"agentloop: not waiting for {len(left)} abandoned tool thread(s)", file=sys.stderr)
    return left


# Commands with a parser of their own, and the extra each needs (None: none).
_DELEGATED = {"runs": None, "ui": "ui", "doctor": None, "worker": "temporal"}


def _run_delegated(command: str, argv: list[str]) -> int:
    """`agentloop runs|ui|doctor|worker ...`; a missing extra is a message, never a traceback."""
    try:
        sub_main = _load_delegated(command)
    except ImportError as e:  # an optional extra is not installed
        extra = _DELEGATED[command]
        print(
            f"agentloop {command}: needs the '{extra}' extra, which is not installed here ({e}); "
            f"install it with: pip install 'agentloop[{extra}]'",
            file=sys.stderr,
        )
        return 2
    return sub_main(argv)


def _load_delegated(command: str) -> Callable[[list[str]], int]:
    if command == "runs":  # `agentloop runs list|show|delete|resume`
        from ._journal_cli import main as runs_main

        return runs_main
    if command == "ui":  # `agentloop ui --journal runs.db`: the run inspector
        from .ui._cli import main as ui_main

        return ui_main
    if command == "doctor":  # what the sandbox can enforce on this machine
        from ._sandbox._doctor import main as doctor_main

        return doctor_main
    from .temporal import worker_main  # `agentloop worker --task-queue Q --tool module:registry`

    return worker_main


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="agentloop", description="Tool-calling agents on FluxRouter.")
    p.add_argument("--version", action="version", version=f"agentloop {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log agentloop debug events to stderr")
    sub = p.add_subparsers(required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="the weather example, offline against the built-in fake FluxRouter")
    demo.add_argument("prompt", nargs="?", default=DEMO_PROMPT, help="the prompt ('-': read it from stdin)")
    demo.add_argument("--json", action="store_true", help="print one JSON object per event")
    demo.set_defaults(func=_demo)

    run = sub.add_parser("run", help="run a prompt with your tools against FluxRouter")
    run.add_argument("prompt", help="the prompt ('-': read it from stdin)")
    add_tool_options(run)
    run.add_argument(
        "--model", default="flux-auto", help="model id (default flux-auto; flux-pinned-* pins one)"
    )
    run.add_argument("--max-steps", type=int, default=10)
    run.add_argument("--system", default=None, help="instructions (system message)")
    run.add_argument("--json", action="store_true", help="print one JSON object per event")
    run.add_argument(
        "--journal",
        default=None,
        metavar="PATH",
        help="make the run durable in this SQLite journal (see `agentloop runs`)",
    )
    run.add_argument("--run-id", default=None, help="the run's id (default: a new one)")
    run.set_defaults(func=_run)

    sub.add_parser("runs", help="list, show, delete or resume journaled runs (agentloop runs --help)")
    sub.add_parser("ui", help="serve the run inspector for a journal (agentloop ui --help)")
    sub.add_parser("doctor", help="what the tool sandbox can enforce on this machine")
    sub.add_parser("worker", help="run a Temporal worker for agent runs (agentloop worker --help)")
    return p


async def _demo(args: argparse.Namespace) -> int:
    from ._demo import demo_tools
    from ._http.client import FluxClient
    from .testing import FakeFluxRouter, weather_handler

    async with FakeFluxRouter(weather_handler) as router:
        async with FluxClient(base_url=router.base_url, api_key="demo-key") as client:
            if not args.json:
                print(f"fake FluxRouter listening on {router.url} (offline demo)\n")
            agent = Agent(client=client, tools=demo_tools(), model="flux-auto")
            await _print_run(agent, args.prompt, args.json, sys.stdout)
    return 0


async def _run(args: argparse.Namespace) -> int:
    tools = load_tools(args.tool)
    journal = None
    if args.journal:
        from ._run.sqlite import SQLiteJournal

        journal = SQLiteJournal(args.journal)
    async with flux_client(args.base_url) as client, tools:  # httpx loaded here, not by `runs|doctor`
        agent = Agent(
            client=client,
            tools=tools,
            model=args.model,
            max_steps=args.max_steps,
            instructions=args.system,
            journal=journal,
        )
        await _print_run(agent, args.prompt, args.json, sys.stdout, run_id=args.run_id)
    return 0


async def _print_run(
    agent: Agent, prompt: str, as_json: bool, out: TextIO, run_id: str | None = None
) -> None:
    """Print a run as it happens: JSON lines, a live view on a terminal, or plain lines."""
    if as_json:
        async with agent.stream(prompt, run_id=run_id) as events:
            async for event in events:
                out.write(json.dumps(_event_json(event), default=str) + "\n")
                out.flush()
        return
    view = _LiveView(out) if out.isatty() and _has_rich() else _PlainView(out)
    view.line(f"user: {safe_text(prompt)}")
    with view:
        async with agent.stream(prompt, run_id=run_id) as events:
            async for event in events:
                view.handle(event)


class _PlainView:
    """One line per event (no terminal control codes): for pipes, logs and CI."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.in_text = False
        self.in_flight: dict[str, str] = {}
        self.tokens = 0
        self.step = 0

    def __enter__(self) -> _PlainView:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def line(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def text(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def handle(self, event: Event) -> None:
        if isinstance(event, TextDelta):
            if not self.in_text:
                self.text(f"\n[step {event.step}] assistant: ")
                self.in_text = True
            self.text(safe_text(event.text))
            return
        if self.in_text and not isinstance(event, RunFinished):
            self.text("\n")
            self.in_text = False
        if isinstance(event, ToolCallStarted):
            self.in_flight[event.tool_call_id] = safe(event.name)
            self.line(
                f"[step {event.step}] → {safe(event.name)}({safe(event.arguments)})  id={safe(event.tool_call_id)}"
            )
        elif isinstance(event, ToolCallFinished):
            r = event.record
            self.in_flight.pop(r.id, None)
            self.line(
                f"[step {event.step}] ← {safe(r.name)} {r.status} in {r.duration_s * 1000:.2f} ms: {_short(r.content)}"
            )
        elif isinstance(event, StepFinished):
            self.step = event.step
            self.tokens += event.usage.total_tokens
            self.line(
                f"[step {event.step}] finished: {event.tool_calls} tool call(s), {event.usage.total_tokens} tokens"
            )
        elif isinstance(event, RunFinished):
            result = event.result
            self.line(
                f"\n\n{result.stop_reason} after {result.steps} step(s), {len(result.tool_calls)} tool call(s), "
                f"{result.usage.total_tokens} tokens (run {safe(result.run_id)})"
            )


class _LiveView(_PlainView):
    """On a terminal: the transcript scrolls, and a status line shows the step, the tool calls
    in flight and the tokens so far. rich is imported only here, so `import agentloop` stays
    light."""

    def __init__(self, out: TextIO) -> None:
        super().__init__(out)
        from rich.console import Console
        from rich.live import Live

        self.partial = ""  # streamed text not yet ended by a newline: shown live, printed whole
        self.console = Console(file=out, highlight=False)
        # No auto-refresh: that would be a background thread; the view redraws on each event.
        self.live = Live(
            console=self.console, transient=True, auto_refresh=False, get_renderable=self._status
        )

    def __enter__(self) -> _LiveView:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.text("")
        self.live.__exit__(None, None, None)

    def line(self, text: str) -> None:
        self.text("")  # flush a partial line first
        self.console.print(text, markup=False)

    def text(self, text: str) -> None:
        # Live redraws the status below the transcript, so only whole lines may be printed.
        *done, self.partial = (self.partial + text).split("\n")
        for piece in done:
            self.console.print(piece, markup=False)
        if not text and self.partial:
            self.console.print(self.partial, markup=False)
            self.partial = ""

    def handle(self, event: Event) -> None:
        super().handle(event)
        self.live.refresh()

    def _status(self) -> Any:
        from rich.text import Text

        flying = ", ".join(sorted(set(self.in_flight.values()))) or "none"
        status = Text(self.partial + "\n") if self.partial else Text()
        status.append(
            f"⏳ step {self.step + 1} · tools in flight: {len(self.in_flight)} ({flying}) · {self.tokens} tokens",
            style="dim",
        )
        return status


def _has_rich() -> bool:
    import importlib.util

    return importlib.util.find_spec("rich") is not None


def _short(text: str, limit: int = 400) -> str:
    text = safe_text(text)
    return text if len(text) <= limit else text[:limit] + f"… ({len(text)} chars)"


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
    import os

    import structlog

    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty() and "NO_COLOR" not in os.environ),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
    )


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

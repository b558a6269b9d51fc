"""`agentloop runs list | show RUN_ID | delete RUN_ID | resume RUN_ID`: journaled runs from the shell.

The CLI wires `main(argv)` as the `runs` subcommand. The journal path comes from `--journal`
(before or after the subcommand: `agentloop runs list --journal runs.db` and `agentloop runs
--journal runs.db list` are the same), else the `AGENTLOOP_JOURNAL` environment variable, else
`agentloop-runs.db` in the current directory. `resume` continues a run that was interrupted or
paused for approval; it needs the run's tools (`--tool`, as `agentloop run` takes them).
Exit status: 0 done, 1 journal error (message on stderr), 2 usage or configuration error,
3 the resumed run hit a limit.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, TextIO

from ._cli_common import add_tool_options, cli_text, safe, safe_text, until_interrupted, unwrap
from ._exceptions import AgentloopError, JournalError, RunLimitExceeded
from ._run.journal import JournaledRun, RunInfo
from ._run.sqlite import SQLiteJournal

__all__ = ["main", "render_run"]

DEFAULT_PATH = "agentloop-runs.db"


def _parser() -> argparse.ArgumentParser:
    journal_help = f"journal file (default: $AGENTLOOP_JOURNAL or ./{DEFAULT_PATH})"
    parser = argparse.ArgumentParser(
        prog="agentloop runs", description="List, show, delete and resume journaled runs."
    )
    parser.add_argument("--journal", default=None, help=journal_help)
    # The same option on each subcommand, so it may come after it too; SUPPRESS keeps a value
    # given before the subcommand from being overwritten by the subcommand's default.
    after = argparse.ArgumentParser(add_help=False)
    after.add_argument("--journal", default=argparse.SUPPRESS, help=journal_help)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", parents=[after], help="one line per run: id, status, steps, model, last update")
    show = sub.add_parser("show", parents=[after], help="a run as a readable transcript")
    show.add_argument("run_id")
    delete = sub.add_parser("delete", parents=[after], help="delete a run (refused while it is being run)")
    delete.add_argument("run_id")
    resume = sub.add_parser(
        "resume", parents=[after], help="continue an interrupted or paused run (needs its tools)"
    )
    resume.add_argument("run_id")
    add_tool_options(resume)
    resume.add_argument("--model", default=None, help="model id (default: the one the run was started with)")
    resume.add_argument(
        "--approve",
        action="append",
        default=[],
        metavar="CALL_ID",
        help="approve a pending call (repeatable)",
    )
    resume.add_argument(
        "--deny", action="append", default=[], metavar="CALL_ID", help="reject a pending call (repeatable)"
    )
    return parser


def main(argv: list[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    path = args.journal or os.environ.get("AGENTLOOP_JOURNAL") or DEFAULT_PATH
    if not os.path.exists(path):
        print(f"agentloop runs: no journal at {path}; pass --journal PATH or set AGENTLOOP_JOURNAL", file=err)
        return 1
    journal = SQLiteJournal(path)
    try:
        if args.command == "list":
            runs = journal.list_runs_sync()
            if not runs:
                print(f"no runs in {path}", file=out)
            for info in runs:
                print(_list_line(info), file=out)
        elif args.command == "show":
            out.write(render_run(journal.load_sync(args.run_id)))
        elif args.command == "delete":
            journal.delete_sync(args.run_id)
            print(f"deleted run {safe(args.run_id)}", file=out)
        else:
            return _resume(args, journal, out, err)
    except JournalError as e:
        print(f"agentloop runs: {safe_text(str(e))}", file=err)
        return 1
    except (TypeError, ValueError, AttributeError, KeyError, OverflowError) as e:
        # Valid JSON of the wrong shape (a message that is a number, steps that are text): the
        # file is damaged or not ours. Say so, as for undecodable bytes, rather than a traceback.
        print(
            f"agentloop runs: {safe(path)} has damaged data that cannot be shown "
            f"({type(e).__name__}: {safe(str(e))}); restore it from a backup or pass another path",
            file=err,
        )
        return 1
    finally:
        journal.close()
    return 0


def _resume(args: argparse.Namespace, journal: SQLiteJournal, out: TextIO, err: TextIO) -> int:
    import anyio

    from ._cli_common import flux_client, load_tools
    from ._run.agent import Agent

    async def go() -> Any:
        model = args.model or journal.load_sync(args.run_id).info.model or "flux-auto"
        approvals = {**{i: True for i in args.approve}, **{i: False for i in args.deny}}
        async with flux_client(args.base_url) as client, load_tools(args.tool) as tools:
            agent = Agent(client=client, tools=tools, model=model, journal=journal)
            return await agent.resume(args.run_id, approvals=approvals or None)

    try:
        result = anyio.run(until_interrupted, go)
    except BaseException as raised:
        e = unwrap(raised)
        if isinstance(e, KeyboardInterrupt):  # the journal has every step so far
            print(
                f"agentloop runs: interrupted; `agentloop runs resume {safe(args.run_id)}` continues",
                file=err,
            )
            return 130
        if isinstance(e, JournalError):
            raise e from None
        if isinstance(e, RunLimitExceeded):
            print(f"agentloop runs: {safe_text(str(e))}", file=err)
            return 3
        if isinstance(e, AgentloopError):
            print(f"agentloop runs: {type(e).__name__}: {cli_text(str(e))}", file=err)
            return 2
        raise
    if result.output:
        print(safe_text(str(result.output)), file=out)
    pending = ", ".join(f"{safe(p.id)} ({safe(p.name)})" for p in result.pending)
    waiting = f"; waiting for approval of {pending} (--approve/--deny CALL_ID)" if pending else ""
    print(
        f"\n{result.stop_reason} after {result.steps} step(s){waiting} (run {safe(result.run_id)})", file=out
    )
    return 0


def _when(t: float) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))
    except (OverflowError, OSError):  # a tampered time (1e18: OSError, which ended in a traceback)
        return f"{t!r:.40} (not a time)"


def _list_line(info: RunInfo) -> str:
    return (
        f"{safe(info.run_id)}  {safe(info.status):<17} steps={safe(info.steps):<3} model={safe(info.model)}  "
        f"updated {_when(info.updated_at)}"
    )


def _short(value: Any, limit: int = 400) -> str:
    s = safe_text(value if isinstance(value, str) else repr(value))
    s = s.replace("\n", "\n    ")
    return s if len(s) <= limit else s[:limit] + f"... [{len(s) - limit} more chars]"


def render_run(run: JournaledRun) -> str:
    """A journaled run as a transcript: the conversation, each call with its outcome, pauses, the end."""
    info = run.info
    lines = [
        f"run {safe(info.run_id)}  status={safe(info.status)}  model={safe(info.model)}  steps={safe(info.steps)}",
        f"started {_when(info.created_at)}, last update {_when(info.updated_at)}",
        "",
    ]
    for m in run.header.get("messages", []):
        lines.append(f"[{safe(m.get('role'))}] {_short(m.get('content'))}")
    open_calls: dict[str, str] = {}
    for e in run.entries:
        d = e.data
        if e.kind == "model":
            msg = d.get("message", {})
            usage = d.get("usage", {})
            lines.append(f"--- step {safe(e.step)} ({safe(usage.get('total_tokens', 0))} tokens)")
            if msg.get("content"):
                lines.append(f"[assistant] {_short(msg['content'])}")
            for c in msg.get("tool_calls") or ():
                fn = c.get("function", {})
                lines.append(
                    f"[assistant] -> {safe(fn.get('name'))}({_short(fn.get('arguments'), 200)})  id={safe(c.get('id'))}"
                )
        elif e.kind == "message":  # added by the loop itself (output-validation feedback)
            msg = d.get("message", {})
            lines.append(f"[{safe(msg.get('role'))}] {_short(msg.get('content'))}")
        elif e.kind == "tool_start":
            open_calls[e.call_id or ""] = d.get("name", "?")
        elif e.kind == "tool_end":
            open_calls.pop(e.call_id or "", None)
            lines.append(
                f"[tool {safe(d.get('name'))} id={safe(e.call_id)}] {safe(d.get('status'))}: {_short(d.get('content'))}"
            )
        elif e.kind == "paused":
            ids = ", ".join(f"{safe(p['id'])} ({safe(p['name'])})" for p in d.get("pending", []))
            lines.append(f"=== paused: waiting for approval of {ids}")
        elif e.kind == "approvals":
            lines.append("=== approvals: " + ", ".join(f"{safe(k)}={safe(v)}" for k, v in d.items()))
        elif e.kind == "end":
            lines.append(f"=== finished: {safe(d.get('stop_reason'))}")
    for cid, name in open_calls.items():
        lines.append(f"[tool {safe(name)} id={safe(cid)}] started, no outcome journaled (interrupted)")
    return "\n".join(lines) + "\n"

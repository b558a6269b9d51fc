"""`agentloop runs list | show RUN_ID | delete RUN_ID`: look into a run journal from the shell.

The CLI wires `main(argv)` as the `runs` subcommand. The journal path comes from `--journal`,
else the `AGENTLOOP_JOURNAL` environment variable, else `agentloop-runs.db` in the current
directory. Exit status: 0 done, 1 journal error (message on stderr), 2 usage error.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, TextIO

from ._exceptions import JournalError
from ._journal import JournaledRun, RunInfo, SQLiteJournal

__all__ = ["main", "render_run"]

DEFAULT_PATH = "agentloop-runs.db"


def main(argv: list[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    parser = argparse.ArgumentParser(prog="agentloop runs", description="List, show and delete journaled runs.")
    parser.add_argument("--journal", help=f"journal file (default: $AGENTLOOP_JOURNAL or ./{DEFAULT_PATH})")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="one line per run: id, status, steps, model, last update")
    show = sub.add_parser("show", help="a run as a readable transcript")
    show.add_argument("run_id")
    delete = sub.add_parser("delete", help="delete a run (refused while it is being run)")
    delete.add_argument("run_id")
    try:
        args = parser.parse_args(argv)
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
        else:
            journal.delete_sync(args.run_id)
            print(f"deleted run {args.run_id}", file=out)
    except JournalError as e:
        print(f"agentloop runs: {e}", file=err)
        return 1
    finally:
        journal.close()
    return 0


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _list_line(info: RunInfo) -> str:
    return f"{info.run_id}  {info.status:<17} steps={info.steps:<3} model={info.model}  updated {_when(info.updated_at)}"


def _short(value: Any, limit: int = 400) -> str:
    s = value if isinstance(value, str) else repr(value)
    s = s.replace("\n", "\n    ")
    return s if len(s) <= limit else s[:limit] + f"... [{len(s) - limit} more chars]"


def render_run(run: JournaledRun) -> str:
    """A journaled run as a transcript: the conversation, each call with its outcome, pauses, the end."""
    info = run.info
    lines = [
        f"run {info.run_id}  status={info.status}  model={info.model}  steps={info.steps}",
        f"started {_when(info.created_at)}, last update {_when(info.updated_at)}",
        "",
    ]
    for m in run.header.get("messages", []):
        lines.append(f"[{m.get('role')}] {_short(m.get('content'))}")
    open_calls: dict[str, str] = {}
    for e in run.entries:
        d = e.data
        if e.kind == "model":
            msg = d.get("message", {})
            usage = d.get("usage", {})
            lines.append(f"--- step {e.step} ({usage.get('total_tokens', 0)} tokens)")
            if msg.get("content"):
                lines.append(f"[assistant] {_short(msg['content'])}")
            for c in msg.get("tool_calls") or ():
                fn = c.get("function", {})
                lines.append(f"[assistant] -> {fn.get('name')}({_short(fn.get('arguments'), 200)})  id={c.get('id')}")
        elif e.kind == "message":  # added by the loop itself (output-validation feedback)
            msg = d.get("message", {})
            lines.append(f"[{msg.get('role')}] {_short(msg.get('content'))}")
        elif e.kind == "tool_start":
            open_calls[e.call_id or ""] = d.get("name", "?")
        elif e.kind == "tool_end":
            open_calls.pop(e.call_id or "", None)
            lines.append(f"[tool {d.get('name')} id={e.call_id}] {d.get('status')}: {_short(d.get('content'))}")
        elif e.kind == "paused":
            ids = ", ".join(f"{p['id']} ({p['name']})" for p in d.get("pending", []))
            lines.append(f"=== paused: waiting for approval of {ids}")
        elif e.kind == "approvals":
            lines.append("=== approvals: " + ", ".join(f"{k}={v}" for k, v in d.items()))
        elif e.kind == "end":
            lines.append(f"=== finished: {d.get('stop_reason')}")
    for cid, name in open_calls.items():
        lines.append(f"[tool {name} id={cid}] started, no outcome journaled (interrupted)")
    return "\n".join(lines) + "\n"

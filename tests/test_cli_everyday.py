"""The CLI's everyday path (#13), each bug's repro as a test, run as a user runs it: the
installed `agentloop` entry point (or `python -m agentloop`) in a subprocess, against the fake
router on loopback.

The entry point's processes are forked warm (tests/warm_fork.py: a process of its own running the
installed `agentloop` script as `__main__`, with its own argv, environment, cwd and stdio, forked
from a server that imported agentloop once): a fresh interpreter cost ~0.7 s of CPU a command on
a busy machine, 25 commands here. The entry point as a fresh interpreter runs in
test_doc_commands.py (every documented `agentloop ...` command) and `python -m agentloop` below."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
import pytest
import warm_fork
from helpers import runs_main

import agentloop
from agentloop import Agent, SQLiteJournal
from agentloop.testing import FakeFluxRouter, ScriptedModel, call, text, tool_calls

AGENTLOOP = str(Path(sys.executable).with_name("agentloop"))
KEY = "sk-cli-everyday-key"

MYTOOLS = '''
from agentloop import ToolRegistry

registry = ToolRegistry()


@registry.tool
def shout(text: str) -> str:
    """Upper-case a text."""
    return text.upper()


@registry.tool(requires_approval=True)
def refund(order: str) -> str:
    """Refund an order."""
    return f"refunded {order}"
'''


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A user's project directory: their tools module, nothing on PYTHONPATH."""
    (tmp_path / "mytools.py").write_text(textwrap.dedent(MYTOOLS))
    return tmp_path


def cli(
    *args: str, cwd: Path | None = None, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "AGENTLOOP_JOURNAL")}
    return subprocess.run(
        warm_fork.command(Path(AGENTLOOP), list(args), preload=warm_fork.AGENTLOOP_PRELOAD),
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        env={**base, "FLUX_API_KEY": KEY, **(env or {})},
        check=False,
    )


# The async tests here run on one backend: what they test is the command, a process of its own
# that picks its own loop; this process's loop only hosts the fake router (tested on both backends
# in its own files), so a second backend would run the same commands again and test nothing more
# (as test_doc_commands.py).
one_backend = pytest.mark.parametrize("anyio_backend", ["asyncio"])


async def acli(
    *args: str, cwd: Path | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return await anyio.to_thread.run_sync(lambda: cli(*args, cwd=cwd, stdin=stdin))


# --- runs: --journal before or after the subcommand -----------------------------------------


def journaled(db: Path, run_id: str = "r1") -> None:
    async def go() -> None:
        journal = SQLiteJournal(db)
        try:
            await Agent(client=ScriptedModel([text("hello there")]), journal=journal).run("hi", run_id=run_id)
        finally:
            journal.close()

    anyio.run(go)


@pytest.mark.parametrize("command", [["list"], ["show", "r1"], ["delete", "r1"]])
@pytest.mark.parametrize("where", ["after", "before"])
def test_runs_takes_journal_before_or_after_the_subcommand(
    tmp_path: Path, command: list[str], where: str
) -> None:
    # The repro: `agentloop runs list --journal runs.db` (the README's form) was rejected.
    db = tmp_path / "runs.db"
    journaled(db)
    argv = [*command, "--journal", str(db)] if where == "after" else ["--journal", str(db), *command]
    out, err = io.StringIO(), io.StringIO()
    assert runs_main(argv, out=out, err=err) == 0, err.getvalue()
    assert "r1" in out.getvalue()


def test_runs_journal_after_wins_over_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "runs.db"
    journaled(db)
    monkeypatch.setenv("AGENTLOOP_JOURNAL", str(tmp_path / "missing.db"))
    out = io.StringIO()
    assert runs_main(["list", "--journal", str(db)], out=out, err=io.StringIO()) == 0
    assert out.getvalue().startswith("r1 ")


# --- version, python -m, stdin ------------------------------------------------------------------


def test_version() -> None:
    done = cli("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"agentloop {agentloop.__version__}"


def test_python_dash_m_agentloop() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "agentloop", "demo", "--json", "Weather in Tokyo?"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1])["result"]["output"].startswith("Tokyo: 15")


def test_prompt_from_stdin() -> None:
    done = cli("demo", "--json", "-", stdin="Weather in Tokyo?\n")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1])["result"]["output"].startswith("Tokyo: 15")


@one_backend
@pytest.mark.anyio
async def test_run_reads_the_prompt_from_stdin_and_its_tool_from_the_current_directory(project: Path) -> None:
    # The repro: `agentloop run --tool mytools:registry` could not import mytools from the cwd.
    script = [tool_calls(call("shout", {"text": "hi"})), text("It says HI.")]
    async with FakeFluxRouter(script, api_key=KEY) as router:
        done = await acli(
            "run",
            "--base-url",
            router.base_url,
            "--tool",
            "mytools:registry",
            "-",
            cwd=project,
            stdin="Shout hi",
        )
        assert done.returncode == 0, done.stderr
        assert router.requests[0].json["messages"][-1]["content"] == "Shout hi"
    assert "← shout ok" in done.stdout and "It says HI." in done.stdout


# --- runs resume --------------------------------------------------------------------------------

KILLED = """
import os, sys, anyio
from agentloop import SQLiteJournal

async def main():
    j = SQLiteJournal(sys.argv[1])
    await j.create("r", {"model": "flux-pinned-x", "messages": [{"role": "user", "content": "go"}]})
    os.kill(os.getpid(), 9)

anyio.run(main)
"""


@one_backend
@pytest.mark.anyio
async def test_runs_resume_continues_a_killed_run(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    killed = await anyio.run_process([sys.executable, "-c", KILLED, str(db)], check=False)
    assert killed.returncode == -9
    assert (await acli("runs", "list", "--journal", str(db))).stdout.split()[:2] == ["r", "interrupted"]
    async with FakeFluxRouter([text("picked up")], api_key=KEY) as router:
        done = await acli("runs", "resume", "r", "--journal", str(db), "--base-url", router.base_url)
        assert router.requests[0].json["model"] == "flux-pinned-x"  # the run's own model
    assert done.returncode == 0, done.stderr
    assert "picked up" in done.stdout and "final after 1 step(s)" in done.stdout
    assert (await acli("runs", "list", "--journal", str(db))).stdout.split()[:2] == ["r", "final"]


@one_backend
@pytest.mark.anyio
async def test_runs_resume_approves_a_paused_call(project: Path) -> None:
    db = project / "runs.db"
    sys.path.insert(0, str(project))
    try:
        from mytools import registry  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(project))
    journal = SQLiteJournal(db)
    model = ScriptedModel([tool_calls(call("refund", {"order": "7"}, id="c1"))])
    paused = await Agent(client=model, tools=registry, journal=journal).run("refund 7", run_id="p")
    journal.close()
    assert paused.stop_reason == "approval_required"
    async with FakeFluxRouter([text("Refunded.")], api_key=KEY) as router:
        waiting = await acli(
            "runs",
            "resume",
            "p",
            "--journal",
            str(db),
            "--base-url",
            router.base_url,
            "--tool",
            "mytools:registry",
            cwd=project,
        )
        assert waiting.returncode == 2 and "c1" in waiting.stderr  # no decision given: says which call
        done = await acli(
            "runs",
            "resume",
            "p",
            "--journal",
            str(db),
            "--base-url",
            router.base_url,
            "--tool",
            "mytools:registry",
            "--approve",
            "c1",
            cwd=project,
        )
    assert done.returncode == 0, done.stderr
    assert "Refunded." in done.stdout
    shown = await acli("runs", "show", "p", "--journal", str(db))
    assert "[tool refund id=c1] ok: refunded 7" in shown.stdout


def test_runs_resume_of_an_unknown_run(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    journaled(db)
    done = cli("runs", "resume", "nope", "--journal", str(db), "--base-url", "http://127.0.0.1:9/v1")
    assert done.returncode == 1 and "no run 'nope'" in done.stderr


# --- run and worker name their options alike ------------------------------------------------------


def test_run_and_worker_use_the_same_option_names() -> None:
    pytest.importorskip("temporalio")
    from agentloop.temporal._worker import _parser as worker_parser  # internal unit under test

    args = worker_parser().parse_args(["--task-queue", "q", "--tool", "m:registry", "--base-url", "http://x"])
    assert args.tool == ["m:registry"] and args.base_url == "http://x"
    old = worker_parser().parse_args(
        ["--task-queue", "q", "--tools", "m:registry"]
    )  # the old name still works
    assert old.tool == ["m:registry"]


# --- what reaches the terminal ---------------------------------------------------------------------


def test_no_colour_when_not_a_terminal() -> None:
    done = cli("-v", "demo")
    assert done.returncode == 0
    assert "\x1b" not in done.stdout and "\x1b" not in done.stderr
    assert "run finished" in done.stderr  # the debug log was written, just without colour codes


HOSTILE = "\x1b]0;owned\x07\x1b[2J\x1b[31mred\x9b"


@one_backend
@pytest.mark.anyio
async def test_model_text_and_run_ids_are_printed_with_control_characters_escaped(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    run_id = "run\x1b[2Jx"
    async with FakeFluxRouter([text(f"hello {HOSTILE}")], api_key=KEY) as router:
        done = await acli(
            "run", "--base-url", router.base_url, "--journal", str(db), "--run-id", run_id, "hi"
        )
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout and "\x9b" not in done.stdout and "\x07" not in done.stdout
    assert "\\x1b]0;owned\\x07\\x1b[2J\\x1b[31mred\\x9b" in done.stdout
    assert "(run run\\x1b[2Jx)" in done.stdout
    for command in (["list"], ["show", run_id]):
        shown = await acli("runs", *command, "--journal", str(db))
        assert shown.returncode == 0 and "\x1b" not in shown.stdout and "run\\x1b[2Jx" in shown.stdout


def test_escaping_keeps_ordinary_text() -> None:
    from agentloop._cli_common import safe, safe_text  # internal unit under test

    assert safe_text("Lisbon: 21 °C\n\tclear — ok ✓") == "Lisbon: 21 °C\n\tclear — ok ✓"
    assert safe("a\nb") == "a\\x0ab"


def test_run_with_a_tool_module_that_does_not_exist_says_which(project: Path) -> None:
    done = cli("run", "--tool", "nothere:registry", "hi", cwd=project)
    assert done.returncode == 2 and "cannot load the tool 'nothere:registry'" in done.stderr


def test_journal_cli_reads_a_killed_runs_lease_table_unchanged(tmp_path: Path) -> None:
    # `runs list` only reads: listing an interrupted run does not take or drop its lease.
    db = tmp_path / "runs.db"
    subprocess.run([sys.executable, "-c", KILLED, str(db)], check=False)
    before = sqlite3.connect(db).execute("SELECT * FROM agentloop_leases").fetchall()
    assert runs_main(["list", "--journal", str(db)], out=io.StringIO(), err=io.StringIO()) == 0
    assert sqlite3.connect(db).execute("SELECT * FROM agentloop_leases").fetchall() == before

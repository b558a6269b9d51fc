"""The `agentloop` command as a new user meets it: wrong arguments, missing extras, broken tool
modules, Ctrl-C. Every failure must be a clear message and a non-zero exit status: never a
traceback, never a hang, never the API key. The command runs as a subprocess, as a user runs it,
against the fake router on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import pytest

from agentloop.testing import FakeFluxRouter, RecordedRequest, Reply, call, text, tool_calls

KEY = "sk-outside-cli-SECRET-0123456789"
BIN = Path(sys.executable).parent
# Tools a user might write; the bodies are their mistakes (a syntax error, a raise at import).
MODULES = {
    "goodtools.py": (
        "import threading\n"
        "from agentloop import ToolRegistry\n"
        "registry = ToolRegistry()\n\n"
        "@registry.tool\n"
        "def shout(text: str) -> str:\n"
        '    """Upper-case a text."""\n'
        "    return text.upper()\n\n"
        "@registry.tool\n"
        "def block(text: str) -> str:\n"
        '    """Never returns: a thread tool stuck on I/O."""\n'
        "    print('block started', flush=True)\n"
        "    threading.Event().wait()\n"
        "    return text\n"
    ),
    "synerr.py": "def broken(:\n",
    "importerr.py": "raise RuntimeError('import-time boom')\n",
}


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    for name, source in MODULES.items():
        (tmp_path / name).write_text(source)
    return tmp_path


def _env(base_url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLUX_", "AGENTLOOP_"))}
    env.pop("PYTHONPATH", None)
    env["FLUX_API_KEY"] = KEY
    if base_url:
        env["FLUX_BASE_URL"] = base_url
    return env


def _agentloop(args: list[str], cwd: Path, base_url: str | None = None, *, pre: str = "") -> Any:
    """Run `agentloop ARGS`; `pre` is Python run first in the same process (to hide an extra)."""
    argv = [
        sys.executable,
        "-c",
        f"{pre}\nimport sys\nfrom agentloop.cli import main\nsys.exit(main())",
        *args,
    ]
    return subprocess.run(
        argv, cwd=cwd, env=_env(base_url), capture_output=True, text=True, timeout=120, check=False
    )


def _assert_clear_failure(done: Any, *expected: str) -> None:
    shown = done.stdout + done.stderr
    assert done.returncode not in (0, None), shown
    assert "Traceback" not in shown, shown
    assert KEY not in shown
    for words in expected:
        assert words in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("command", "module", "extra"), [("ui", "jinja2", "ui"), ("worker", "temporalio", "temporal")]
)
def test_a_command_whose_extra_is_missing_says_what_to_install(
    workdir: Path, command: str, module: str, extra: str
) -> None:
    # `agentloop ui` without the ui extra printed a ModuleNotFoundError traceback for jinja2.
    done = _agentloop([command], workdir, pre=f"import sys; sys.modules[{module!r}] = None")
    _assert_clear_failure(done, f"pip install 'agentloop[{extra}]'")
    assert done.returncode == 2


def test_verbose_before_a_subcommand_with_its_own_parser(workdir: Path) -> None:
    # `agentloop -v runs list` was an argparse error ("unrecognized arguments: list ...").
    done = _agentloop(["-v", "runs", "list", "--journal", "missing.db"], workdir)
    _assert_clear_failure(done, "no journal at missing.db")
    assert "unrecognized arguments" not in done.stderr


# (arguments, what the message must say). FLUX_BASE_URL points at the fake router.
BAD_ARGS: list[tuple[list[str], str]] = [
    ([], "the following arguments are required: COMMAND"),
    (["bogus"], "invalid choice: 'bogus'"),
    (["demo", "--bogus"], "unrecognized arguments: --bogus"),
    (["--bogus"], "unrecognized option '--bogus' before the command"),  # was "COMMAND required"
    (["-v", "--bogus=1", "demo"], "unrecognized option '--bogus' before the command"),
    (["run"], "the following arguments are required: prompt"),
    (["run", "--max-steps", "0", "hi"], "--max-steps must be an integer >= 1"),
    (["run", "--max-steps", "-1", "hi"], "--max-steps must be an integer >= 1"),
    (["run", "--max-steps", "lots", "hi"], "invalid int value: 'lots'"),
    (["run", "--model", "", "hi"], "--model must be a non-empty string"),
    (
        ["run", "--base-url", "api.fluxrouter.ai", "hi"],
        "(--base-url or $FLUX_BASE_URL) must start with http:// or https://",
    ),
    (["run", "--run-id", "", "hi"], "--run-id must be a non-empty str"),
    (["run", "--tool", "goodtools", "hi"], "given as module:attribute"),
    (["run", "--tool", "nosuchmodule:x", "hi"], "No module named 'nosuchmodule'"),
    (["run", "--tool", "goodtools:nope", "hi"], "has no attribute 'nope'"),
    (["run", "--tool", "synerr:broken", "hi"], "importing 'synerr' raised SyntaxError"),
    (["run", "--tool", "importerr:x", "hi"], "importing 'importerr' raised RuntimeError: import-time boom"),
    (["run", "--tool", "goodtools:registry", "--tool", "goodtools:registry", "hi"], "already registered"),
    (["run", "--journal", "/proc/no/such.db", "hi"], "cannot open journal"),
    (["runs"], "the following arguments are required"),
    (["runs", "show", "nope", "--journal", "missing.db"], "no journal at missing.db"),
    (["runs", "delete"], "the following arguments are required: run_id"),
    (["runs", "bogus"], "invalid choice: 'bogus'"),
]


def _answer(request: RecordedRequest) -> Reply:
    return text("done")


# One interpreter runs the invocations in turn, each as `python -c "...main()"` would (its exit
# status, what it printed, a traceback if an exception escaped): a fresh interpreter apiece cost
# ~0.3 s of CPU each (its imports) for what the command line does in milliseconds.
_IN_TURN = """
import contextlib, io, json, sys, traceback
from agentloop.cli import main
done = []
for args in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(args)
        except SystemExit as e:  # what the interpreter makes of it at exit
            code = e.code if isinstance(e.code, int) or e.code is None else 1
            if isinstance(e.code, str):
                print(e.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
            code = 1
    done.append({"returncode": code or 0, "stdout": out.getvalue(), "stderr": err.getvalue()})
print(json.dumps(done))
"""


def _agentloop_in_turn(many: list[list[str]], cwd: Path, base_url: str, *, pre: str = "") -> list[Any]:
    """`agentloop ARGS` for each of `many`, in one subprocess (see `_IN_TURN`); `pre` runs first."""
    done = subprocess.run(
        [sys.executable, "-c", pre + "\n" + _IN_TURN, json.dumps(many)],
        cwd=cwd,
        env=_env(base_url),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    results = [SimpleNamespace(**r) for r in json.loads(done.stdout)]
    assert len(results) == len(many)
    return results


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the command picks its own loop
@pytest.mark.anyio
async def test_every_bad_invocation_is_a_clear_message_and_a_non_zero_status(workdir: Path) -> None:
    async with FakeFluxRouter(_answer, api_key=KEY) as router:
        many = [args for args, _ in BAD_ARGS]
        results = await anyio.to_thread.run_sync(_agentloop_in_turn, many, workdir, router.base_url)
        for (args, says), done in zip(BAD_ARGS, results, strict=True):
            try:
                _assert_clear_failure(done, says)
            except AssertionError as e:
                raise AssertionError(f"agentloop {' '.join(args)}: {e}") from None


def test_the_invocations_in_turn_see_what_a_process_of_its_own_sees(workdir: Path) -> None:
    """The shared process above must not hide a failure: an exception escaping `main` is a
    traceback and status 1 there, as in a process of its own, and the next invocation still runs."""
    escape = "import agentloop.cli as c; c._run_command = lambda argv: 1 / 0 if argv == ['demo'] else 0"
    many = [["demo"], ["--version"], ["runs", "list", "--journal", "missing.db"]]
    crashed, version, missing = _agentloop_in_turn(many, workdir, "http://127.0.0.1:9/v1", pre=escape)
    assert crashed.returncode == 1 and "Traceback" in crashed.stderr and "ZeroDivisionError" in crashed.stderr
    with pytest.raises(AssertionError):
        _assert_clear_failure(crashed)
    assert version.returncode == 0
    assert missing.returncode != 0 and "no journal at missing.db" in missing.stderr


def _blocking_model(request: RecordedRequest) -> Reply:
    return tool_calls(call("block", {"text": "a"}))  # every step calls the tool that never returns


def _interrupt(args: list[str], cwd: Path, base_url: str) -> tuple[int, str]:
    """Start `agentloop ARGS`, press Ctrl-C once the blocking tool runs, wait for the exit."""
    proc = subprocess.Popen(
        [str(BIN / "agentloop"), *args],
        cwd=cwd,
        env=_env(base_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # the tool says so when it runs
            if "block started" in line:
                break
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)  # a hang is the bug; 60 s is not a timing claim
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_ctrl_c_during_a_thread_tool_exits_at_once_and_resume_too(workdir: Path) -> None:
    # Ctrl-C while a `def` tool ran left `agentloop run` waiting for that thread at interpreter
    # exit (forever, for a stuck tool); `agentloop runs resume` printed a traceback.
    run = ["run", "--tool", "goodtools:registry", "--journal", "runs.db", "--run-id", "r1", "hi"]
    resume = ["runs", "resume", "r1", "--journal", "runs.db", "--tool", "goodtools:registry"]
    async with FakeFluxRouter(_blocking_model, api_key=KEY) as router:
        code, err = await anyio.to_thread.run_sync(_interrupt, run, workdir, router.base_url)
        assert (code, "Traceback" in err) == (130, False), err
        assert "interrupted" in err
        code, err = await anyio.to_thread.run_sync(_interrupt, resume, workdir, router.base_url)
    assert (code, "Traceback" in err) == (130, False), err
    assert "agentloop runs resume r1" in err  # what to do next
    assert KEY not in err

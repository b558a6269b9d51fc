"""The commands' errors say what to do on the command line, not in Python (polish4, item 2).

Before: `agentloop run` with no key said "pass FluxClient(api_key=...)", and `--tool mod:X` naming a
non-callable said "cannot register 42: a tool must be a callable" (neither the option nor the
reference); `agentloop worker --tool mod:function` called the function as a registry factory
(a TypeError traceback) and a non-callable among several `--tool`s was a traceback too.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from agentloop import ConfigurationError, SQLiteJournal
from agentloop.cli import main
from agentloop.testing import FakeFluxRouter, text

TESTS = Path(__file__).parent
PYTHON_SPEAK = ("FluxClient(", "Agent(", "api_key=", "Traceback")


def _no_python_advice(err: str) -> None:
    for phrase in PYTHON_SPEAK:
        assert phrase not in err, (phrase, err)


def test_run_without_a_key_says_how_to_give_it_to_the_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("FLUX_API_KEY", raising=False)
    assert main(["run", "hi"]) == 2
    err = capsys.readouterr().err
    assert "FLUX_API_KEY" in err and "export FLUX_API_KEY=" in err
    _no_python_advice(err)


def test_runs_resume_without_a_key_says_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "runs.db"
    db.touch()  # an empty journal: the key is checked before the run is looked up
    monkeypatch.delenv("FLUX_API_KEY", raising=False)
    assert main(["runs", "resume", "--journal", str(db), "--model", "m", "run-1"]) == 2
    err = capsys.readouterr().err
    assert "export FLUX_API_KEY=" in err
    _no_python_advice(err)


@pytest.mark.parametrize(
    ("spec", "kind"),
    [("agentloop:__version__", "str"), ("agentloop:__all__", "list"), ("agentloop.cli:_DELEGATED", "dict")],
)
def test_run_tool_naming_a_non_callable_names_the_reference_and_its_type(
    spec: str, kind: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FLUX_API_KEY", "sk-test-0000000000")
    monkeypatch.setenv("FLUX_BASE_URL", "http://127.0.0.1:9/v1")  # never reached: the tool is refused first
    assert main(["run", "--tool", spec, "hi"]) == 2
    err = capsys.readouterr().err
    assert f"--tool {spec!r}" in err and f"of type {kind}" in err and "MODULE:FUNCTION" in err
    _no_python_advice(err)


def test_a_long_non_callable_is_shown_cut(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FLUX_API_KEY", "sk-test-0000000000")
    assert main(["run", "--tool", "agentloop:__all__", "hi"]) == 2
    line = capsys.readouterr().err.strip()
    assert "..." in line and len(line) < 400  # __all__'s repr is thousands of characters


def test_base_url_with_credentials_names_the_option(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FLUX_API_KEY", "sk-test-0000000000")
    assert main(["run", "--base-url", "https://user:sk-secret@example.com/v1", "hi"]) == 2
    err = capsys.readouterr().err
    assert "--base-url" in err and "FLUX_API_KEY environment variable" in err
    assert "sk-secret" not in err
    _no_python_advice(err)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the command picks its own loop
@pytest.mark.anyio
async def test_a_refused_key_says_check_flux_api_key_not_fluxclient() -> None:
    """A 401 from the router, through the command as written (its own process: `main` runs a loop)."""
    import anyio

    async with FakeFluxRouter([text("never")], api_key="sk-right-key") as router:
        env = {**os.environ, "FLUX_API_KEY": "sk-wrong-key", "PYTHONPATH": str(TESTS)}
        cmd = [sys.executable, "-m", "agentloop.cli", "run", "--base-url", router.base_url, "hi"]
        proc = await anyio.run_process(cmd, env=env, check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    assert "AuthenticationError" in err and "FLUX_API_KEY environment variable" in err
    assert "sk-wrong-key" not in err
    _no_python_advice(err)


# --- agentloop worker (the temporal extra) -----------------------------------------------------------


def test_worker_refuses_a_non_callable_among_several_tools(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    temporal = pytest.importorskip("agentloop.temporal")
    monkeypatch.setenv("FLUX_API_KEY", "sk-test-0000000000")
    monkeypatch.syspath_prepend(str(TESTS))
    argv = ["--task-queue", "q", "--tool", "cli_tools:shout", "--tool", "agentloop:__version__"]
    assert temporal.worker_main(argv) == 2  # was a ToolDefinitionError traceback
    err = capsys.readouterr().err
    assert "--tool 'agentloop:__version__'" in err and "of type str" in err
    _no_python_advice(err)


def test_worker_without_a_key_says_flux_api_key_before_connecting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    temporal = pytest.importorskip("agentloop.temporal")
    monkeypatch.delenv("FLUX_API_KEY", raising=False)
    assert temporal.worker_main(["--task-queue", "q", "--tool", "agentloop:__version__"]) == 2
    err = capsys.readouterr().err
    assert "FLUX_API_KEY" in err
    _no_python_advice(err)


def test_worker_single_tool_function_is_a_tool_not_a_factory(monkeypatch: pytest.MonkeyPatch) -> None:
    temporal = pytest.importorskip("agentloop.temporal")
    monkeypatch.syspath_prepend(str(TESTS))
    tools = temporal.load_registry("cli_tools:shout")  # was shout() called as a factory: TypeError
    assert tools.names == ["shout"]
    with pytest.raises(ConfigurationError) as e:
        temporal.load_registry("agentloop:__version__")
    assert "'agentloop:__version__'" in str(e.value) and "of type str" in str(e.value)


# --- agentloop ui (the ui extra) -----------------------------------------------------------------------


def test_ui_allow_resume_without_a_key_says_so_at_start_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("starlette")
    db = tmp_path / "runs.db"
    SQLiteJournal(db).list_runs_sync()  # a journal (an empty file is refused as not one)
    monkeypatch.delenv("FLUX_API_KEY", raising=False)
    monkeypatch.syspath_prepend(str(TESTS))
    argv = ["ui", "--journal", str(db), "--port", "0", "--allow-resume", "--tools", "ui_runs:TOOLS"]
    assert (
        main(argv) == 1
    )  # before: it served, and the first resume in the page failed with FluxClient advice
    err = capsys.readouterr().err
    assert "--allow-resume needs an API key" in err and "FLUX_API_KEY" in err
    _no_python_advice(err)
    monkeypatch.setenv("FLUX_API_KEY", "sk-test-0000000000")
    assert main([*argv[:-1], "agentloop:__version__"]) == 1
    assert "names an object of type str, not a ToolRegistry" in capsys.readouterr().err

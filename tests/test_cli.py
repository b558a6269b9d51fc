"""The `agentloop` command: the offline demo and `run` against a fake router, as a user runs them."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from agentloop.cli import main
from agentloop.testing import FakeFluxRouter, call, text, tool_calls

TESTS = Path(__file__).parent


def test_demo_prints_the_transcript(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "user: What's the weather in Lisbon and Porto?" in out
    assert '→ get_weather({"city":"Lisbon"})' in out and '→ get_weather({"city":"Porto"})' in out
    assert "← get_weather ok" in out and '"temp_c":17' in out
    assert "assistant: Lisbon: 21 °C, clear" in out
    assert "final after 2 step(s), 2 tool call(s)" in out


def test_demo_json_events(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--json", "Weather in Tokyo?"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert events[0]["type"] == "RunStarted"
    assert events[-1]["type"] == "RunFinished"
    assert events[-1]["result"]["output"].startswith("Tokyo: 15")


@pytest.mark.anyio
async def test_run_against_a_router_in_a_subprocess() -> None:
    import anyio

    script = [tool_calls(call("shout", {"text": "hello"})), text("It says HELLO.")]
    async with FakeFluxRouter(script, api_key="sk-cli-test-key") as router:
        env = {**os.environ, "FLUX_API_KEY": "sk-cli-test-key", "PYTHONPATH": str(TESTS)}
        proc = await anyio.run_process(
            [
                sys.executable,
                "-m",
                "agentloop.cli",
                "run",
                "--base-url",
                router.base_url,
                "--tool",
                "cli_tools:shout",
                "--model",
                "flux-pinned-gpt-5",
                "Shout hello",
            ],
            env=env,
            check=False,
        )
    out = proc.stdout.decode()
    assert proc.returncode == 0, proc.stderr.decode()
    assert "← shout ok" in out and '"HELLO"' not in out and "HELLO" in out
    assert "It says HELLO." in out
    assert router.requests[0].json["model"] == "flux-pinned-gpt-5"
    assert "sk-cli-test-key" not in out + proc.stderr.decode()


def test_run_without_key_says_what_to_do(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("FLUX_API_KEY", raising=False)
    assert main(["run", "hi"]) == 2
    assert "FLUX_API_KEY" in capsys.readouterr().err


class _Terminal:
    """A text sink that says it is a terminal, so the CLI picks its live view."""

    def __init__(self) -> None:
        import io

        self.buffer = io.StringIO()

    def write(self, text: str) -> int:
        return self.buffer.write(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return True


def test_live_view_on_a_terminal() -> None:
    import anyio

    from agentloop import Agent, FluxClient
    from agentloop._demo import demo_tools  # internal unit under test
    from agentloop.cli import _print_run
    from agentloop.testing import FakeFluxRouter, weather_handler

    term = _Terminal()

    async def go() -> None:
        async with FakeFluxRouter(weather_handler) as router:
            async with FluxClient(base_url=router.base_url, api_key="demo-key") as client:
                await _print_run(Agent(client=client, tools=demo_tools()), "Weather in Paris?", False, term)  # type: ignore[arg-type]

    anyio.run(go)
    out = term.buffer.getvalue()
    assert "\x1b[" in out  # terminal control codes: the live status line was drawn
    assert "→ get_weather" in out and "← get_weather ok" in out
    assert "Paris: 12 °C, overcast" in out  # streamed text printed whole, not torn by redraws
    assert "final after 2 step(s)" in out


@pytest.mark.anyio
async def test_run_with_a_journal_then_runs_list_and_show(tmp_path: Path) -> None:
    import anyio

    journal = tmp_path / "runs.db"
    script = [tool_calls(call("shout", {"text": "hello"})), text("It says HELLO.")]
    async with FakeFluxRouter(script, api_key="sk-cli-test-key") as router:
        env = {**os.environ, "FLUX_API_KEY": "sk-cli-test-key", "PYTHONPATH": str(TESTS)}
        proc = await anyio.run_process(
            [
                sys.executable,
                "-m",
                "agentloop.cli",
                "run",
                "--base-url",
                router.base_url,
                "--tool",
                "cli_tools:shout",
                "--journal",
                str(journal),
                "--run-id",
                "run_cli_1",
                "Shout hello",
            ],
            env=env,
            check=False,
        )
    assert proc.returncode == 0, proc.stderr.decode()
    listed = await anyio.run_process(
        [sys.executable, "-m", "agentloop.cli", "runs", "--journal", str(journal), "list"]
    )
    assert "run_cli_1" in listed.stdout.decode()
    shown = await anyio.run_process(
        [sys.executable, "-m", "agentloop.cli", "runs", "--journal", str(journal), "show", "run_cli_1"]
    )
    transcript = shown.stdout.decode()
    assert "shout" in transcript and "HELLO" in transcript and "It says HELLO." in transcript


def test_run_with_an_unloadable_tool_says_which(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FLUX_API_KEY", "sk-test-0000000000")
    assert main(["run", "--tool", "no_such_module:fn", "hi"]) == 2
    assert "cannot load the tool 'no_such_module:fn'" in capsys.readouterr().err
    assert main(["run", "--tool", "nocolon", "hi"]) == 2
    assert "module:attribute" in capsys.readouterr().err

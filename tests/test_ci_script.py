"""`.ci/run` runs exactly the README's test command (then the lint checks); the two cannot drift."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[1]


def readme_test_command() -> str:
    block = re.search(r"## The two commands.*?```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert block, "README.md lost its 'The two commands' section"
    commands = [line for line in block.group(1).splitlines() if line and not line.startswith("#")]
    assert len(commands) == 2, commands
    return commands[1]


def test_ci_runs_the_readme_test_command_as_written() -> None:
    script = (ROOT / ".ci" / "run").read_text()
    command = readme_test_command()
    assert "pytest" in command
    lines = [line for line in script.splitlines() if command in line]
    assert len(lines) == 1, f"{command!r} must appear once in .ci/run"
    # run as written; piping it (to keep its closing line) must not hide its exit status
    assert "set -euo pipefail" in script


def test_ci_runs_the_checks_the_readme_names() -> None:
    script = (ROOT / ".ci" / "run").read_text()
    for check in (
        ".venv/bin/ruff check .",
        ".venv/bin/ruff format --check .",
        ".venv/bin/mypy",
        ".venv/bin/lint-imports",
    ):
        assert check in script

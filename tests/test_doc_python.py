"""Every ```python block of README.md and docs/*.md runs as written, offline (#13's rule for code).

The blocks are collected, not copied. How a block runs is decided by what the doc itself says
just above its fence, so a reader sees it too:

- nothing: the block runs on its own, in a fresh module namespace;
- `<!-- continues -->`: it runs in the namespace the previous runnable block of the page left
  (the page builds on itself there, e.g. it uses the Quick start's `tools`);
- `<!-- fragment: why -->`: an excerpt or a reference listing (placeholders, `...`, peer code).
  It is compiled, and its imports of `agentloop` names are executed, so a renamed API still
  fails here; nothing else of it runs;
- a block that defines `test_...` functions is a pytest file: it is written to a file and
  pytest runs it (agentloop's plugin gives `fake_router` / `flux_client`, as for a user).

Runnable blocks run like code typed into `python -m asyncio` or a notebook: a top-level `await`
or `async with` is allowed (the README's snippets are written that way). Each page's blocks run
in one subprocess, in a temporary directory, with FLUX_API_KEY and FLUX_BASE_URL pointing at a
fake FluxRouter on loopback (the weather model of the demo when `get_weather` is offered, else
the answer "done"), exactly what a user's environment variables would point at.

A page that has python blocks must have at least one runnable block: all-fragment pages would
make this test pass vacuously.
"""

from __future__ import annotations

import ast
import functools
import json
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from agentloop.testing import FakeFluxRouter, RecordedRequest, Reply, text, weather_handler

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
KEY = "sk-doc-python-key"
FENCE = re.compile(r"^( *)```python\n(.*?)^\1```", re.S | re.M)  # also inside list items
MARKER = re.compile(r"<!--\s*(fragment|continues)\b\s*:?\s*(.*?)\s*-->")


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    code: str
    kind: str  # "run" | "fragment" | "pytest"
    continues: bool
    reason: str

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def _marker(source: str, start: int) -> tuple[str, str] | None:
    """The `<!-- ... -->` marker on the last non-blank line above a fence, if any."""
    above = [ln for ln in source[:start].splitlines() if ln.strip()]
    m = MARKER.fullmatch(above[-1].strip()) if above else None
    return (m.group(1), m.group(2)) if m else None


def collect() -> list[Block]:
    blocks = []
    for md in PAGES:
        source = md.read_text()
        for m in FENCE.finditer(source):
            code = textwrap.dedent(m.group(2))
            marker = _marker(source, m.start())
            if marker and marker[0] == "fragment":
                kind = "fragment"
            elif re.search(r"^(async )?def test_", code, re.M):
                kind = "pytest"
            else:
                kind = "run"
            blocks.append(
                Block(
                    page=str(md.relative_to(ROOT)),
                    line=source.count("\n", 0, m.start()) + 1,
                    code=code,
                    kind=kind,
                    continues=bool(marker and marker[0] == "continues"),
                    reason=marker[1] if marker else "",
                )
            )
    return blocks


BLOCKS = collect()
PAGES_WITH_CODE = sorted({b.page for b in BLOCKS})


def test_the_collection_finds_the_documented_python() -> None:
    # The collector itself: an empty collection would let every other test here pass vacuously.
    assert len(BLOCKS) >= 25
    assert {"README.md", "docs/tools.md", "docs/recipes.md"} <= set(PAGES_WITH_CODE)
    for b in BLOCKS:
        if b.kind == "fragment":
            assert b.reason, f"{b.where}: a fragment marker must say why (<!-- fragment: why -->)"


@pytest.mark.parametrize("page", PAGES_WITH_CODE)
def test_every_page_with_python_has_a_runnable_block(page: str) -> None:
    kinds = [b.kind for b in BLOCKS if b.page == page]
    assert set(kinds) - {"fragment"}, f"{page}: all {len(kinds)} python blocks are fragments"


def _imports_of_agentloop(tree: ast.Module) -> ast.Module:
    keep = [
        node
        for node in ast.walk(tree)
        if (isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "agentloop")
        or (isinstance(node, ast.Import) and all(a.name.split(".")[0] == "agentloop" for a in node.names))
    ]
    return ast.Module(body=keep, type_ignores=[])  # type: ignore[arg-type]


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.kind == "fragment"], ids=lambda b: b.where)
def test_fragments_compile_and_their_agentloop_imports_exist(block: Block) -> None:
    tree = compile(block.code, block.where, "exec", ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    assert isinstance(tree, ast.Module)
    exec(compile(_imports_of_agentloop(tree), block.where, "exec"), {})


# Runs the blocks of one page, given as JSON on stdin, in order (see the module docstring).
RUNNER = r"""
import ast, inspect, json, sys, traceback, types
import anyio.from_thread

blocks = json.load(sys.stdin)
module = None
# One event loop for the page's top-level awaits, as in a notebook: a client made in one block
# is used in the next. A block that calls anyio.run itself runs on the main thread.
with anyio.from_thread.start_blocking_portal() as portal:
    for i, b in enumerate(blocks):
        if module is None or not b["continues"]:
            module = types.ModuleType(f"doc_block_{i}")  # a real module: type hints resolve in it
            sys.modules[module.__name__] = module
        try:
            code = compile(b["code"], b["where"], "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
            if code.co_flags & inspect.CO_COROUTINE:
                portal.call(lambda: eval(code, module.__dict__))
            else:
                exec(code, module.__dict__)
        except BaseException:
            print(f"FAILED {b['where']}", file=sys.stderr)
            traceback.print_exc()
            sys.exit(1)
        print(f"ran {b['where']}")
"""


def _answer(request: RecordedRequest) -> Reply:
    body = request.json if isinstance(request.json, dict) else {}
    names = {((t.get("function") or t).get("name")) for t in body.get("tools") or [] if isinstance(t, dict)}
    return weather_handler(request) if "get_weather" in names else text("done")


def _env(base_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLUX_", "AGENTLOOP_", "TEMPORAL_"))}
    env.pop("PYTHONPATH", None)
    env.update(FLUX_API_KEY=KEY, FLUX_BASE_URL=base_url)
    return env


async def _subprocess(
    argv: list[str], cwd: Path, stdin: str, base_url: str
) -> subprocess.CompletedProcess[str]:
    run = functools.partial(
        subprocess.run,
        argv,
        cwd=cwd,
        env=_env(base_url),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return await anyio.to_thread.run_sync(run)


RUNNABLE_PAGES = sorted({b.page for b in BLOCKS if b.kind == "run"})


# One backend: the blocks run in a subprocess (each picks its own loop); this loop only hosts
# the fake router.
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("page", RUNNABLE_PAGES)
@pytest.mark.anyio
async def test_python_blocks_run_as_written(page: str, tmp_path: Path) -> None:
    blocks = [b for b in BLOCKS if b.page == page and b.kind == "run"]
    payload = json.dumps([{"code": b.code, "where": b.where, "continues": b.continues} for b in blocks])
    async with FakeFluxRouter(_answer, api_key=KEY) as router:
        done = await _subprocess([sys.executable, "-c", RUNNER], tmp_path, payload, router.base_url)
    assert done.returncode == 0, f"{page}:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    ran = [ln for ln in done.stdout.splitlines() if ln.startswith("ran ")]
    assert ran == [f"ran {b.where}" for b in blocks], done.stdout[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-4000:]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_pytest_blocks_pass_under_pytest(tmp_path: Path) -> None:
    blocks = [b for b in BLOCKS if b.kind == "pytest"]
    assert blocks, "the README's and recipes' test examples are no longer collected"
    names = []
    for b in blocks:
        names.append("test_" + re.sub(r"\W", "_", b.where.replace(".md", "")) + ".py")
        (tmp_path / names[-1]).write_text(b.code)
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA", str(tmp_path)]
    async with FakeFluxRouter(_answer, api_key=KEY) as router:
        done = await _subprocess(argv, tmp_path, "", router.base_url)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    passed = {ln.split()[1].split("::")[0] for ln in done.stdout.splitlines() if ln.startswith("PASSED ")}
    assert passed == set(names), done.stdout[-2000:]  # every block's tests ran (and none failed: rc 0)

"""`import agentloop` does no work for the parts a program may never use.

Structural, not a timing (issue #19's import-time goal is measured in benchmarks/bench_import.py):
a fresh interpreter imports agentloop and reports what it loaded and started. An optional part
(an integration, the sandbox, logging, a transport library) is imported when it is used, never by
a bare `import agentloop`.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import agentloop

# Never loaded by a bare `import agentloop` (a module or any submodule of it).
OPTIONAL = [
    "aiohttp",  # the asyncio transport: built when a FluxClient is entered
    "structlog",  # only when logging is configured
    "opentelemetry",
    "temporalio",
    "mcp",
    "docstring_parser",  # at the first tool registration
    "hypothesis",
    "uvicorn",
    "agentloop.testing",
    "agentloop.temporal",
    "agentloop.mcp",
    "agentloop.otel",
    "agentloop.ui",
    "agentloop.cli",
    "agentloop._sandbox",  # when a tool asks for a sandbox
    "anyio._backends",  # the event loop's backend: when something runs
]

# httpx (and its pool's h11): loaded when a program first names FluxClient, never by a bare import,
# by the sandbox's fork server (which makes no HTTP request) or by `agentloop runs|doctor|--help`.
HTTP = ["httpx", "httpcore", "h11"]

# httpx's own command line and what it imports when click is installed (import-linter brings it
# here): loaded with httpx, so never by a process that has no reason to load httpx.
HTTPX_CLI = ["httpx._main", "click", "rich", "pygments"]

# Loaded only by a feature used later (registration, the journal, output validation, picking a
# transport): each was imported at `import agentloop` until this round.
LATER = ["jsonschema", "referencing", "re2", "sqlite3", "asyncio"]

_PROBE = """
import json, sys, threading
before = set(sys.modules)
{statement}
print(json.dumps({{"modules": sorted(set(sys.modules) - before), "threads": threading.active_count()}}))
"""


def probe(statement: str) -> dict[str, object]:
    """What a fresh interpreter loaded and started running `statement`."""
    code = _PROBE.format(statement=statement)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result: dict[str, object] = json.loads(out.stdout)
    return result


def loads(modules: object, name: str) -> bool:
    assert isinstance(modules, list)
    return any(m == name or m.startswith(name + ".") for m in modules)


@pytest.fixture(scope="module")
def bare() -> dict[str, object]:
    return probe("import agentloop")


@pytest.mark.parametrize("name", OPTIONAL)
def test_a_bare_import_does_not_load_an_optional_part(bare: dict[str, object], name: str) -> None:
    assert not loads(bare["modules"], name)


@pytest.mark.parametrize("name", LATER)
def test_a_bare_import_does_not_load_what_registration_or_the_journal_need(
    bare: dict[str, object], name: str
) -> None:
    assert not loads(bare["modules"], name)


def test_the_probe_sees_what_an_import_loads() -> None:
    """The check above could pass by seeing nothing: the same probe sees what a feature loads."""
    used = probe("import agentloop.testing; import agentloop; agentloop.SQLiteJournal")
    assert loads(used["modules"], "agentloop.testing")
    assert loads(used["modules"], "sqlite3")
    assert loads(used["modules"], "agentloop._run.journal")


def test_a_bare_import_starts_no_thread(bare: dict[str, object]) -> None:
    assert bare["threads"] == 1


def test_the_everyday_names_load_nothing_optional() -> None:
    everyday = probe("from agentloop import Agent, FluxClient, ToolRegistry, RunContext, Limits")
    assert [n for n in OPTIONAL if loads(everyday["modules"], n)] == []


def test_every_public_name_is_listed_and_importable_in_a_fresh_interpreter() -> None:
    out = probe(
        "import agentloop\n"
        "listed = set(dir(agentloop))\n"
        "missing = [n for n in agentloop.__all__ if n not in listed]\n"
        "ns = {}\n"
        "exec('from agentloop import *', ns)\n"
        "assert missing == [], missing\n"
        "assert set(agentloop.__all__) - {'__version__'} <= set(ns), set(agentloop.__all__) - set(ns)\n"
        "wrong = [n for n in agentloop.__all__ if isinstance(ns.get(n), type) and ns[n].__module__ != 'agentloop']\n"
        "assert wrong == [], wrong\n"
    )
    assert isinstance(out["modules"], list)


def test_naming_one_journal_class_shows_all_of_them_as_agentloop() -> None:
    """Objects the journal returns (RunInfo, RunSummary) show as `agentloop.X` once the journal is used."""
    probe(
        "import sys, agentloop\n"
        "agentloop.SQLiteJournal\n"
        "journal = sys.modules['agentloop._run.journal']\n"
        "assert journal.RunInfo.__module__ == 'agentloop', journal.RunInfo.__module__\n"
        "assert journal.RunSummary.__module__ == 'agentloop', journal.RunSummary.__module__\n"
        "assert 'RunInfo' in vars(agentloop)\n"
    )


def test_an_unknown_name_is_an_attribute_error_that_names_it() -> None:
    with pytest.raises(AttributeError, match="'NoSuchThing'"):
        agentloop.NoSuchThing  # type: ignore[attr-defined]  # noqa: B018
    assert not hasattr(agentloop, "sqlite3")
    assert hasattr(agentloop, "SQLiteJournal")


@pytest.mark.parametrize("name", HTTP + HTTPX_CLI)
def test_a_bare_import_loads_no_http_library(bare: dict[str, object], name: str) -> None:
    assert not loads(bare["modules"], name)


def test_the_sandbox_fork_server_and_the_command_line_load_no_http_library() -> None:
    """The fork server imports what `_protocol.BOOT` imports; `agentloop runs|doctor` the CLI module."""
    from agentloop._sandbox._protocol import BOOT  # internal unit under test: what the host starts

    assert "from agentloop._sandbox._zygote import main" in BOOT  # the probe below imports the same
    loaded = probe("import agentloop._sandbox._zygote, agentloop.cli")["modules"]
    assert loads(loaded, "agentloop._sandbox._zygote")
    assert [n for n in HTTP + HTTPX_CLI if loads(loaded, n)] == []
    # nor the host's side of the sandbox (it starts the fork server; the fork server never needs it)
    assert [
        m for m in ("agentloop._sandbox._host", "agentloop._sandbox._roundtrip") if loads(loaded, m)
    ] == []


def test_agentloop_demo_loads_httpx_only_when_it_makes_a_client() -> None:
    """`agentloop demo` talks HTTP, so httpx loads there (and only there: see the probes above)."""
    probe(
        "import contextlib, io\n"
        "from agentloop.cli import main\n"
        "assert 'httpx' not in sys.modules\n"
        "with contextlib.redirect_stdout(io.StringIO()) as demo:\n"
        "    assert main(['demo']) == 0\n"
        "assert 'get_weather' in demo.getvalue(), demo.getvalue()\n"
        "assert 'httpx' in sys.modules\n"
    )

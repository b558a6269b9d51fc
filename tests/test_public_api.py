"""The public surface as a user meets it: names, module names, type hints, pickling, version."""

from __future__ import annotations

import importlib.metadata
import pickle
import re
import tomllib
import traceback
import typing
from pathlib import Path

import pytest

import agentloop

PUBLIC_CLASSES = [getattr(agentloop, n) for n in agentloop.__all__ if isinstance(getattr(agentloop, n), type)]


@pytest.mark.parametrize("cls", PUBLIC_CLASSES, ids=lambda c: c.__name__)
def test_public_classes_show_as_agentloop_and_keep_their_type_hints(cls: type) -> None:
    assert cls.__module__ == "agentloop"
    assert getattr(agentloop, cls.__name__) is cls
    typing.get_type_hints(cls)  # pydantic / FastAPI / cattrs resolve these; must not raise


def test_a_traceback_names_the_public_exception() -> None:
    try:
        agentloop.FluxClient(api_key="")
    except agentloop.ConfigurationError:
        text = traceback.format_exc()
    assert "agentloop.ConfigurationError: " in text
    assert "_exceptions" not in text.splitlines()[-1]


def test_public_exceptions_and_data_survive_pickling() -> None:
    err = agentloop.ConfigurationError("model must be a non-empty string")
    assert str(pickle.loads(pickle.dumps(err))) == str(err)
    usage = agentloop.Usage(requests=2, prompt_tokens=3, completion_tokens=4, total_tokens=7)
    assert pickle.loads(pickle.dumps(usage)) == usage


def test_the_version_is_written_once() -> None:
    assert importlib.metadata.version("agentloop") == agentloop.__version__
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]


def test_every_name_in_all_exists() -> None:
    missing = [n for n in agentloop.__all__ if not hasattr(agentloop, n)]
    assert missing == []


def _tree(cls: type, depth: int = 0) -> list[str]:
    extra = [b.__name__ for b in cls.__bases__[1:]]
    line = "    " * depth + cls.__name__ + (f"  (also {', '.join(extra)})" if extra else "")
    children = sorted(
        (c for c in cls.__subclasses__() if c.__module__ == "agentloop" and c.__bases__[0] is cls),
        key=lambda c: c.__name__,
    )
    return [line] + [row for c in children for row in _tree(c, depth + 1)]


def test_the_exception_tree_in_the_docs_is_the_real_one() -> None:
    import agentloop._exceptions as module

    doc = module.__doc__ or ""
    block = doc.split("The tree (a test keeps this picture equal to the classes)::\n\n", 1)[1].split(
        "\n\n", 1
    )[0]
    # each row: indentation, the class and its extra bases; then, after a gap, a comment
    rows = [re.match(r"    (\s*\w+(?:  \(also [^)]*\))?)", row) for row in block.splitlines()]
    drawn = [m.group(1) if m else "" for m in rows]
    assert drawn == _tree(agentloop.AgentloopError)


def test_the_exception_tree_in_the_readme_names_every_public_exception() -> None:
    # README's "Errors" tree had no AgentToolError or OutputValidationError: a reader catching
    # by the tree missed two ways a run ends (found by the outside-in review, round 3).
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    block = readme.split("```\nAgentloopError\n", 1)[1].split("```", 1)[0]
    drawn = {"AgentloopError", *re.findall(r"[├└]── (\w+)", block)}
    real = {row.split()[0] for row in _tree(agentloop.AgentloopError)}
    assert drawn == real

"""Outside-in review, round 4: a user's own test suite with agentloop's pytest fixtures, the way a
service's tests are usually written (pytest-asyncio's marker, or its auto mode beside anyio's).
Each case used to fail far from its cause; now it fails at setup saying what to change."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

USER_TEST = """
import pytest
from agentloop import Agent
from agentloop.testing import text


@pytest.mark.{marks}
async def test_my_agent(fake_router, flux_client):
    fake_router.add(text("Sunny."))
    result = await Agent(client=flux_client).run("Weather?")
    assert result.output == "Sunny."
"""


def _run(pytester: pytest.Pytester, marks: str) -> pytest.RunResult:
    """The user's file run by pytest in-process (one result per anyio backend the session's
    `anyio_backend` fixture gives: this suite's conftest gives two)."""
    pytester.makeini("[pytest]\nmarkers =\n    asyncio: pytest-asyncio's marker\n")
    pytester.makepyfile(test_user=USER_TEST.replace("{marks}", marks))
    return pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider", "-p", "no:xdist")


def test_the_fixtures_in_a_test_without_anyio_say_to_mark_it_anyio(pytester: pytest.Pytester) -> None:
    # was pytest's "requested an async fixture 'fake_router', with no plugin or hook that handled it"
    # (pytest-asyncio strict mode), or a pass then a teardown error "Attempted to exit cancel scope
    # in a different task than it was entered in" (auto mode)
    result = _run(pytester, "asyncio")
    assert set(result.parseoutcomes()) == {"errors"}
    result.stdout.fnmatch_lines(["*uses agentloop's fake_router and flux_client, which are anyio fixtures*"])


def test_a_test_marked_for_both_plugins_fails_at_setup_instead_of_hanging(pytester: pytest.Pytester) -> None:
    # with pytest-asyncio's asyncio_mode = auto, an anyio test is marked asyncio too: the fixtures
    # ran in anyio's loop and the test in pytest-asyncio's, and the request hung until its timeout
    result = _run(pytester, "anyio\n@pytest.mark.asyncio")
    assert set(result.parseoutcomes()) == {"errors"}
    result.stdout.fnmatch_lines(["*run by both anyio's and pytest-asyncio's plugins*asyncio_mode = strict*"])


def test_the_documented_anyio_marker_still_runs(pytester: pytest.Pytester) -> None:
    assert set(_run(pytester, "anyio").parseoutcomes()) == {"passed"}

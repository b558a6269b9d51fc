"""`require_approval` (the Agent's predicate over calls) and `requires_approval` (a tool's flag)
differ by one letter. Where agentloop reads the option itself (`tools.tool(**options)`,
`start_run(**per_run)`, the value's type), the wrong one is refused with an error that names the
right one; where Python's own signature refuses an unknown keyword, its TypeError stands (no
aliases are added).

Before: `@tools.tool(require_approval=True)` listed the options without saying which was meant,
`Agent(require_approval=True)` said only "must be a callable", and
`register(fn, requires_approval=predicate)` only "must be True or False".
"""

from __future__ import annotations

import pytest

from agentloop import Agent, ConfigurationError, ToolDefinitionError, ToolRegistry, build_tool
from agentloop.testing import ScriptedModel


def lookup(key: str) -> str:
    return key


def predicate(tool_name: str, arguments: dict[str, object]) -> bool:
    return tool_name == "pay"


def test_the_agents_spelling_on_a_tool_names_the_tools() -> None:
    with pytest.raises(ToolDefinitionError) as info:
        ToolRegistry().tool(require_approval=True)
    message = str(info.value)
    assert "unknown option 'require_approval'" in message
    assert "requires_approval=True" in message and "Agent's predicate" in message


def test_another_misspelt_tool_option_gets_the_closest() -> None:
    with pytest.raises(ToolDefinitionError, match=r"did you mean 'requires_approval'\?"):
        ToolRegistry().tool(requires_aproval=True)
    with pytest.raises(ToolDefinitionError, match=r"did you mean 'idempotent'\?"):
        ToolRegistry().tool(idempotant=True)


@pytest.mark.parametrize("flag", [True, False])
def test_the_tools_flag_given_to_the_agent_names_the_tools_option(flag: bool) -> None:
    with pytest.raises(ConfigurationError) as info:
        Agent(client=ScriptedModel([]), require_approval=flag)  # type: ignore[arg-type]
    message = str(info.value)
    assert f"got {flag!r}" in message and "register the tool with requires_approval=True" in message


@pytest.mark.parametrize("how", ["register", "tool", "build_tool"])
def test_a_predicate_given_to_a_tool_names_the_agents_option(how: str) -> None:
    tools = ToolRegistry()
    with pytest.raises(ToolDefinitionError) as info:
        if how == "register":
            tools.register(lookup, requires_approval=predicate)  # type: ignore[arg-type]
        elif how == "tool":
            tools.tool(requires_approval=predicate)(lookup)
        else:
            build_tool(lookup, requires_approval=predicate)  # type: ignore[arg-type]
    message = str(info.value)
    assert "requires_approval must be True or False" in message and "Agent(require_approval=fn)" in message


def test_where_pythons_signature_refuses_the_keyword_its_type_error_stands() -> None:
    # No **kwargs there: Python names the keyword it does not know; agentloop adds no alias.
    with pytest.raises(TypeError, match="unexpected keyword argument 'requires_approval'"):
        Agent(client=ScriptedModel([]), requires_approval=predicate)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument 'require_approval'"):
        ToolRegistry().register(lookup, require_approval=True)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument 'require_approval'"):
        build_tool(lookup, require_approval=True)  # type: ignore[call-arg]


@pytest.mark.anyio
@pytest.mark.parametrize("option", ["require_approval", "requires_approval"])
async def test_start_run_says_where_approval_is_set(option: str) -> None:
    pytest.importorskip("temporalio", reason="temporalio is not installed: pip install 'agentloop[temporal]'")
    from agentloop.temporal import start_run

    agent = Agent(client=ScriptedModel([]))
    with pytest.raises(ConfigurationError) as info:
        await start_run(None, agent, "go", task_queue="q", **{option: predicate})  # type: ignore[arg-type]
    message = str(info.value)
    assert f"unknown options ['{option}']" in message
    assert "Agent(require_approval=fn)" in message and "requires_approval=True" in message

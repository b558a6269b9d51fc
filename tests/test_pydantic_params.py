"""pydantic models as tool parameters: the model's own JSON schema and validation (issue #13).

agentloop does not depend on pydantic: it looks at `sys.modules` only, so pydantic is used when
an annotation is a pydantic model (and is then imported already), never imported by agentloop.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from jsonschema import Draft202012Validator

pydantic = pytest.importorskip("pydantic")
from pydantic import BaseModel, Field  # noqa: E402

from agentloop import Agent, FluxClient, ToolRegistry  # noqa: E402
from agentloop.testing import FakeFluxRouter, ScriptedModel, call, text, tool_calls  # noqa: E402

pytestmark = pytest.mark.anyio


class Address(BaseModel):
    city: str
    zip_code: str = Field(pattern=r"^\d{4}$")


class Order(BaseModel):
    sku: str
    quantity: int = Field(ge=1)
    ship_to: Address | None = None


received: list[Any] = []


def place(order: Order) -> str:
    received.append(order)
    return f"{order.quantity}x{order.sku}"


def place_many(orders: list[Order], note: str = "") -> int:
    received.append(orders)
    return sum(o.quantity for o in orders)


def maybe(order: Order | None = None) -> str:
    received.append(order)
    return "none" if order is None else order.sku


def test_schema_is_the_models_own_with_refs_inlined() -> None:
    tools = ToolRegistry()
    tool = tools.register(place)
    schema = tool.parameters["properties"]["order"]
    Draft202012Validator.check_schema(tool.parameters)
    assert "$ref" not in str(tool.parameters) and "$defs" not in str(tool.parameters)
    assert schema["properties"]["quantity"] == Order.model_json_schema()["properties"]["quantity"]
    ship_to = schema["properties"]["ship_to"]["anyOf"][0]
    assert ship_to["properties"]["zip_code"]["pattern"] == r"^\d{4}$"  # Address, inlined from $defs


async def test_pydantic_parameters_arrive_as_models_over_http() -> None:
    received.clear()
    tools = ToolRegistry()
    for fn in (place, place_many, maybe):
        tools.register(fn)
    order = {"sku": "A1", "quantity": 2, "ship_to": {"city": "Porto", "zip_code": "4000"}}
    script = [
        tool_calls(
            call("place", {"order": order}),
            call("place_many", {"orders": [order, {"sku": "B", "quantity": 1}]}),
            call("maybe", {"order": None}),
            call("maybe", {"order": {"sku": "C", "quantity": 5}}),
        ),
        text("done"),
    ]
    async with (
        FakeFluxRouter(script) as router,
        FluxClient(base_url=router.base_url, api_key="test") as client,
    ):
        result = await Agent(client=client, tools=tools).run("go")
    assert [r.content for r in result.tool_calls] == ["2xA1", "3", "none", "C"]
    by_type = [type(x).__name__ for x in received]
    assert sorted(by_type) == ["NoneType", "Order", "Order", "list"]
    placed = next(x for x in received if isinstance(x, Order) and x.sku == "A1")
    assert isinstance(placed.ship_to, Address) and placed.ship_to.city == "Porto"


async def test_the_models_validation_is_fed_back_not_raised() -> None:
    tools = ToolRegistry()
    tools.register(place)
    model = ScriptedModel(
        [
            tool_calls(
                call("place", {"order": {"sku": "A", "quantity": 0}}),  # ge=1: the schema says so too
                call(
                    "place",
                    {"order": {"sku": "A", "quantity": 1, "ship_to": {"city": "x", "zip_code": "12"}}},
                ),
            ),
            text("ok"),
        ]
    )
    result = await Agent(client=model, tools=tools).run("go")
    assert [r.status for r in result.tool_calls] == ["invalid_arguments", "invalid_arguments"]
    assert all(r.content.startswith("Invalid arguments for tool 'place'") for r in result.tool_calls)


def test_recursive_pydantic_model_is_a_def_and_a_ref() -> None:  # was refused (see test_schema_types.py)
    class Node(BaseModel):
        name: str
        children: list[Node] = []

    Node.model_rebuild()

    def walk(tree: Node) -> None: ...

    params = ToolRegistry().register(walk).parameters
    assert params["$defs"]["Node"]["properties"]["children"]["items"] == {"$ref": "#/$defs/Node"}


def test_agentloop_does_not_import_pydantic() -> None:
    code = (
        "import sys, agentloop\n"
        "from agentloop import ToolRegistry\n"
        "def f(x: int, y: list[str] | None = None) -> None: ...\n"
        "ToolRegistry().register(f)\n"
        "assert 'pydantic' not in sys.modules, 'agentloop imported pydantic'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)

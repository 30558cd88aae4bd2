"""A user's Python function as a tool: its schema from its type hints, its description
from its docstring, its arguments validated by decoding, sync and async calls, the
idempotency key, the deadline and the output (``actors/tools/function.py``)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Annotated, Literal

import anyio
import msgspec
import pytest
from warden.actors.errors import ToolError
from warden.actors.tools import (
    FunctionTool,
    ToolContext,
    ToolDeclaration,
    load_function_tool,
    registry_for,
)
from warden.actors.workspace import Workspace
from warden.config import SandboxSettings, ToolSettings

from tests.actors.tools.user_modules import write_module

pytestmark = pytest.mark.anyio

SHOP = '''
from __future__ import annotations

import asyncio
import threading
from typing import Annotated, Literal

import msgspec

CALLS: list[dict[str, object]] = []
THREADS: list[int] = []


def refund(
    order_id: str,
    amount: Annotated[float, msgspec.Meta(gt=0, le=100, description="US dollars")],
    reason: Literal["damaged", "late"] = "late",
    idempotency_key: str = "",
) -> dict[str, object]:
    """Refund part of an order.

    The money goes back to the card it came from."""
    THREADS.append(threading.get_ident())
    CALLS.append({"order_id": order_id, "amount": amount, "reason": reason,
                  "key": idempotency_key})
    return {"refunded": amount, "order": order_id}


def refund_done(order_id: str, amount: float, reason: str = "late",
                idempotency_key: str = "") -> str | None:
    """Did the refund of this key happen?"""
    done = any(call["key"] == idempotency_key for call in CALLS)
    return f"refunded {amount}" if done else None


def refund_preview(order_id: str, amount: float, reason: str = "late") -> str:
    """What a refund would do."""
    return f"would refund {amount} on {order_id}"


async def lookup(order_id: str) -> str:
    """Look an order up."""
    await asyncio.sleep(0)
    return f"order {order_id}: shipped"


async def slow(seconds: float) -> str:
    """Sleep."""
    await asyncio.sleep(seconds)
    return "woke"


def blocking(seconds: float) -> str:
    """Block a thread."""
    threading.Event().wait(seconds)
    return "woke"


def fails(text: str) -> str:
    """Always refuses."""
    raise ValueError(f"no refunds for {text}")


def returns(kind: str) -> object:
    """Returns a value of the kind asked."""
    return {"str": "plain text", "none": None, "list": [1, "two"], "int": 7,
            "set": {object()}}[kind]
'''


@pytest.fixture
def shop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    return write_module(tmp_path, monkeypatch, SHOP)


def tool(shop: str, function: str, **settings: object) -> FunctionTool:
    return load_function_tool(function, ToolSettings(function=f"{shop}:{function}",
                                                     **settings))  # type: ignore[arg-type]


def context(ws: Workspace, key: str = "r-1/0/0/0/0") -> ToolContext:
    return ToolContext(workspace=ws, sandbox=SandboxSettings(timeout_s=20.0), role="code",
                       run_id="r-1", step=0, call_index=0, idempotency_key=key)


def test_the_schema_comes_from_the_type_hints_defaults_and_annotated_meta(shop: str) -> None:
    schema = tool(shop, "refund").spec().input_schema
    assert schema["type"] == "object"
    assert schema["required"] == ["order_id", "amount"]
    assert schema["additionalProperties"] is False
    assert schema["properties"] == {
        "order_id": {"type": "string"},
        "amount": {"type": "number", "exclusiveMinimum": 0, "maximum": 100,
                   "description": "US dollars"},
        "reason": {"enum": ["damaged", "late"], "default": "late"},
    }


def test_the_idempotency_key_parameter_is_not_in_the_schema(shop: str) -> None:
    assert "idempotency_key" not in tool(shop, "refund").spec().input_schema["properties"]


def test_the_description_is_the_docstring(shop: str) -> None:
    spec = tool(shop, "refund").spec()
    assert spec.name == "refund"
    assert spec.description == (
        "Refund part of an order.\n\nThe money goes back to the card it came from.")


async def test_a_sync_function_runs_in_a_worker_thread_with_its_decoded_arguments(
    shop: str, ws: Workspace,
) -> None:
    import importlib

    module = importlib.import_module(shop)
    output = await tool(shop, "refund").invoke({"order_id": "o-1", "amount": 12}, context(ws))
    assert msgspec.json.decode(output) == {"refunded": 12.0, "order": "o-1"}
    assert module.CALLS[-1] == {"order_id": "o-1", "amount": 12.0, "reason": "late",
                                "key": "r-1/0/0/0/0"}
    assert module.THREADS[-1] != threading.get_ident()


async def test_a_function_asking_for_the_idempotency_key_gets_the_calls_key(
    shop: str, ws: Workspace,
) -> None:
    import importlib

    await tool(shop, "refund").invoke({"order_id": "o-1", "amount": 1}, context(ws, "k-42"))
    assert importlib.import_module(shop).CALLS[-1]["key"] == "k-42"


async def test_an_async_function_is_awaited(shop: str, ws: Workspace) -> None:
    assert await tool(shop, "lookup").invoke({"order_id": "o-9"}, context(ws)) == (
        "order o-9: shipped")


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"order_id": "o-1", "amount": "12"}, "$.amount"),           # wrong type
        ({"order_id": "o-1", "amount": 500}, "$.amount"),            # past its bound
        ({"order_id": "o-1", "amount": 5, "reason": "bored"}, "$.reason"),  # not a Literal
        ({"order_id": "o-1"}, "amount"),                             # missing
        ({"order_id": "o-1", "amount": 5, "currency": "EUR"}, "currency"),  # unknown
        ({"order_id": "o-1", "amount": 5, "idempotency_key": "forged"}, "idempotency_key"),
    ],
)
async def test_bad_arguments_are_refused_naming_the_field_and_nothing_is_called(
    shop: str, ws: Workspace, arguments: dict[str, object], named: str,
) -> None:
    import importlib

    calls = importlib.import_module(shop).CALLS
    before = len(calls)
    registry = registry_for({"refund": ToolSettings(function=f"{shop}:refund")})
    record = await registry.call("refund", arguments, context(ws), allowlist=["refund"])
    assert not record.ok
    assert "bad arguments" in record.output and named in record.output
    assert len(calls) == before


@pytest.mark.parametrize(
    ("kind", "output"),
    [("str", "plain text"), ("none", ""), ("list", '[1,"two"]'), ("int", "7")],
)
async def test_a_str_is_the_output_as_is_and_anything_else_its_json(
    shop: str, ws: Workspace, kind: str, output: str,
) -> None:
    assert await tool(shop, "returns").invoke({"kind": kind}, context(ws)) == output


async def test_a_value_that_is_not_json_is_a_tool_error(shop: str, ws: Workspace) -> None:
    with pytest.raises(ToolError, match="returned a set that is not JSON"):
        await tool(shop, "returns").invoke({"kind": "set"}, context(ws))


async def test_an_exception_of_the_function_is_a_tool_error_the_model_reads(
    shop: str, ws: Workspace,
) -> None:
    registry = registry_for({"fails": ToolSettings(function=f"{shop}:fails")})
    record = await registry.call("fails", {"text": "you"}, context(ws), allowlist=["fails"])
    assert not record.ok and not record.timed_out
    assert record.output == "tool 'fails': raised ValueError: no refunds for you"


@pytest.mark.parametrize("function", ["slow", "blocking"])
async def test_a_call_past_its_timeout_is_stopped_and_recorded_as_timed_out(
    shop: str, ws: Workspace, function: str,
) -> None:
    registry = registry_for({function: ToolSettings(function=f"{shop}:{function}",
                                                    timeout_s=0.2)})
    started = anyio.current_time()
    record = await registry.call(function, {"seconds": 5}, context(ws), allowlist=[function])
    assert record.timed_out and not record.ok
    assert "did not finish within 0.2 s" in record.output
    assert anyio.current_time() - started < 4  # not the 5 s it asked for


def test_the_declaration_carries_what_the_config_says(shop: str) -> None:
    registry = registry_for({"refund": ToolSettings(
        function=f"{shop}:refund", risk="high", side_effects=True, idempotent_by_key=False,
        reconcile=f"{shop}:refund_done", simulate=f"{shop}:refund_preview", timeout_s=20,
        trusted_output=False,
    )})
    assert registry.declaration("refund") == ToolDeclaration(
        name="refund", side_effects=True, idempotent_by_key=False, reconciles=True,
        check=False, risk="high", timeout_s=20.0, simulates=True, trusted_output=False,
    )


def test_the_cautious_defaults_apply_when_the_config_says_nothing(shop: str) -> None:
    declaration = registry_for(
        {"lookup": ToolSettings(function=f"{shop}:lookup")}).declaration("lookup")
    assert (declaration.risk, declaration.side_effects, declaration.idempotent_by_key,
            declaration.reconciles, declaration.simulates, declaration.timeout_s,
            declaration.trusted_output) == ("medium", True, False, False, False, 30.0, True)


async def test_reconcile_tells_whether_the_call_of_a_key_acted(shop: str, ws: Workspace) -> None:
    registry = registry_for({"refund": ToolSettings(
        function=f"{shop}:refund", reconcile=f"{shop}:refund_done")})
    arguments = {"order_id": "o-7", "amount": 3}
    assert await registry.reconcile("refund", arguments, context(ws, "k-never")) is None
    await registry.call("refund", arguments, context(ws, "k-once"), allowlist=["refund"])
    record = await registry.reconcile("refund", arguments, context(ws, "k-once"))
    assert record is not None and record.output == "refunded 3.0"


async def test_simulate_answers_without_calling_the_function(shop: str, ws: Workspace) -> None:
    import importlib

    calls = importlib.import_module(shop).CALLS
    refund = tool(shop, "refund", simulate=f"{shop}:refund_preview")
    assert await refund.simulate({"order_id": "o-2", "amount": 4}, context(ws)) == (
        "would refund 4.0 on o-2")
    assert calls == []


def test_user_tools_sit_beside_the_built_in_ones_and_are_allowlisted_by_name(shop: str) -> None:
    registry = registry_for({"lookup": ToolSettings(function=f"{shop}:lookup")})
    assert {"lookup", "read_file", "ledger_append"} <= set(registry.names())
    assert [s.name for s in registry.specs(["read_file", "lookup"])] == ["read_file", "lookup"]


def test_annotation_types_of_every_json_kind_are_supported() -> None:
    from warden.actors.tools import arguments_struct

    def rich(a: int, b: bool, c: list[int], d: dict[str, float], e: str | None = None,
             f: Literal["x", "y"] = "x", g: Annotated[int, msgspec.Meta(ge=0)] = 0) -> str:
        """Every kind."""
        return ""

    schema = msgspec.json.schema(arguments_struct("rich", rich))
    properties = schema["$defs"]["rich"]["properties"]
    assert set(properties) == set("abcdefg")


async def test_the_registry_simulates_a_function_tool_through_its_simulate_hook(
    shop: str, ws: Workspace
) -> None:
    import importlib

    calls = importlib.import_module(shop).CALLS
    registry = registry_for({"refund": ToolSettings(function=f"{shop}:refund",
                                                    simulate=f"{shop}:refund_preview"),
                             "lookup": ToolSettings(function=f"{shop}:lookup")})
    arguments = {"order_id": "o-3", "amount": 5}

    simulated = await registry.simulate("refund", arguments, context(ws, "dry-k"),
                                        allowlist=["refund", "lookup"])
    without = await registry.simulate("lookup", {"order_id": "o-3"}, context(ws, "dry-k"),
                                      allowlist=["refund", "lookup"])

    assert (simulated.ok, simulated.output) == (True, "would refund 5.0 on o-3")
    assert (without.ok, without.output) == (False, "tool 'lookup' cannot simulate a call")
    assert calls == []

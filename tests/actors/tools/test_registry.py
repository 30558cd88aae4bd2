"""The registry refuses, validates, runs and records: the one door of ``registry.py``."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import anyio
import msgspec
import pytest
from warden.actors.errors import ToolError
from warden.actors.tools import ToolBase, ToolContext, ToolRegistry, default_registry, input_schema
from warden.actors.workspace import Workspace

from tests.actors.tools.support import ALL_TOOLS, call, context

DEFAULTS = Path(__file__).parents[3] / "config" / "defaults.toml"


# -- specs ----------------------------------------------------------------------------


def test_specs_are_inlined_object_schemas_without_refs() -> None:
    specs = default_registry().specs(ALL_TOOLS)
    assert [spec.name for spec in specs] == ALL_TOOLS
    for spec in specs:
        text = json.dumps(spec.input_schema)
        assert "$ref" not in text
        assert "$defs" not in text
        assert spec.input_schema["type"] == "object"
        assert spec.input_schema["additionalProperties"] is False
        assert spec.description


def test_specs_follow_the_allowlist() -> None:
    registry = default_registry()
    assert [s.name for s in registry.specs(["read_file", "grep"])] == ["read_file", "grep"]
    with pytest.raises(ValueError, match="unknown tools \\['rm_rf'\\]"):
        registry.specs(["read_file", "rm_rf"])


def test_every_shipped_role_allowlist_is_served() -> None:
    roles = tomllib.loads(DEFAULTS.read_text())["roles"]
    registry = default_registry()
    for role in roles.values():
        assert [spec.name for spec in registry.specs(role["tools"])] == role["tools"]


class Inner(msgspec.Struct):
    x: int


class Outer(msgspec.Struct, forbid_unknown_fields=True):
    inner: Inner
    many: list[Inner]


def test_nested_structs_are_inlined() -> None:
    schema = input_schema(Outer)
    assert "$ref" not in json.dumps(schema)
    properties = schema["properties"]
    assert isinstance(properties, dict)
    assert properties["inner"]["properties"] == {"x": {"type": "integer"}}


# -- the registry's contract ------------------------------------------------------------


@pytest.mark.anyio
async def test_a_tool_outside_the_allowlist_is_refused(ws: Workspace) -> None:
    registry = default_registry()
    ctx = context(ws, role="research")
    record = await registry.call(
        "write_file",
        {"path": "x.txt", "content": "x"},
        ctx,
        allowlist=["list_files", "read_file", "grep"],
    )
    assert not record.ok
    assert record.output == "tool 'write_file': not in the allowlist of role 'research'"
    assert not (ws.root / "x.txt").exists()


@pytest.mark.anyio
async def test_an_allowlisted_but_unknown_tool_is_a_tool_error(ws: Workspace) -> None:
    record = await default_registry().call("rm_rf", {}, context(ws), allowlist=["rm_rf"])
    assert not record.ok
    assert record.output.startswith("tool 'rm_rf': no such tool; known: ['echo', 'grep', ")


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({}, "Object missing required field `path`"),
        ({"path": 7}, "Expected `str`, got `int` - at `$.path`"),
        ({"path": "a.txt", "mode": "r"}, "Object contains unknown field `mode`"),
        ({"path": "a.txt", "max_bytes": 0}, "Expected `int` >= 1 - at `$.max_bytes`"),
    ],
)
@pytest.mark.anyio
async def test_arguments_are_validated_naming_the_field(
    ws: Workspace, arguments: dict[str, object], expected: str
) -> None:
    record = await call(ws, "read_file", arguments)
    assert not record.ok
    assert record.output == f"tool 'read_file': bad arguments: {expected}"


@pytest.mark.anyio
async def test_a_record_says_what_was_called_and_how_long_it_took(ws: Workspace) -> None:
    record = await call(ws, "list_files", {})
    assert record.name == "list_files"
    assert record.arguments == {}
    assert record.ok
    assert record.duration_ms >= 0.0


class Echo(msgspec.Struct, forbid_unknown_fields=True):
    value: str = ""


class Misbehaving(ToolBase[Echo]):
    """Does what its ``value`` says, to exercise the registry."""

    name = "misbehave"
    description = "test double"
    Arguments = Echo

    async def run(self, args: Echo, ctx: ToolContext) -> str:
        match args.value:
            case "tool-error":
                raise ToolError(self.name, "asked to fail")
            case "crash":
                raise RuntimeError("a bug in the tool")
            case "not-a-str":
                return 42  # type: ignore[return-value]
            case "hang":
                await anyio.sleep_forever()
        return args.value


def misbehaving() -> ToolRegistry:
    return ToolRegistry([Misbehaving()], max_output_bytes=10, timeout_grace_s=0.0)


@pytest.mark.anyio
async def test_a_tool_error_is_returned_to_the_model(ws: Workspace) -> None:
    record = await call(ws, "misbehave", {"value": "tool-error"}, registry=misbehaving())
    assert (record.ok, record.output) == (False, "tool 'misbehave': asked to fail")


@pytest.mark.anyio
async def test_any_other_exception_is_a_crash(ws: Workspace) -> None:
    with pytest.raises(RuntimeError, match="a bug in the tool"):
        await call(ws, "misbehave", {"value": "crash"}, registry=misbehaving())


@pytest.mark.anyio
async def test_output_that_is_not_a_str_is_a_crash(ws: Workspace) -> None:
    with pytest.raises(TypeError, match="returned int, not str"):
        await call(ws, "misbehave", {"value": "not-a-str"}, registry=misbehaving())


@pytest.mark.anyio
async def test_output_is_bounded_with_a_marker(ws: Workspace) -> None:
    record = await call(ws, "misbehave", {"value": "x" * 25}, registry=misbehaving())
    assert record.ok
    assert record.output == "x" * 10 + "\n[... output truncated: 10 of 25 bytes shown]"


@pytest.mark.anyio
async def test_a_tool_past_its_deadline_is_recorded_as_timed_out(ws: Workspace) -> None:
    record = await call(ws, "misbehave", {"value": "hang"}, registry=misbehaving(), timeout_s=0.05)
    assert (record.ok, record.timed_out) == (False, True)
    assert record.output == "tool 'misbehave': did not finish within 0.05 s"


@pytest.mark.anyio
async def test_a_call_that_ends_in_time_is_not_timed_out(ws: Workspace) -> None:
    answered = await call(ws, "misbehave", {"value": "fine"}, registry=misbehaving())
    refused = await call(ws, "misbehave", {"value": "tool-error"}, registry=misbehaving())
    assert (answered.ok, answered.timed_out) == (True, False)
    assert (refused.ok, refused.timed_out) == (False, False)

"""The registry refuses, validates, runs and records; the six tools do what they say."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from pathlib import Path

import anyio
import msgspec
import pytest
from warden.actors.errors import ToolError
from warden.actors.tools import (
    ToolBase,
    ToolContext,
    ToolRegistry,
    default_registry,
    input_schema,
)
from warden.actors.workspace import Workspace
from warden.bus.wire import ToolCallRecord
from warden.config.settings import SandboxSettings

ALL_TOOLS = ["list_files", "read_file", "grep", "write_file", "run_python", "run_tests"]
DEFAULTS = Path(__file__).parents[2] / "config" / "defaults.toml"



@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    root = tmp_path / "ws"
    root.mkdir()
    return Workspace(root)


def context(ws: Workspace, *, role: str = "code", timeout_s: float = 20.0) -> ToolContext:
    return ToolContext(
        workspace=ws,
        sandbox=SandboxSettings(timeout_s=timeout_s),
        role=role,
        run_id="r-1",
        step=0,
        call_index=0,
    )


async def call(
    ws: Workspace,
    name: str,
    arguments: Mapping[str, object],
    *,
    registry: ToolRegistry | None = None,
    timeout_s: float = 20.0,
) -> ToolCallRecord:
    """Call ``name`` with every tool of the registry allowed."""
    registry = registry or default_registry()
    ctx = context(ws, timeout_s=timeout_s)
    return await registry.call(name, dict(arguments), ctx, allowlist=registry.names())


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


def test_durability_declarations() -> None:
    registry = default_registry()
    declared = {
        name: (registry.get(name).side_effects, registry.get(name).idempotent_by_key)
        for name in ALL_TOOLS
    }
    assert declared == {
        "list_files": (False, True),
        "read_file": (False, True),
        "grep": (False, True),
        "write_file": (True, True),
        "run_python": (True, False),
        "run_tests": (True, False),
    }


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
    assert "no such tool" in record.output


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
async def test_a_tool_past_its_deadline_is_a_retryable_tool_error(ws: Workspace) -> None:
    record = await call(ws, "misbehave", {"value": "hang"}, registry=misbehaving(), timeout_s=0.05)
    assert not record.ok
    assert record.output == "tool 'misbehave': did not finish within 0.05 s"


# -- file tools -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_write_then_read_round_trips(ws: Workspace) -> None:
    content = "def greet():\n    return 'héllo'\n"
    written = await call(ws, "write_file", {"path": "pkg/greet.py", "content": content})
    assert written.ok
    assert written.output == f"wrote {len(content.encode())} bytes to pkg/greet.py"
    read = await call(ws, "read_file", {"path": "pkg/greet.py"})
    assert (read.ok, read.output) == (True, content)


@pytest.mark.anyio
async def test_read_file_says_when_it_truncated(ws: Workspace) -> None:
    (ws.root / "big.txt").write_text("z" * 100)
    record = await call(ws, "read_file", {"path": "big.txt", "max_bytes": 10})
    assert record.output == "z" * 10 + "\n[... truncated: 10 of 100 bytes shown]"


@pytest.mark.parametrize("path", ["../x", "/etc/passwd", "a/../../x"])
@pytest.mark.parametrize("tool", ["read_file", "write_file", "list_files", "grep", "run_tests"])
@pytest.mark.anyio
async def test_escapes_are_refused_by_every_path_tool(ws: Workspace, tool: str, path: str) -> None:
    arguments: dict[str, object] = {"path": path}
    if tool == "write_file":
        arguments["content"] = "x"
    if tool == "grep":
        arguments["pattern"] = "root"
    record = await call(ws, tool, arguments)
    assert not record.ok
    assert record.output == f"tool {tool!r}: path {path!r} is outside the run's workspace"


@pytest.mark.anyio
async def test_a_symlink_out_is_refused(ws: Workspace, tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("secret-x")
    (ws.root / "link.txt").symlink_to(tmp_path / "secret.txt")
    record = await call(ws, "read_file", {"path": "link.txt"})
    assert not record.ok
    assert "outside the run's workspace" in record.output
    found = await call(ws, "grep", {"pattern": "secret"})
    assert found.output == "(no matches)"


@pytest.mark.anyio
async def test_list_files_lists_recursively(ws: Workspace) -> None:
    (ws.root / "src").mkdir()
    (ws.root / "src" / "app.py").write_text("")
    (ws.root / "README.md").write_text("")
    record = await call(ws, "list_files", {})
    assert record.output == "README.md\nsrc/\nsrc/app.py"
    empty = await call(ws, "list_files", {"path": "src/.."})
    assert empty.ok
    missing = await call(ws, "list_files", {"path": "nope"})
    assert (missing.ok, missing.output) == (False, "tool 'list_files': path 'nope' does not exist")


@pytest.mark.anyio
async def test_grep_finds_matching_lines(ws: Workspace) -> None:
    (ws.root / "a.py").write_text("import os\ndef alpha():\n    pass\n")
    (ws.root / "pkg").mkdir()
    (ws.root / "pkg" / "b.py").write_text("def beta():\n    return 1\n")
    (ws.root / "blob.bin").write_bytes(b"\0def binary")
    record = await call(ws, "grep", {"pattern": r"def \w+\("})
    assert record.ok
    assert record.output == "a.py:2: def alpha():\npkg/b.py:1: def beta():"
    narrowed = await call(ws, "grep", {"pattern": "def", "path": "pkg"})
    assert narrowed.output == "pkg/b.py:1: def beta():"
    none = await call(ws, "grep", {"pattern": "gamma"})
    assert none.output == "(no matches)"


@pytest.mark.anyio
async def test_grep_with_a_bad_regex_is_bad_arguments(ws: Workspace) -> None:
    record = await call(ws, "grep", {"pattern": "def ("})
    assert not record.ok
    assert record.output.startswith("tool 'grep': bad arguments: pattern 'def (' is not a valid")


@pytest.mark.anyio
async def test_grep_bounds_its_matches(ws: Workspace) -> None:
    (ws.root / "many.txt").write_text("hit\n" * 500)
    record = await call(ws, "grep", {"pattern": "hit"})
    lines = record.output.splitlines()
    assert len(lines) == 201
    assert lines[-1] == "[... more matches; the first 200 are shown]"


# -- code tools -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_run_python_runs_a_file_with_arguments(ws: Workspace) -> None:
    (ws.root / "hello.py").write_text("import sys\nprint('hello', *sys.argv[1:])\n")
    record = await call(ws, "run_python", {"path": "hello.py", "args": ["a", "b"]})
    assert (record.ok, record.output) == (True, "exit code: 0\n--- stdout ---\nhello a b")


@pytest.mark.anyio
async def test_run_python_runs_code_and_reports_a_failure(ws: Workspace) -> None:
    record = await call(ws, "run_python", {"code": "print('before')\nraise SystemExit(2)"})
    assert (record.ok, record.output) == (True, "exit code: 2\n--- stdout ---\nbefore")
    crash = await call(ws, "run_python", {"code": "1/0"})
    assert crash.output.startswith("exit code: 1\n--- stderr ---\nTraceback")
    assert "ZeroDivisionError" in crash.output


@pytest.mark.parametrize("arguments", [{}, {"path": "a.py", "code": "pass"}])
@pytest.mark.anyio
async def test_run_python_needs_exactly_one_of_path_and_code(
    ws: Workspace, arguments: dict[str, object]
) -> None:
    record = await call(ws, "run_python", arguments)
    assert not record.ok
    assert (
        record.output == "tool 'run_python': bad arguments: give exactly one of `path` and `code`"
    )


@pytest.mark.anyio
async def test_run_python_past_the_sandbox_timeout_is_a_sandbox_error(ws: Workspace) -> None:
    record = await call(ws, "run_python", {"code": "while True: pass"}, timeout_s=1.0)
    assert not record.ok
    assert record.output.startswith("tool 'run_python': timed out after 1.")
    assert "exit code: -9" in record.output


@pytest.mark.anyio
async def test_run_tests_reports_pass_for_passing_tests(ws: Workspace) -> None:
    (ws.root / "test_ok.py").write_text("def test_ok():\n    assert 1 + 1 == 2\n")
    record = await call(ws, "run_tests", {})
    assert record.ok
    first, second, *_ = record.output.splitlines()
    assert (first, second) == ("PASS", "exit code: 0")
    assert "1 passed" in record.output


@pytest.mark.anyio
async def test_run_tests_reports_fail_for_failing_tests(ws: Workspace) -> None:
    (ws.root / "tests").mkdir()
    (ws.root / "tests" / "test_bad.py").write_text("def test_bad():\n    assert 1 + 1 == 3\n")
    record = await call(ws, "run_tests", {"path": "tests"})
    assert record.ok
    first, second, *_ = record.output.splitlines()
    assert (first, second) == ("FAIL", "exit code: 1")
    assert "1 failed" in record.output


@pytest.mark.anyio
async def test_echo_returns_its_text_and_refuses_other_arguments(ws: Workspace) -> None:
    record = await call(ws, "echo", {"text": "same 200 bytes"})
    assert (record.ok, record.output) == (True, "same 200 bytes")
    refused = await call(ws, "echo", {"text": "x", "extra": 1})
    assert not refused.ok and "extra" in refused.output

"""MCP servers as tools (``actors/tools/mcp.py``), against a real MCP server over stdio
written with the ``mcp`` SDK (``mcp_server.py``): listing, calling, errors, output,
deadlines, the environment a server gets, restart after its process is killed, and no
process left behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import mcp_types as types
import pytest
from warden.actors.errors import McpServerUnavailableError, ToolError, ToolTimeoutError
from warden.actors.tools import ToolContext, ToolDeclaration
from warden.actors.tools.mcp import McpTool, open_mcp_servers, render_result, restart_delay
from warden.actors.workspace import Workspace
from warden.config import (
    ConfigError,
    McpServerSettings,
    McpSettings,
    McpToolSettings,
    SandboxSettings,
)

pytestmark = pytest.mark.anyio

SERVER = Path(__file__).with_name("mcp_server.py")
COMMAND = [sys.executable, str(SERVER)]


def server_settings(**overrides: object) -> McpServerSettings:
    return McpServerSettings(command=COMMAND, **overrides)  # type: ignore[arg-type]


@asynccontextmanager
async def mcp_tools(restart_base_s: float = 0.05,
                    **servers: McpServerSettings) -> AsyncIterator[dict[str, McpTool]]:
    settings = McpSettings(servers=servers or {"t": server_settings()},
                           restart_base_s=restart_base_s, restart_max_s=1.0)
    async with open_mcp_servers(settings) as tools:
        yield {tool.name: tool for tool in tools}


@pytest.fixture
def ctx(ws: Workspace) -> ToolContext:
    return ToolContext(workspace=ws, sandbox=SandboxSettings(), role="research", run_id="r-1",
                       step=0, call_index=0)


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    with anyio.fail_after(timeout):
        while not predicate():  # noqa: ASYNC110 - a state another task changes
            await anyio.sleep(0.01)


async def test_a_servers_tools_are_listed_as_server_dot_tool_with_its_schemas() -> None:
    async with mcp_tools() as tools:
        assert sorted(tools) == ["t.add", "t.env", "t.fail", "t.picture", "t.pid", "t.shout",
                                 "t.slow", "t.tally"]
        spec = tools["t.add"].spec()
    assert spec.name == "t.add"
    assert spec.description == "Add two integers."
    assert spec.input_schema["required"] == ["a", "b"]
    assert spec.input_schema["properties"] == {"a": {"title": "A", "type": "integer"},
                                               "b": {"title": "B", "type": "integer"}}


async def test_declarations_default_to_the_cautious_ones_and_a_tool_table_overrides() -> None:
    server = server_settings(tools={"add": McpToolSettings(risk="low", side_effects=False,
                                                           trusted_output=True)})
    async with mcp_tools(t=server) as tools:
        add = ToolDeclaration.of(tools["t.add"])
        shout = ToolDeclaration.of(tools["t.shout"])
    assert (shout.risk, shout.side_effects, shout.trusted_output) == ("medium", True, False)
    assert (shout.idempotent_by_key, shout.reconciles, shout.simulates) == (False, False, False)
    assert (add.risk, add.side_effects, add.trusted_output) == ("low", False, True)


async def test_a_sync_and_an_async_tool_of_the_server_answer_their_text(
        ctx: ToolContext) -> None:
    async with mcp_tools() as tools:
        assert await tools["t.add"].invoke({"a": 2, "b": 40}, ctx) == "42"
        assert await tools["t.shout"].invoke({"text": "quiet"}, ctx) == "QUIET"


async def test_an_is_error_result_is_a_tool_error_carrying_its_text(ctx: ToolContext) -> None:
    async with mcp_tools() as tools:
        with pytest.raises(ToolError) as caught:
            await tools["t.fail"].invoke({"reason": "no refunds on sundays"}, ctx)
    assert str(caught.value).startswith("tool 't.fail': ")
    assert str(caught.value).endswith("refused: no refunds on sundays")


async def test_arguments_the_server_refuses_are_a_tool_error_naming_the_field(
        ctx: ToolContext) -> None:
    async with mcp_tools() as tools:
        with pytest.raises(ToolError, match=r"t\.add") as caught:
            await tools["t.add"].invoke({"a": 1}, ctx)
    assert "b" in str(caught.value) and "required" in str(caught.value).lower()


async def test_a_tool_gone_from_the_server_since_its_listing_is_a_tool_error(
        ctx: ToolContext) -> None:
    async with mcp_tools() as tools:
        gone = McpTool(tools["t.add"].server,
                       types.Tool(name="refund", input_schema={"type": "object"}), None)
        with pytest.raises(ToolError) as caught:
            await gone.invoke({}, ctx)
    assert str(caught.value) == "tool 't.refund': Unknown tool: refund"


async def test_blocks_other_than_text_are_described_and_texts_joined(ctx: ToolContext) -> None:
    async with mcp_tools() as tools:
        output = await tools["t.picture"].invoke({}, ctx)
    assert output == "[image image/png, 8 bytes base64, not shown]\na caption"


@pytest.mark.parametrize(("result", "text"), [
    (types.CallToolResult(content=[]), ""),
    (types.CallToolResult(content=[], structured_content={"b": 1, "a": [2]}), '{"a": [2], "b": 1}'),
    (types.CallToolResult(content=[types.TextContent(text="one"), types.TextContent(text="two")]),
     "one\ntwo"),
    (types.CallToolResult(content=[types.EmbeddedResource(
        resource=types.TextResourceContents(uri="file:///a.txt", text="inside"))]), "inside"),
    (types.CallToolResult(content=[types.ResourceLink(uri="file:///b.bin", name="b")]),
     "[resource link file:///b.bin (b)]"),
])
def test_render_result(result: types.CallToolResult, text: str) -> None:
    assert render_result(result) == text


@pytest.mark.parametrize(("failures", "delay"), [
    (1, 0.5), (2, 1.0), (3, 2.0), (7, 30.0), (10_000, 30.0),
])
def test_a_dead_server_is_restarted_after_a_doubling_wait_up_to_the_maximum(
        failures: int, delay: float) -> None:
    assert restart_delay(failures, base_s=0.5, max_s=30.0) == delay


async def test_a_call_past_the_tools_timeout_is_stopped_and_says_so(ctx: ToolContext) -> None:
    server = server_settings(tools={"slow": McpToolSettings(timeout_s=0.3)})
    async with mcp_tools(t=server) as tools:
        with pytest.raises(ToolTimeoutError, match=r"within 0\.3 s"):
            await tools["t.slow"].invoke({"seconds": 30}, ctx)
        assert await tools["t.add"].invoke({"a": 1, "b": 1}, ctx) == "2"  # still up


async def test_the_server_gets_its_env_and_none_of_the_daemons_secrets(
        ctx: ToolContext, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-secret-of-the-daemon")
    monkeypatch.setenv("WARDEN_NATS_PASSWORD", "nats-secret-of-the-daemon")
    server = server_settings(env={"TICKETS_DB": "/srv/tickets.db"})
    async with mcp_tools(t=server) as tools:
        env = tools["t.env"]
        assert await env.invoke({"name": "TICKETS_DB"}, ctx) == "/srv/tickets.db"
        assert await env.invoke({"name": "ANTHROPIC_API_KEY"}, ctx) == "<unset>"
        assert await env.invoke({"name": "WARDEN_NATS_PASSWORD"}, ctx) == "<unset>"
        assert await env.invoke({"name": "PATH"}, ctx) == os.environ["PATH"]


async def test_a_killed_server_fails_its_tools_fast_then_is_restarted(
        ctx: ToolContext) -> None:
    async with mcp_tools(restart_base_s=0.5) as tools:
        add, server = tools["t.add"], tools["t.add"].server
        first = int(await tools["t.pid"].invoke({}, ctx))
        os.kill(first, signal.SIGKILL)
        await wait_until(lambda: server.state == "restarting")
        with anyio.fail_after(0.5):  # fails fast: no waiting out a deadline
            with pytest.raises(McpServerUnavailableError,
                               match="MCP server 't' is restarting"):
                await add.invoke({"a": 1, "b": 2}, ctx)
        await wait_until(lambda: server.state == "up")
        assert await add.invoke({"a": 1, "b": 2}, ctx) == "3"
        second = int(await tools["t.pid"].invoke({}, ctx))
    assert second != first
    assert server.starts == 2


async def test_a_call_in_flight_when_the_server_dies_fails_as_restarting(
        ctx: ToolContext, tmp_path: Path) -> None:
    started = tmp_path / "started"
    async with mcp_tools(restart_base_s=0.5) as tools:
        pid = int(await tools["t.pid"].invoke({}, ctx))

        async def kill_once_started() -> None:
            await wait_until(started.exists)
            os.kill(pid, signal.SIGKILL)

        async with anyio.create_task_group() as group:
            group.start_soon(kill_once_started)
            with anyio.fail_after(10), pytest.raises(McpServerUnavailableError):
                await tools["t.slow"].invoke({"seconds": 60, "started": str(started)}, ctx)


async def test_leaving_the_context_stops_the_server_process(ctx: ToolContext) -> None:
    async with mcp_tools() as tools:
        pid = int(await tools["t.pid"].invoke({}, ctx))
        server = tools["t.pid"].server
    assert server.state == "stopped"
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_a_server_that_cannot_start_is_a_config_error_naming_it() -> None:
    missing = McpServerSettings(command=["/nonexistent/mcp-server"])
    with pytest.raises(ConfigError) as caught:
        async with mcp_tools(tickets=missing):
            pass
    assert caught.value.key == "mcp.servers.tickets"
    assert "cannot start or list its tools" in str(caught.value)


async def test_a_server_that_exits_at_once_is_a_config_error_naming_it() -> None:
    quits = McpServerSettings(command=[sys.executable, "-c", "pass"], timeout_s=10)
    with pytest.raises(ConfigError, match=r"mcp\.servers\.quits"):
        async with mcp_tools(t=server_settings(), quits=quits):
            pass


async def test_a_tool_table_naming_a_tool_the_server_lacks_is_a_config_error() -> None:
    server = server_settings(tools={"refund": McpToolSettings(risk="high")})
    with pytest.raises(ConfigError) as caught:
        async with mcp_tools(t=server):
            pass
    assert caught.value.key == "mcp.servers.t.tools.refund"
    assert "add, env, fail" in str(caught.value)


async def test_an_error_in_the_body_propagates_as_itself() -> None:
    with pytest.raises(KeyError):
        async with mcp_tools():
            raise KeyError("the body's own")


async def test_servers_not_kept_open_are_listed_then_stopped(ctx: ToolContext) -> None:
    settings = McpSettings(servers={"t": server_settings()})
    async with open_mcp_servers(settings, keep_open=False) as listed:
        tools = {tool.name: tool for tool in listed}
        assert tools["t.add"].server.state == "stopped"
        with pytest.raises(McpServerUnavailableError, match="'t' is stopped"):
            await tools["t.add"].invoke({"a": 1, "b": 2}, ctx)
    assert tools["t.add"].spec().description == "Add two integers."


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@asynccontextmanager
async def http_server(port: int) -> AsyncIterator[subprocess.Popen[bytes]]:
    """``mcp_server.py --http PORT``, entered once it accepts connections (within 20 s),
    killed and reaped by pid on the way out."""
    proc = subprocess.Popen([*COMMAND, "--http", str(port)],  # noqa: ASYNC220 - reaped below
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with anyio.fail_after(20):
            while True:
                try:
                    await (await anyio.connect_tcp("127.0.0.1", port)).aclose()
                    break
                except OSError:
                    await anyio.sleep(0.05)
        yield proc
    finally:
        proc.kill()
        await anyio.to_thread.run_sync(proc.wait, 10)


async def test_an_http_server_is_called_and_reconnected_after_it_comes_back(
        ctx: ToolContext) -> None:
    port = free_port()
    server = McpServerSettings(url=f"http://127.0.0.1:{port}/mcp", timeout_s=10)
    async with http_server(port) as first:
        settings = McpSettings(servers={"h": server}, restart_base_s=0.1, restart_max_s=0.5)
        async with open_mcp_servers(settings) as listed:
            tools = {tool.name: tool for tool in listed}
            assert await tools["h.add"].invoke({"a": 2, "b": 3}, ctx) == "5"
            first.kill()
            await anyio.to_thread.run_sync(first.wait, 10)
            with pytest.raises(McpServerUnavailableError, match="'h' is restarting"):
                await tools["h.add"].invoke({"a": 2, "b": 3}, ctx)
            async with http_server(port):
                await wait_until(lambda: tools["h.add"].server.state == "up", timeout=20)
                assert await tools["h.shout"].invoke({"text": "back"}, ctx) == "BACK"
    assert tools["h.add"].server.starts == 2

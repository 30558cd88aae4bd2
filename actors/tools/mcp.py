"""MCP servers as tools: one supervised client session per server, each of its tools a
``Tool`` named ``<server>.<tool>``, through the official ``mcp`` SDK.

The contract of ``open_mcp_servers`` (``[mcp.servers.*]``, ``config/mcp.py``):

- **start**: each server is started (``command``: a child process speaking MCP on its
  stdin/stdout; ``url``: streamable HTTP), its session initialized and its tools listed
  (every page), within its ``timeout_s``. A server that cannot start or list is a
  ``ConfigError`` naming ``mcp.servers.<name>`` (exit 2), and so is a
  ``[mcp.servers.<name>.tools.<tool>]`` table naming a tool the server does not list.
  The tools are fixed by that first listing;
- **tools**: ``<server>.<tool>`` with the server's input schema and description; their
  declarations are the tool's table, else the server's (cautious defaults: medium risk,
  side effects, untrusted output; never idempotent by key, no reconcile, no simulate);
- **environment**: a child gets ``env`` and the SDK's harmless defaults (``PATH``,
  ``HOME``, ...), never the daemon's environment (its API key, its NATS credentials);
- **supervision**: each session is owned by one task of the pool (``McpServer.run``) and
  kept open. A server that dies (its stdout ends; for HTTP, the transport fails) is
  started again after ``restart_base_s``, doubled after each start that fails, at most
  ``restart_max_s`` (a successful start resets it) -- a ``permanent`` child with backoff
  and no restart intensity: a server that stays down costs its own tools, never the
  worker that hosts them. Meanwhile its tools fail fast with
  ``McpServerUnavailableError`` ("MCP server 'x' is restarting"), a tool error the model
  reads; a call in flight when it dies fails the same way;
- **calls**: bounded by the tool's ``timeout_s`` (``ToolTimeoutError``); a result with
  ``isError`` is a ``ToolError`` carrying its text; an MCP error reply (unknown tool,
  bad arguments) or a malformed result is a ``ToolError``, never a crash. Output: the
  text blocks joined by newlines; other blocks described (``[image image/png, 120 bytes
  base64, not shown]``); no blocks but structured content: its JSON;
- **stop**: leaving the context closes every session; a child is asked to exit (stdin
  closed), then terminated, then killed (the SDK's shutdown), so no process outlives
  the worker that started it.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Literal, TextIO

import anyio
import mcp_types as types
import structlog
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectSendStream
from mcp import ClientSession, MCPError, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.message import SessionMessage
from warden.actors.errors import McpServerUnavailableError, ToolError, ToolTimeoutError
from warden.actors.tools.base import ToolContext
from warden.bus.wire import ToolSpec
from warden.config import ConfigError, McpServerSettings, McpSettings, McpToolSettings, Risk

__all__ = ("McpServer", "McpTool", "open_mcp_servers", "render_result", "restart_delay")

log = structlog.get_logger("warden.mcp")

LISTED_NAME = re.compile(r"[A-Za-z0-9_./-]{1,128}")
"""The tool names taken from a server (the MCP specification's advice); a tool listed
under any other name is left out, with a warning."""

ServerState = Literal["starting", "up", "restarting", "stopped"]


class McpServer:
    """One MCP server and its client session, kept open by ``run`` (the module docstring
    is the contract). ``call`` may be used from any task while ``run`` runs."""

    def __init__(self, name: str, settings: McpServerSettings, *, restart_base_s: float = 0.5,
                 restart_max_s: float = 30.0) -> None:
        self.name = name
        self.settings = settings
        self.restart_base_s = restart_base_s
        self.restart_max_s = restart_max_s
        self.state: ServerState = "starting"
        self.listed: list[types.Tool] = []
        self.starts = 0
        """Successful starts so far (1 after the first; each restart adds one)."""
        self._session: ClientSession | None = None
        self._lost = anyio.Event()

    def __repr__(self) -> str:
        return f"McpServer({self.name!r}, state={self.state!r}, starts={self.starts})"

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Start the server, list its tools, signal readiness, then keep it up until
        cancelled (restarting it when it dies). Raises ``ConfigError`` naming
        ``mcp.servers.<name>`` if the first start or listing fails; later failures are
        logged and retried with backoff."""
        try:
            await self._serve(task_status)
        finally:
            self._session = None
            self.state = "stopped"

    async def _serve(self, task_status: TaskStatus[None]) -> None:
        failures = 0
        while True:
            lost = self._lost = anyio.Event()
            up = False
            try:
                async with self._connect(lost) as session:
                    with anyio.fail_after(self.settings.timeout_s):
                        await session.initialize()
                        listed = await _list_tools(session) if self.starts == 0 else None
                    if listed is not None:
                        self.listed = listed
                    self._session, self.state, up = session, "up", True
                    self.starts += 1
                    failures = 0
                    log.info("mcp_server_started", server=self.name, starts=self.starts,
                             tools=len(self.listed))
                    if self.starts == 1:
                        task_status.started()
                    await lost.wait()
                    log.warning("mcp_server_lost", server=self.name)
            except Exception as exc:
                if self.starts == 0:
                    self.state = "stopped"
                    raise ConfigError(f"mcp.servers.{self.name}", self._target(),
                                      f"cannot start or list its tools: {_describe(exc)}"
                                      ) from None
                # A transport may fail by itself when its server dies (HTTP: the
                # connection refused), rather than end: the same loss.
                log.warning("mcp_server_lost" if up else "mcp_server_start_failed",
                            server=self.name, error=_describe(exc), failures=failures + 1)
            finally:
                self._session = None
                if self.state == "up":
                    self.state = "restarting"
            failures += 1
            await anyio.sleep(restart_delay(failures, base_s=self.restart_base_s,
                                            max_s=self.restart_max_s))

    def _target(self) -> object:
        return self.settings.command if self.settings.command is not None else self.settings.url

    @asynccontextmanager
    async def _connect(self, lost: anyio.Event) -> AsyncIterator[ClientSession]:
        """A session on a fresh transport; ``lost`` is set when the transport ends by
        itself (the server died) rather than by leaving this context."""
        async with AsyncExitStack() as stack:
            settings = self.settings
            if settings.command is not None:
                params = StdioServerParameters(
                    command=settings.command[0], args=settings.command[1:],
                    env=dict(settings.env), cwd=settings.cwd)
                read, write = await stack.enter_async_context(stdio_client(params, _errlog()))
            else:
                assert settings.url is not None  # check_mcp: exactly one of the two
                read, write = await stack.enter_async_context(
                    streamable_http_client(settings.url))
            watched_send, watched_read = anyio.create_memory_object_stream[
                SessionMessage | Exception](0)
            forwarding = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(forwarding.cancel_scope.cancel)
            forwarding.start_soon(self._forward, read, watched_send, lost)
            yield await stack.enter_async_context(ClientSession(watched_read, write))

    async def _forward(self, source: AsyncIterable[SessionMessage | Exception],
                       sink: MemoryObjectSendStream[SessionMessage | Exception],
                       lost: anyio.Event) -> None:
        # Between the transport and the session, to see the transport end: for stdio
        # that is the child's stdout closing, i.e. its death. (An HTTP transport whose
        # server is gone fails instead: ``run`` sees its context raise.)
        async with sink:
            try:
                async for item in source:
                    await sink.send(item)
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                pass
        self._lose(lost)

    def _lose(self, lost: anyio.Event) -> None:
        """Take the connection of ``lost`` as gone: its calls fail fast from now on, even
        before ``run`` has wound it down."""
        lost.set()
        if lost is self._lost and self.state == "up":
            self.state = "restarting"

    async def call(self, tool: str, arguments: Mapping[str, object], *,
                   timeout_s: float) -> types.CallToolResult:
        """Call ``tool`` (the server's own name for it); a cancellation point. Raises
        ``McpServerUnavailableError`` at once while the server is not up, or if it dies
        during the call; ``ToolTimeoutError`` past ``timeout_s``; ``ToolError`` for an MCP
        error reply or a result that is not one."""
        session = self._session
        qualified = f"{self.name}.{tool}"
        if session is None or self.state != "up":
            raise McpServerUnavailableError(qualified, self.name,
                                            stopped=self.state == "stopped")
        lost = self._lost
        result: types.CallToolResult | None = None
        with anyio.move_on_after(timeout_s) as deadline:
            try:
                result = await session.call_tool(tool, dict(arguments))
            except MCPError as exc:
                if lost.is_set() or exc.code == types.CONNECTION_CLOSED:
                    self._lose(lost)
                    raise McpServerUnavailableError(qualified, self.name) from None
                raise ToolError(qualified, f"MCP error {exc.code}: {exc.message}") from None
            except Exception as exc:  # a result the SDK refused, or a transport failure
                if lost.is_set():
                    raise McpServerUnavailableError(qualified, self.name) from None
                raise ToolError(qualified, f"MCP call failed: {_describe(exc)}") from None
        if deadline.cancelled_caught or result is None:
            raise ToolTimeoutError(qualified, f"did not finish within {timeout_s:g} s",
                                   timeout_s=timeout_s, retryable=True)
        return result

    def tools(self) -> list[McpTool]:
        """The server's tools as warden's, declared from its settings. Raises
        ``ConfigError`` for a ``tools.<tool>`` table naming a tool it did not list."""
        names = {listed.name for listed in self.listed}
        for declared in self.settings.tools:
            if declared not in names:
                raise ConfigError(f"mcp.servers.{self.name}.tools.{declared}", declared,
                                  f"the server lists no such tool; it lists: "
                                  f"{', '.join(sorted(names)) or 'none'}")
        tools = []
        for listed in self.listed:
            if not LISTED_NAME.fullmatch(listed.name):
                log.warning("mcp_tool_skipped", server=self.name, tool=listed.name[:200],
                            reason="name is not 1-128 of letters, digits, _ . / -")
                continue
            tools.append(McpTool(self, listed, self.settings.tools.get(listed.name)))
        return tools


class McpTool:
    """One tool of an MCP server, as a warden ``Tool`` named ``<server>.<tool>``."""

    check = False
    reconciles = False
    simulates = False
    idempotent_by_key = False

    def __init__(self, server: McpServer, listed: types.Tool,
                 declared: McpToolSettings | None) -> None:
        own = declared or McpToolSettings()
        defaults = server.settings
        self.server = server
        self.remote_name = listed.name
        self.name = f"{server.name}.{listed.name}"
        self.description = (listed.description or listed.title
                            or f"{listed.name}, a tool of the MCP server {server.name!r}")
        self.risk: Risk = own.risk if own.risk is not None else defaults.risk
        self.side_effects = (own.side_effects if own.side_effects is not None
                             else defaults.side_effects)
        self.trusted_output = (own.trusted_output if own.trusted_output is not None
                               else defaults.trusted_output)
        self.timeout_s: float | None = (own.timeout_s if own.timeout_s is not None
                                        else defaults.timeout_s)
        self._spec = ToolSpec(name=self.name, description=self.description,
                              input_schema=dict(listed.input_schema))

    def spec(self) -> ToolSpec:
        """The tool as the model sees it: the server's schema and description."""
        return self._spec

    async def invoke(self, arguments: Mapping[str, object], ctx: ToolContext) -> str:
        """Call the tool on its server; a cancellation point. Raises ``ToolError`` (its
        ``isError`` result, an MCP error), ``McpServerUnavailableError``,
        ``ToolTimeoutError``."""
        assert self.timeout_s is not None
        result = await self.server.call(self.remote_name, arguments, timeout_s=self.timeout_s)
        text = render_result(result)
        if result.is_error:
            raise ToolError(self.name, text or "failed (the server said no more)")
        return text

    async def reconcile(self, arguments: Mapping[str, object], ctx: ToolContext) -> str | None:
        """MCP has no way to ask whether an interrupted call acted."""
        raise ToolError(self.name, "has no reconcile hook")


def restart_delay(failures: int, *, base_s: float, max_s: float) -> float:
    """How long to wait before starting a server again after ``failures`` consecutive
    failures (its death counting as the first): ``base_s``, doubled per further failure,
    at most ``max_s``. Pure."""
    return min(max_s, base_s * 2 ** min(max(failures - 1, 0), 64))


def render_result(result: types.CallToolResult) -> str:
    """The text of a tool result: text blocks as they are, other blocks described, joined
    by newlines; no blocks but structured content: its JSON. Pure."""
    parts = [_render_block(block) for block in result.content]
    if not parts and result.structured_content is not None:
        return json.dumps(result.structured_content, sort_keys=True, default=str)
    return "\n".join(parts)


def _render_block(block: object) -> str:
    match block:
        case types.TextContent(text=text):
            return text
        case types.ImageContent(mime_type=mime, data=data) | types.AudioContent(
                mime_type=mime, data=data):
            return f"[{block.type} {mime}, {len(data)} bytes base64, not shown]"
        case types.EmbeddedResource(resource=types.TextResourceContents(text=text)):
            return text
        case types.EmbeddedResource(resource=resource):
            return f"[resource {resource.uri} ({resource.mime_type or 'binary'}), not shown]"
        case types.ResourceLink(uri=uri, name=name):
            return f"[resource link {uri} ({name})]"
    return f"[{getattr(block, 'type', type(block).__name__)} block, not shown]"


async def _list_tools(session: ClientSession) -> list[types.Tool]:
    tools: list[types.Tool] = []
    cursor: str | None = None
    while True:
        params = types.PaginatedRequestParams(cursor=cursor) if cursor else None
        page = await session.list_tools(params=params)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if not cursor:
            return tools


def _describe(exc: BaseException) -> str:
    """One line for an exception of any kind (a group: its first leaf)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, TimeoutError):
        return "timed out"
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _errlog() -> TextIO:
    """Where a child's stderr goes: the process's own stderr (a test's captured
    ``sys.stderr`` has no file descriptor to hand a child)."""
    stream = sys.__stderr__
    return stream if stream is not None else sys.stderr


@asynccontextmanager
async def open_mcp_servers(settings: McpSettings, *,
                           keep_open: bool = True) -> AsyncIterator[list[McpTool]]:
    """Start every server of ``settings`` and yield their tools; leaving the context stops
    them (the module docstring is the contract). ``keep_open=False``: stop them as soon
    as they are listed (a daemon whose workers run elsewhere needs only their specs and
    declarations; a call of their tools then fails at once). Blocks until every server
    is listed. Raises ``ConfigError`` naming the server (or the tool table) that failed."""
    if not settings.servers:
        yield []
    elif keep_open:
        async with _started(settings) as tools:
            yield tools
    else:
        async with _started(settings) as tools:
            pass
        yield tools


@asynccontextmanager
async def _started(settings: McpSettings) -> AsyncIterator[list[McpTool]]:
    error: Exception | None = None
    async with anyio.create_task_group() as group:
        try:
            servers: list[McpServer] = []
            for name, server_settings in settings.servers.items():
                server = McpServer(name, server_settings,
                                   restart_base_s=settings.restart_base_s,
                                   restart_max_s=settings.restart_max_s)
                await group.start(server.run, name=f"mcp.{name}")
                servers.append(server)
            yield [tool for server in servers for tool in server.tools()]
        except Exception as exc:
            # Raised after the task group exits, so callers see the error itself rather
            # than an ExceptionGroup (as supervision.py's supervisors do).
            error = exc
        finally:
            group.cancel_scope.cancel()
    if error is not None:
        raise error

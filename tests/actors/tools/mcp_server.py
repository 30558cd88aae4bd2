"""An MCP server for the tests, written with the official ``mcp`` SDK (``MCPServer``,
FastMCP before mcp 2), run over stdio: ``python tests/actors/tools/mcp_server.py``, or
over streamable HTTP at ``http://127.0.0.1:PORT/mcp`` with ``--http PORT``.

Its tools: ``add`` (two integers), ``shout`` (async, upper-cases a text), ``env`` (the
value of one of its environment variables, or ``<unset>``), ``pid`` (its process id, so
a test can kill it), ``fail`` (raises: an ``isError`` result), ``slow`` (sleeps),
``picture`` (an image block and a text block), ``tally`` (appends its argument to the
file named by ``MCP_TALLY``, then returns how many lines it holds: what a test counts
calls by).
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.utilities.types import Image
from mcp_types import ImageContent, TextContent

server = MCPServer("warden-test")


@server.tool()
def add(a: int, b: int) -> str:
    """Add two integers."""
    return str(a + b)


@server.tool()
async def shout(text: str) -> str:
    """Say it louder."""
    await asyncio.sleep(0)
    return text.upper()


@server.tool()
def env(name: str) -> str:
    """The value of one of the server's environment variables."""
    return os.environ.get(name, "<unset>")


@server.tool()
def pid() -> str:
    """The server's process id."""
    return str(os.getpid())


@server.tool()
def fail(reason: str) -> str:
    """Always fails, saying why."""
    raise ToolError(f"refused: {reason}")


@server.tool()
async def slow(seconds: float, started: str = "") -> str:
    """Sleep, then answer; first create the file ``started`` if named."""
    if started:
        Path(started).touch()  # noqa: ASYNC240 - a test server's marker
    await asyncio.sleep(seconds)
    return "woke up"


@server.tool()
def picture() -> list[ImageContent | TextContent]:
    """A one-pixel picture with a caption."""
    return [Image(data=b"\x89PNG\r\n", format="png").to_image_content(),
            TextContent(type="text", text="a caption")]


@server.tool()
def tally(item: str) -> str:
    """Write ``item`` down; answer how many items are written down."""
    path = Path(os.environ["MCP_TALLY"])
    with path.open("a") as file:
        file.write(item + "\n")
    return f"{len(path.read_text().splitlines())} items"


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--http":  # streamable HTTP on 127.0.0.1:PORT
        server.run("streamable-http", port=int(sys.argv[2]))
    else:
        server.run()

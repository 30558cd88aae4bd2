"""The tools a worker's model may call, and the registry that calls them.

- ``base.py``: what a tool is (``ToolContext``, the ``Tool`` protocol, ``ToolBase``,
  ``input_schema``) and its declarations (``ToolDeclaration``);
- ``registry.py``: ``ToolRegistry``, the one door a call goes through (its contract
  opens the module), ``truncate`` and ``default_registry``;
- ``function.py``: ``FunctionTool``, a user's Python function named in config as a
  tool (``load_function_tool``; ``registry_for`` adds them to warden's);
- ``mcp.py``: ``McpTool``, a tool of an MCP server (``[mcp.servers.*]``), and
  ``open_mcp_servers``, which keeps their client sessions open under supervision. Not
  imported here: the ``mcp`` SDK costs about 0.4 s of CPU to import, so it is imported
  only where servers are configured (``supervisor/preflight.py``);
- the tools warden ships, by concept: ``files.py`` (``list_files``, ``read_file``,
  ``grep``, ``write_file``), ``python.py`` (``run_python``, ``run_tests``), ``ledger.py``
  (``ledger_append``), ``echo.py`` (``echo``).
"""

from __future__ import annotations

from warden.actors.tools.base import (
    MAX_TOOL_OUTPUT_BYTES,
    Tool,
    ToolBase,
    ToolContext,
    ToolDeclaration,
    WorkspacePath,
    input_schema,
)
from warden.actors.tools.echo import Echo
from warden.actors.tools.files import Grep, ListFiles, ReadFile, WriteFile
from warden.actors.tools.function import FunctionTool, arguments_struct, load_function_tool
from warden.actors.tools.ledger import LedgerAppend
from warden.actors.tools.python import RunPython, RunTests
from warden.actors.tools.registry import (
    TIMEOUT_GRACE_S,
    ToolRegistry,
    default_registry,
    registry_for,
    truncate,
)

__all__ = (
    "MAX_TOOL_OUTPUT_BYTES",
    "TIMEOUT_GRACE_S",
    "Echo",
    "FunctionTool",
    "Grep",
    "LedgerAppend",
    "ListFiles",
    "ReadFile",
    "RunPython",
    "RunTests",
    "Tool",
    "ToolBase",
    "ToolContext",
    "ToolDeclaration",
    "ToolRegistry",
    "WorkspacePath",
    "WriteFile",
    "arguments_struct",
    "default_registry",
    "input_schema",
    "load_function_tool",
    "registry_for",
    "truncate",
)

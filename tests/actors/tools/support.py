"""Calling a tool the way a worker does, with every tool of the registry allowed."""

from __future__ import annotations

from collections.abc import Mapping

from warden.actors.tools import ToolContext, ToolRegistry, default_registry
from warden.actors.workspace import Workspace
from warden.bus.wire import ToolCallRecord
from warden.config.settings import SandboxSettings

ALL_TOOLS = ["list_files", "read_file", "grep", "write_file", "run_python", "run_tests"]


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

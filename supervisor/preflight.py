"""Checks made before a daemon or a worker starts anything: settings against the code.

``load_settings`` checks what the settings alone can tell (types, ranges, prices). Some
mistakes only show when the settings meet the code: a user tool whose function cannot be
imported or has no schema (``tool_registry``), a role's allowlist naming a tool the
registry does not hold, or ``provider = "anthropic"`` without a key (``build_model``).
Each is checked here, before a server, a connection or a task group exists, so each is
one ``ConfigError`` naming the key and the value (exit 2 from the CLI), never a
traceback out of a supervision tree. Pinned by ``tests/integration/test_cli_errors.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

import msgspec
from warden.actors.model import Model
from warden.actors.model_factory import build_model
from warden.actors.tools import TIMEOUT_GRACE_S, ToolRegistry, registry_for
from warden.config import ConfigError, Settings
from warden.supervisor.policy import check_policy_names

__all__ = ("check_allowlists", "expand_allowlists", "open_tool_registry", "preflight",
           "tool_registry")


def tool_registry(settings: Settings) -> ToolRegistry:
    """warden's tools and the user's (``[tools.*]``), whose modules are imported now, in
    this process: the daemon's (for the specs; its local workers call them) or a
    ``warden worker``'s. Blocks on the imports. Raises ``ConfigError`` naming
    ``tools.<name>.<key>``: a module that cannot be imported, a missing function, a
    signature or a type with no schema (``actors/tools/function.py``), a ``timeout_s``
    the parent would not wait out (``limits.step_timeout_s`` is its wait for a reply)."""
    wait_s = settings.limits.step_timeout_s
    for name, tool in settings.tools.items():
        if tool.timeout_s + TIMEOUT_GRACE_S >= wait_s:
            raise ConfigError(
                f"tools.{name}.timeout_s", tool.timeout_s,
                f"must be below limits.step_timeout_s ({wait_s:g}) less {TIMEOUT_GRACE_S:g} s "
                "of grace: the run would stop waiting before the call ends")
    return registry_for(settings.tools)


@asynccontextmanager
async def open_tool_registry(settings: Settings, *,
                             keep_open: bool = True) -> AsyncIterator[ToolRegistry]:
    """``tool_registry``'s tools and those of the MCP servers (``[mcp.servers.*]``),
    which are started and listed now, in this process, and kept open (under supervision,
    ``actors/tools/mcp.py``) until the context is left, which stops them
    (``keep_open=False``: once listed, for a process that will not call them). Blocks until
    every server is listed. Raises ``ConfigError``: ``tool_registry``'s, a server that
    cannot start or list (naming ``mcp.servers.<name>``), a tool ``timeout_s`` the parent
    would not wait out."""
    wait_s = settings.limits.step_timeout_s
    for name, server in settings.mcp.servers.items():
        timeouts = {"timeout_s": server.timeout_s} | {
            f"tools.{tool}.timeout_s": own.timeout_s for tool, own in server.tools.items()
            if own.timeout_s is not None}
        for key, timeout_s in timeouts.items():
            if timeout_s + TIMEOUT_GRACE_S >= wait_s:
                raise ConfigError(
                    f"mcp.servers.{name}.{key}", timeout_s,
                    f"must be below limits.step_timeout_s ({wait_s:g}) less "
                    f"{TIMEOUT_GRACE_S:g} s of grace: the run would stop waiting before the "
                    "call ends")
    own = tool_registry(settings)
    if not settings.mcp.servers:
        yield own
        return
    # Imported only when servers are configured: the `mcp` SDK (pydantic, starlette, ...)
    # takes about 0.4 s of CPU to import, which every `warden` command and process paid.
    from warden.actors.tools.mcp import open_mcp_servers

    async with open_mcp_servers(settings.mcp, keep_open=keep_open) as mcp_tools:
        yield registry_for(settings.tools, mcp_tools=mcp_tools) if mcp_tools else own


def expand_allowlists(settings: Settings, tools: ToolRegistry) -> Settings:
    """``settings`` with each ``<server>.*`` of a role's ``tools`` replaced by the tools
    of that MCP server the registry holds (sorted), so every allowlist names tools one by
    one from here on (the daemon's and each worker's, from their own listing). Pure;
    raises ``ConfigError`` naming ``roles.<role>.tools`` for a ``<server>.*`` that is not
    a configured server."""
    roles = dict(settings.roles)
    changed = False
    for role, spec in settings.roles.items():
        if not any(name.endswith(".*") for name in spec.tools):
            continue
        expanded: list[str] = []
        for name in spec.tools:
            if not name.endswith(".*"):
                expanded.append(name)
                continue
            server = name[:-2]
            if server not in settings.mcp.servers:
                raise ConfigError(f"roles.{role}.tools", spec.tools,
                                  f"{name!r} names no MCP server; configured: "
                                  f"{', '.join(sorted(settings.mcp.servers)) or 'none'}")
            expanded.extend(sorted(tool for tool in tools.names()
                                   if tool.startswith(f"{server}.")))
        roles[role] = msgspec.structs.replace(spec, tools=list(dict.fromkeys(expanded)))
        changed = True
    return msgspec.structs.replace(settings, roles=roles) if changed else settings


def check_allowlists(settings: Settings, tools: ToolRegistry,
                     roles: Iterable[str] | None = None) -> None:
    """Return if every tool in the allowlists of ``roles`` (default: every role) is one
    the registry holds. Pure; raises ``ConfigError`` naming ``roles.<role>.tools``, the
    list, and the unknown tools."""
    known = set(tools.names())
    for role in settings.roles if roles is None else roles:
        allowlist = settings.roles[role].tools
        missing = [name for name in allowlist if name not in known]
        if missing:
            raise ConfigError(
                f"roles.{role}.tools", allowlist,
                f"names unknown tool{'s' if len(missing) > 1 else ''} "
                f"{', '.join(map(repr, missing))}; known: {', '.join(sorted(known))}",
            )


def preflight(settings: Settings, tools: ToolRegistry, *, api_key: str | None,
              roles: Iterable[str] | None = None) -> Model:
    """Check the allowlists of ``roles`` (default: every role) and the tool names of
    ``[policy]``, then build the model
    client the settings ask for; does not block. The caller closes the model
    (``aclose``). Raises ``ConfigError``."""
    check_allowlists(settings, tools, roles)
    check_policy_names(settings, tools)
    return build_model(settings, api_key=api_key)

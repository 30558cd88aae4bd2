"""The settings of MCP servers as tools (``[mcp.servers.<name>]``), and their checks.

The shape (README, "MCP servers")::

    [mcp]
    restart_base_s = 0.5             # a dead server is restarted after 0.5, 1, 2, ... s
    restart_max_s = 30.0             # ... at most this long apart

    [mcp.servers.tickets]
    command = ["python", "-m", "tickets_mcp"]   # stdio: the server as a child process; or
    # url = "http://127.0.0.1:8000/mcp"         # streamable HTTP (exactly one of the two)
    env = { TICKETS_DB = "/srv/tickets.db" }    # all it gets, with PATH, HOME, USER, ...
    cwd = "/srv/tickets"
    timeout_s = 30                   # bounds its start, its listing and each call
    risk = "medium"                  # the cautious defaults of every tool of the server
    side_effects = true
    trusted_output = false

    [mcp.servers.tickets.tools.search]          # one tool's own declarations
    risk = "low"
    side_effects = false

Its tools are named ``<server>.<tool>``; a role lists them by that name in ``tools``,
or all of a server's as ``<server>.*``. Whether a ``tools.<tool>`` table names a tool
the server lists is checked when the servers are listed, at start
(``actors/tools/mcp.py``).

The server never sees the daemon's environment (its API key, its NATS credentials):
only ``env`` and the MCP SDK's few harmless defaults (``PATH``, ``HOME``, ``LOGNAME``,
``SHELL``, ``TERM``, ``USER``).
"""

from __future__ import annotations

import re
from typing import Literal

import msgspec
from warden.config.errors import ConfigError

__all__ = ("SERVER_NAME", "McpServerSettings", "McpSettings", "McpToolSettings", "check_mcp")

SERVER_NAME = re.compile(r"[A-Za-z0-9_-]{1,48}")
"""What a server may be called: it prefixes its tools' names (``<server>.<tool>``)."""

# The vocabulary of ``settings.Risk``, spelled here because ``settings`` imports this
# module (the two must stay equal; tests/config/test_mcp_settings.py pins it).
_Risk = Literal["low", "medium", "high"]


class McpToolSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One tool's declarations (``[mcp.servers.<name>.tools.<tool>]``); unset: the
    server's."""

    risk: _Risk | None = None
    side_effects: bool | None = None
    trusted_output: bool | None = None
    timeout_s: float | None = None


class McpServerSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One MCP server (``[mcp.servers.<name>]``): how to reach it and what its tools are
    declared to be. The defaults are the cautious ones."""

    command: list[str] | None = None
    """The server as a child process speaking MCP on stdin/stdout: argv."""
    url: str | None = None
    """The server's streamable HTTP endpoint (``http://`` or ``https://``)."""
    env: dict[str, str] = {}
    """The child's environment, besides the SDK's harmless defaults (the module
    docstring); nothing of the daemon's own."""
    cwd: str | None = None
    """The child's working directory."""
    timeout_s: float = 30.0
    """Bounds starting and listing the server, and each call of its tools."""
    risk: _Risk = "medium"
    side_effects: bool = True
    trusted_output: bool = False
    """An MCP server's output comes from outside warden: untrusted unless declared."""
    tools: dict[str, McpToolSettings] = {}


class McpSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    servers: dict[str, McpServerSettings] = {}
    restart_base_s: float = 0.5
    """The first wait before a dead server is started again; doubled per failed start."""
    restart_max_s: float = 30.0
    """The longest wait between two starts of a dead server."""


def check_mcp(mcp: McpSettings) -> None:
    """Return if every server is reachable one way and every number is in range; pure.
    Raises ``ConfigError`` naming the first bad key."""
    for name in ("restart_base_s", "restart_max_s"):
        if not getattr(mcp, name) > 0:
            raise ConfigError(f"mcp.{name}", getattr(mcp, name), "must be greater than 0")
    for name, server in mcp.servers.items():
        key = f"mcp.servers.{name}"
        if not SERVER_NAME.fullmatch(name):
            raise ConfigError(key, name, "a server name is 1-48 letters, digits, _ or -")
        if (server.command is None) == (server.url is None):
            raise ConfigError(key, {"command": server.command, "url": server.url},
                              "needs exactly one of 'command' (stdio) and 'url' (HTTP)")
        if server.command is not None and (not server.command or not server.command[0]):
            raise ConfigError(f"{key}.command", server.command, "must name a program to run")
        if server.url is not None:
            if not re.match(r"https?://[^/\s]+", server.url):
                raise ConfigError(f"{key}.url", server.url, "must be an http:// or https:// URL")
            for option in ("cwd", "env"):
                if getattr(server, option):
                    raise ConfigError(f"{key}.{option}", getattr(server, option),
                                      "is for a server started with 'command', not 'url'")
        for variable in server.env:
            if not variable or "=" in variable or "\0" in variable:
                # The value is not shown: it may be a credential.
                raise ConfigError(f"{key}.env", variable, "is not an environment variable name")
        if not server.timeout_s > 0:
            raise ConfigError(f"{key}.timeout_s", server.timeout_s, "must be greater than 0")
        for tool, declared in server.tools.items():
            if declared.timeout_s is not None and not declared.timeout_s > 0:
                raise ConfigError(f"{key}.tools.{tool}.timeout_s", declared.timeout_s,
                                  "must be greater than 0")

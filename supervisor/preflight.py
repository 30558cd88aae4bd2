"""Checks made before a daemon or a worker starts anything: settings against the code.

``load_settings`` checks what the settings alone can tell (types, ranges, prices). Some
mistakes only show when the settings meet the code: a role's allowlist naming a tool the
registry does not hold, or ``provider = "anthropic"`` without a key (``build_model``).
Both are checked here, before a server, a connection or a task group exists, so each is
one ``ConfigError`` naming the key and the value (exit 2 from the CLI), never a
traceback out of a supervision tree. Pinned by ``tests/integration/test_cli_errors.py``.
"""

from __future__ import annotations

from collections.abc import Iterable

from warden.actors.model import Model
from warden.actors.model_factory import build_model
from warden.actors.tools import ToolRegistry
from warden.config import ConfigError, Settings
from warden.supervisor.policy import check_policy_names

__all__ = ("check_allowlists", "preflight")


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

"""The settings of the policy guards (``[policy]``), and the checks the types cannot make.

The shape (README, "Guards")::

    [policy]
    default_patterns = true            # the shipped blocked patterns (supervisor/guard_patterns.py)
    disabled_defaults = []             # names of shipped patterns to leave out ("sql.truncate")
    blocked_patterns = []              # more regexes, over every tool's canonical arguments
    loop_threshold = 3                 # same tool, same arguments, this many times in a step
    on_loop = "degraded"               # or "needs_human": how the run ends when a loop stops it
    max_side_effects_per_run = 0       # 0: no limit
    max_files_written_per_run = 0      # distinct paths written with write_file
    max_bytes_written_per_run = 0      # bytes of content written with write_file

    [policy.tools.refund]
    blocked_patterns = ['"currency":"btc"']
    max = { amount = 100 }             # a call whose `amount` is above 100 is refused
    min = { amount = 0 }

Every pattern is a Python regular expression matched case-insensitively (``(?-i:...)``
turns that off for a part). A pattern that does not compile is a ``ConfigError`` naming
its key. Whether the names under ``policy.tools`` and ``disabled_defaults`` exist is
checked against the code at start-up (``supervisor/preflight.py``).
"""

from __future__ import annotations

import re
from typing import Literal

import msgspec
from warden.config.errors import ConfigError

__all__ = ("PolicySettings", "ToolPolicy", "check_policy")


class ToolPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The guards of one tool (``[policy.tools.<tool>]``)."""

    blocked_patterns: list[str] = []
    """Regexes over this tool's canonical arguments, beside the global ones."""
    max: dict[str, float] = {}
    """Upper bounds of named top-level arguments (inclusive)."""
    min: dict[str, float] = {}
    """Lower bounds of named top-level arguments (inclusive)."""


class PolicySettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The policy guards on every tool call (``[policy]``)."""

    default_patterns: bool = True
    """Block the shipped destructive shell and SQL patterns."""
    disabled_defaults: list[str] = []
    """Names of shipped patterns left out (``shell.rm_rf``, ``sql.truncate``, ...)."""
    blocked_patterns: list[str] = []
    """Regexes over the canonical arguments of every tool call."""
    loop_threshold: int = 3
    """The call that makes the same tool with the same arguments this many times in one
    step attempt stops the step; 0 turns loop detection off."""
    on_loop: Literal["degraded", "needs_human"] = "degraded"
    """How a run whose step a loop stopped ends: ``degraded`` (partial results kept) or
    ``needs_human`` (escalated)."""
    max_side_effects_per_run: int = 0
    """Side-effecting tool calls one run may make; 0: no limit."""
    max_files_written_per_run: int = 0
    """Distinct files one run may write with ``write_file``; 0: no limit."""
    max_bytes_written_per_run: int = 0
    """Bytes of content one run may write with ``write_file``; 0: no limit."""
    tools: dict[str, ToolPolicy] = {}
    """Per-tool guards, by tool name."""


def _check_patterns(key: str, patterns: list[str]) -> None:
    for index, pattern in enumerate(patterns):
        try:
            re.compile(pattern, re.IGNORECASE)
        except re.error as exc:
            raise ConfigError(f"{key}[{index}]", pattern,
                              f"is not a valid regular expression: {exc}") from None


def check_policy(policy: PolicySettings) -> None:
    """Return if every pattern compiles and every number is in range; pure. Raises
    ``ConfigError`` naming the first bad key."""
    _check_patterns("policy.blocked_patterns", policy.blocked_patterns)
    for name in ("loop_threshold", "max_side_effects_per_run", "max_files_written_per_run",
                 "max_bytes_written_per_run"):
        value = getattr(policy, name)
        if value < 0:
            raise ConfigError(f"policy.{name}", value, "must be >= 0 (0: off)")
    if policy.loop_threshold == 1:
        raise ConfigError("policy.loop_threshold", 1,
                          "must be 0 (off) or at least 2: 1 would refuse every call")
    for tool, rules in policy.tools.items():
        _check_patterns(f"policy.tools.{tool}.blocked_patterns", rules.blocked_patterns)
        for argument, low in rules.min.items():
            high = rules.max.get(argument)
            if high is not None and low > high:
                raise ConfigError(f"policy.tools.{tool}.min.{argument}", low,
                                  f"is above policy.tools.{tool}.max.{argument} = {high:g}")

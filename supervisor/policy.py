"""The policy guards: interceptors on the call gate that refuse a tool call by rule.

The guard order (the spec; ``policy_guards`` builds the chain in it, from ``[policy]``):

1. **allowlist**, 2. **schema** — the gate's own declarations stage (``gate.py``): a tool
   the role may not use is refused before any interceptor is asked; the arguments'
   schema is the tool's, checked where it runs.
3. **blocked patterns** (``policy.blocked_patterns``): a regex over the canonical JSON
   of the arguments (``guard_patterns.py``), the shipped defaults first, then the global
   ones, then the tool's own. The first that matches refuses the call.
4. **magnitude** (``policy.magnitude``): per tool, bounds on named top-level arguments
   (``max`` / ``min``, inclusive; a bounded argument that is not a number is refused);
   per run, the side-effecting calls, the distinct files and the bytes written with
   ``write_file``. A run's tallies count the calls this guard let through (a later
   refusal still counts: the cautious side) and, after a restart, the side effects the
   journal holds for the run.
5. **loop** (``policy.loop``): the call that would make the same tool with the same
   canonical arguments ``loop_threshold`` times in one step attempt is refused and stops
   the step: the run ends ``degraded`` (or ``needs_human``, ``policy.on_loop``) with the
   reason "loop detected". So with K = 3 the tool runs twice and the third call stops
   the step. A step's retry is a new attempt and counts afresh.
6. **approval** (``[approvals]``, ``[roles.X] auto_approve``; ``approvals.py``): a call
   whose risk, or its step's taint, needs a human waits for one (``awaiting_approval``),
   then runs, or is refused as denied or expired. Always in the chain when the daemon
   has a journal: a ``high`` call always needs an approval.
7. **dry run** (``dry_run.py``, always last, whenever there is a journal): a dry run's
   side-effecting call that got past every guard before it is recorded and answered
   with its simulation instead of being executed.

Replays. A restarted daemon's replay answers recorded calls from the journal without
asking the guards, so a guard that first sees a run mid-way reads the run's recorded calls
back (the magnitude tallies, the loop counts of the current step attempt). Each guard holds
at most ``MAX_RUNS_HELD`` runs in memory, dropping the oldest.

A refusal is a ``Deny``: the call is not made, the model reads the reason as the tool's
error, and the journal records it under the call's key, as ``denied by <guard>: <reason>``
with the rule that refused (``shell.rm_rf``, ``policy.tools.refund.max.amount``, ...).
Guards see only tool calls; every model call is allowed.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal, TypeVar

import structlog
from warden.actors.errors import UnknownToolError
from warden.actors.tools import ToolRegistry
from warden.actors.tools.files import WriteFile
from warden.config import ConfigError, Settings
from warden.config.policy import PolicySettings, ToolPolicy
from warden.supervisor.approvals import ApprovalBoard, ApprovalGuard
from warden.supervisor.dispatch import Dispatcher
from warden.supervisor.dry_run import DryRunGuard
from warden.supervisor.guard_patterns import (
    DEFAULT_PATTERNS,
    BlockedPattern,
    canonical_arguments,
    compile_patterns,
    default_patterns,
)
from warden.supervisor.interceptors import ALLOW, Decision, Deny, Interceptor, ModelCall, ToolCall
from warden.supervisor.journal import Journal

__all__ = (
    "BlockedPatternGuard",
    "LoopGuard",
    "MagnitudeGuard",
    "check_policy_names",
    "policy_guards",
)

log = structlog.get_logger("warden.policy")

_T = TypeVar("_T")

MAX_RUNS_HELD = 4096
"""Runs whose tallies a guard keeps in memory; past it the oldest is dropped (a guard
reads a dropped run's side effects back from the journal if the run calls again)."""

WRITE_TOOL = WriteFile.name
"""The built-in write tool, whose ``path`` and ``content`` the per-run file limits count
(and whose writes ``run.py`` remembers for taint)."""


class _ToolGuard:
    """A guard of tool calls only: every model call is allowed."""

    name = "policy"

    async def on_model_call(self, run_id: str, call: ModelCall) -> Decision:
        return ALLOW


# -- blocked patterns -------------------------------------------------------------------


@dataclass(eq=False)
class BlockedPatternGuard(_ToolGuard):
    """Refuses a tool call whose canonical arguments match a blocked pattern."""

    patterns: list[BlockedPattern]
    """Applied to every tool: the shipped defaults, then ``policy.blocked_patterns``."""
    per_tool: dict[str, list[BlockedPattern]] = field(default_factory=dict)
    name: str = "policy.blocked_patterns"

    async def on_tool_call(self, run_id: str, call: ToolCall) -> Decision:
        own = self.per_tool.get(call.name, ())
        if not self.patterns and not own:
            return ALLOW
        text = canonical_arguments(call.arguments)
        lowered = text.lower() if text.isascii() else None
        for pattern in (*self.patterns, *own):
            found = pattern.find(text, lowered)
            if found is not None:
                log.warning("blocked_pattern_matched", run_id=run_id, key=call.key,
                            tool=call.name, rule=pattern.rule)
                return Deny(f"blocked pattern {pattern.rule} matched "
                            f"{found.group(0)[:80]!r} in the arguments of {call.name!r}: "
                            "not called")
        return ALLOW


# -- magnitude limits -------------------------------------------------------------------


@dataclass
class _Tally:
    side_effects: int = 0
    files: set[str] = field(default_factory=set)
    bytes_written: int = 0


@dataclass(eq=False)
class MagnitudeGuard(_ToolGuard):
    """Refuses a tool call whose arguments are out of their bounds, or that would take
    its run past a per-run limit (see the module docstring). ``on_tool_call`` reads the
    journal once per run (its recorded side effects) the first time it sees the run."""

    policy: PolicySettings
    tools: ToolRegistry
    journal: Journal | None = None
    name: str = "policy.magnitude"
    _runs: dict[str, _Tally] = field(default_factory=dict)

    async def on_tool_call(self, run_id: str, call: ToolCall) -> Decision:
        bounds = self.policy.tools.get(call.name)
        if bounds is not None:
            refused = _out_of_bounds(call, bounds)
            if refused is not None:
                return Deny(refused)
        if not self._side_effects(call.name):
            return ALLOW
        tally = self._runs.get(run_id)
        if tally is None:
            # A restarted daemon's replay has calls recorded before this one: read them
            # back, once. A run begun in this daemon has none (no journal read per run).
            tally = await self._recorded(run_id) if call.replay else _Tally()
            _hold(self._runs, run_id, tally)
        policy = self.policy
        limit = policy.max_side_effects_per_run
        if limit and tally.side_effects + 1 > limit:
            return Deny(f"limit policy.max_side_effects_per_run = {limit} reached: "
                        f"run {run_id!r} has made {tally.side_effects} side-effecting calls; "
                        "not called")
        path, size = _write_of(call.name, call.arguments)
        if path is not None:
            files_limit = policy.max_files_written_per_run
            if files_limit and path not in tally.files and len(tally.files) + 1 > files_limit:
                return Deny(f"limit policy.max_files_written_per_run = {files_limit} reached: "
                            f"run {run_id!r} has written {len(tally.files)} files; "
                            f"{path!r} not written")
            bytes_limit = policy.max_bytes_written_per_run
            if bytes_limit and tally.bytes_written + size > bytes_limit:
                return Deny(f"limit policy.max_bytes_written_per_run = {bytes_limit} would be "
                            f"passed: run {run_id!r} has written {tally.bytes_written} bytes, "
                            f"this call writes {size}; not called")
            tally.files.add(path)
            tally.bytes_written += size
        tally.side_effects += 1
        return ALLOW

    def _side_effects(self, tool: str) -> bool:
        try:
            return self.tools.declaration(tool).side_effects
        except UnknownToolError:
            return False  # the gate refused it before any interceptor

    async def _recorded(self, run_id: str) -> _Tally:
        """The run's side effects the journal holds: an intent without an outcome counts
        (it may have acted), a refused or failed call does not."""
        tally = _Tally()
        if self.journal is None:
            return tally
        for effect in (await self.journal.effects(run_id)).values():
            if not self._side_effects(effect.tool):
                continue
            record = effect.record
            if record is not None and not record.ok:
                continue
            tally.side_effects += 1
            if record is not None:
                path, size = _write_of(record.name, record.arguments)
                if path is not None:
                    tally.files.add(path)
                    tally.bytes_written += size
        return tally


def _hold(held: dict[str, _T], run_id: str, value: _T) -> None:
    """Keep ``value`` for ``run_id``, dropping the oldest run past ``MAX_RUNS_HELD``."""
    held[run_id] = value
    if len(held) > MAX_RUNS_HELD:
        del held[next(iter(held))]


def _out_of_bounds(call: ToolCall, bounds: ToolPolicy) -> str | None:
    """Why the call's arguments are out of the tool's bounds, or ``None``."""
    for argument in sorted({*bounds.max, *bounds.min}):
        if argument not in call.arguments:
            continue  # a missing argument is the schema's to refuse
        value = call.arguments[argument]
        rule = f"policy.tools.{call.name}"
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value):
            return (f"argument {argument!r} = {value!r} of {call.name!r} is bounded "
                    f"({rule}) and is not a finite number: not called")
        high = bounds.max.get(argument)
        if high is not None and value > high:
            return (f"argument {argument!r} = {value!r} of {call.name!r} is above the limit "
                    f"{rule}.max.{argument} = {high:g}: not called")
        low = bounds.min.get(argument)
        if low is not None and value < low:
            return (f"argument {argument!r} = {value!r} of {call.name!r} is below the limit "
                    f"{rule}.min.{argument} = {low:g}: not called")
    return None


def _write_of(tool: str, arguments: dict[str, object]) -> tuple[str | None, int]:
    """The path a ``write_file`` call writes and its size in bytes; ``(None, 0)`` for
    any other call."""
    if tool != WRITE_TOOL:
        return None, 0
    path, content = arguments.get("path"), arguments.get("content")
    if not isinstance(path, str):
        return None, 0
    return path, len(content.encode()) if isinstance(content, str) else 0


# -- loop detection ---------------------------------------------------------------------


@dataclass(eq=False)
class LoopGuard(_ToolGuard):
    """Stops a step whose model asks for the same call ``threshold`` times."""

    threshold: int
    ends_run: Literal["degraded", "needs_human"] = "degraded"
    journal: Journal | None = None
    name: str = "policy.loop"
    _current: dict[str, tuple[str, Counter[tuple[str, str]]]] = field(default_factory=dict)
    """Per run, the step attempt being counted (its key prefix) and its calls: a run's
    calls come one step attempt at a time, so one counter per run is enough."""

    async def on_tool_call(self, run_id: str, call: ToolCall) -> Decision:
        attempt = call.key.rsplit("/t", 1)[0]  # <run>/e<epoch>/s<step>/a<attempt>
        held = self._current.get(run_id)
        if held is None or held[0] != attempt:
            counts: Counter[tuple[str, str]] = Counter()
            if held is None and call.replay and (call.turn, call.key[-3:]) != (0, "/c0"):
                # Mid-attempt at first sight: a restarted daemon's replay, whose earlier
                # calls of this attempt were answered from the journal, not asked here.
                counts = await self._recorded(run_id, attempt)
            held = (attempt, counts)
            _hold(self._current, run_id, held)
        same = (call.name, canonical_arguments(call.arguments))
        counts = held[1]
        counts[same] += 1
        if counts[same] < self.threshold:
            return ALLOW
        log.warning("loop_detected", run_id=run_id, key=call.key, tool=call.name,
                    times=counts[same])
        return Deny(f"loop detected: {call.name!r} asked {counts[same]} times with the same "
                    f"arguments in step {call.step} (policy.loop_threshold = "
                    f"{self.threshold}); the step is stopped",
                    ends_run=self.ends_run)

    async def _recorded(self, run_id: str, attempt: str) -> Counter[tuple[str, str]]:
        """The calls of step attempt ``attempt`` the journal holds, as this guard counts."""
        counts: Counter[tuple[str, str]] = Counter()
        if self.journal is None:
            return counts
        for key, effect in (await self.journal.effects(run_id)).items():
            if key.startswith(attempt + "/t") and effect.record is not None:
                record = effect.record
                counts[(record.name, canonical_arguments(record.arguments))] += 1
        return counts


# -- the chain --------------------------------------------------------------------------


def policy_guards(settings: Settings, tools: ToolRegistry, journal: Journal | None = None,
                  dispatcher: Dispatcher | None = None, *, board: ApprovalBoard | None = None,
                  ) -> tuple[Interceptor, ...]:
    """The guards ``settings.policy`` asks for, in the guard order; pure but for what
    ``MagnitudeGuard`` reads later. A guard with nothing to do is left out. The approval
    guard decides on ``board`` (the daemon's, which its decision consumer applies
    decisions to), else on a board of its own over ``journal``; without either, none.
    With a ``journal``, ``DryRunGuard`` comes last (any run may be a dry run), simulating
    on ``dispatcher``'s workers."""
    policy = settings.policy
    guards: list[Interceptor] = []
    patterns = [*(default_patterns(policy.disabled_defaults) if policy.default_patterns
                  else []),
                *compile_patterns("policy.blocked_patterns", policy.blocked_patterns)]
    per_tool = {tool: compile_patterns(f"policy.tools.{tool}.blocked_patterns",
                                       rules.blocked_patterns)
                for tool, rules in policy.tools.items() if rules.blocked_patterns}
    if patterns or per_tool:
        guards.append(BlockedPatternGuard(patterns, per_tool))
    if (any(rules.max or rules.min for rules in policy.tools.values())
            or policy.max_side_effects_per_run or policy.max_files_written_per_run
            or policy.max_bytes_written_per_run):
        guards.append(MagnitudeGuard(policy, tools, journal))
    if policy.loop_threshold:
        guards.append(LoopGuard(policy.loop_threshold, policy.on_loop, journal))
    approval: ApprovalGuard | None = None
    if board is None and journal is not None:
        board = ApprovalBoard(journal, settings.approvals.timeout_s)
    if board is not None:
        approval = ApprovalGuard(settings, tools, board)
        guards.append(approval)
    if journal is not None:
        guards.append(DryRunGuard(tools, journal, dispatcher,
                                  passed=tuple(guard.name for guard in guards),
                                  simulate_timeout_s=settings.limits.step_timeout_s,
                                  approval=approval.why if approval is not None else None))
    return tuple(guards)


def check_policy_names(settings: Settings, tools: ToolRegistry) -> None:
    """Return if every tool under ``policy.tools`` is one the registry holds and every
    name in ``policy.disabled_defaults`` is a shipped pattern; pure. Raises
    ``ConfigError`` naming the key."""
    known = set(tools.names())
    for tool in settings.policy.tools:
        if tool not in known:
            raise ConfigError(f"policy.tools.{tool}", tool,
                              f"names an unknown tool; known: {', '.join(sorted(known))}")
    disabled = settings.policy.disabled_defaults
    unknown = [name for name in disabled if name not in DEFAULT_PATTERNS]
    if unknown:
        raise ConfigError("policy.disabled_defaults", disabled,
                          f"names no shipped pattern: {', '.join(map(repr, unknown))}; "
                          f"shipped: {', '.join(DEFAULT_PATTERNS)}")

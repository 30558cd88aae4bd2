"""What goes through the call gate, and what an interceptor answers.

``ModelCall`` and ``ToolCall`` are the calls (built whole by the run supervisor);
``Interceptor`` is one link of the gate's chain, asked in a fixed order; its answer is one
``Decision``: ``Allow``, ``Deny``, ``Pause`` or ``Substitute``. What the gate does with each
is the spec at the top of ``supervisor/gate.py``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from warden.actors.model import Purpose
from warden.bus.wire import Block, Message, ToolCallRecord, ToolSpec

__all__ = (
    "ALLOW",
    "Allow",
    "Decision",
    "Deny",
    "Interceptor",
    "ModelCall",
    "Pause",
    "Substitute",
    "ToolCall",
)


# -- what goes through the gate ---------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelCall:
    """One model call, built whole by the parent. ``role`` is the worker role that makes
    it (``planner`` for the plan and synthesis calls); ``stored_from``: the messages
    before this index were journalled with the previous call of the same attempt, so
    only the delta is stored again."""

    key: str
    purpose: Purpose
    role: str
    model: str
    system: str
    messages: list[Message]
    tools: list[ToolSpec]
    max_tokens: int
    step: int = -1
    turn: int = -1
    stored_from: int = 0
    fallback: tuple[str, ...] = ()
    """Models that may serve the call, in order, after ``model`` (its chain's rest)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCall:
    """One tool call the model asked for in ``turn`` of ``step``."""

    key: str
    role: str
    step: int
    turn: int
    name: str
    arguments: dict[str, object]
    replay: bool = False
    """The run's gate began from a journal that held tool calls of the run (a restarted
    daemon's replay): only then has an interceptor that counts per run anything to read
    back at its first sight of the run."""
    dry_run: bool = False
    """The call is a dry run's (``supervisor/dry_run.py``): ``DryRunGuard``, the last
    guard, intercepts it if it would act; a guard that would pause it need not."""
    tainted_by: str | None = None
    """The output that tainted this call's step attempt (``"read_file (<key>)"``), or
    ``None``: set by the run supervisor; while set, the approval guard asks a human for
    every medium- and high-risk call (``supervisor/approvals.py``)."""
    use_id: str | None = None
    """The model's id of the tool use (``toolu_...``): named on the call's span, never
    part of a decision."""


# -- decisions and interceptors ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Allow:
    """Let the call go on to the next interceptor."""


@dataclass(frozen=True, slots=True)
class Deny:
    """Do not make the call; ``reason`` says why (the model or the run is told).

    ``ends_run`` (tool calls): the step stops here, and the run ends in that status with
    its partial results (``StepStoppedError``), as loop detection asks; ``None``: the
    model reads the refusal and the step goes on."""

    reason: str
    ends_run: Literal["degraded", "needs_human"] | None = None


@dataclass(frozen=True, slots=True)
class Substitute:
    """Do not make the call; ``result`` is its answer: the model's content (or a text)
    for a model call, the call's record for a tool call."""

    result: list[Block] | str | ToolCallRecord


@dataclass(frozen=True, slots=True)
class Pause:
    """Wait for a decision (an approval): the run is ``awaiting_approval`` until
    ``decide()`` answers; its answer then stands for this interceptor."""

    reason: str
    decide: Callable[[], Awaitable[Allow | Deny | Substitute]]


Decision = Allow | Deny | Pause | Substitute
ALLOW = Allow()


class Interceptor(Protocol):
    """One link of the gate's chain. Both methods are cancellation points; an exception
    escaping them is a crash of the run supervisor (a replay), not a decision."""

    name: str

    async def on_model_call(self, run_id: str, call: ModelCall) -> Decision: ...

    async def on_tool_call(self, run_id: str, call: ToolCall) -> Decision: ...

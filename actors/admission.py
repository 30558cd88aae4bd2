"""What a worker admits: every request checked against its own config, none trusted.

The bus's permissions decide who may send to ``warden.work.<role>``; this decides what a
worker does with what arrives, whoever sent it. A request the worker would not have been
sent by a run supervisor of the same config is refused, naming the field, and nothing is
executed (no model call, no tool):

- ``run_id``: a single safe token (``bus.subjects.is_valid_id``: letters, digits, ``_``,
  ``-``), since it names the run's workspace under the worker's own root — no path
  travels on the wire, and none can be made of the id;
- ``role``: the one this worker serves;
- a ``TurnRequest``: ``purpose`` ``step`` (the plan and synthesis calls are the daemon's
  own, never sent to a worker); ``model``, ``system`` and the cap of ``max_tokens``
  exactly what ``step_turn`` derives from the config for this role (the run supervisor
  builds its step calls with the same function); ``deadline_s`` within
  ``models.timeout_s``; ``tools`` only tools of the role's allowlist;
- a ``ToolRequest``: ``name`` in the role's allowlist.

A refusal is an answer (``TurnReply``/``ToolReply`` with ``error``, not retryable) and a
log line ``work_request_refused``; the sender's run sees the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from warden.bus import subjects
from warden.bus.wire import ToolRequest, ToolSpec, TurnRequest
from warden.config.settings import ModelSettings, RoleSettings

__all__ = ("Refusal", "StepTurn", "refuse_tool", "refuse_turn", "step_turn")


@dataclass(frozen=True, slots=True, kw_only=True)
class StepTurn:
    """What the config makes of a step's model call for one role."""

    model: str
    """The first model of the role's chain: what a step turn asks for first."""
    models: tuple[str, ...]
    """The role's whole chain (``RoleSettings.chain``): a fallback may serve a turn."""
    system: str
    max_tokens: int
    timeout_s: float
    """The longest deadline a turn may ask for (``models.timeout_s``, what the gate sends)."""


def step_turn(role: RoleSettings, models: ModelSettings) -> StepTurn:
    """The model, system prompt, completion cap and deadline cap of a step turn of
    ``role``: what the run supervisor sends, and all a worker of that role accepts. Pure."""
    return StepTurn(model=role.model, models=role.chain, system=role.prompt,
                    max_tokens=models.max_tokens, timeout_s=models.timeout_s)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request is refused: the field, and what is wrong with its value."""

    field: str
    problem: str

    def __str__(self) -> str:
        return f"refused: {self.field} {self.problem}"


def _common(request: TurnRequest | ToolRequest, role: str) -> Refusal | None:
    if not subjects.is_valid_id(request.run_id):
        return Refusal("run_id", f"{request.run_id[:200]!r} is not a single safe token "
                                 "([A-Za-z0-9_-], 1-128)")
    if request.role != role:
        return Refusal("role", f"{request.role[:200]!r} is not served here (this worker "
                               f"serves {role!r})")
    return None


def refuse_turn(
    request: TurnRequest, *, role: str, expected: StepTurn, tools: list[ToolSpec],
    allowlist: list[str],
) -> Refusal | None:
    """Why a worker of ``role`` must not make the model call ``request`` asks for, or
    ``None``. ``tools`` are the request's tool specs, decoded. Pure."""
    refusal = _common(request, role)
    if refusal is not None:
        return refusal
    if request.purpose != "step":
        return Refusal("purpose", f"{request.purpose!r} is not served by workers (only "
                                  "'step'; plan and synthesis are the daemon's own calls)")
    if request.model not in expected.models:
        return Refusal("model", f"{request.model[:200]!r} is not a model of role {role!r} "
                                f"({', '.join(map(repr, expected.models))})")
    if request.system != expected.system:
        return Refusal("system", f"is not the system prompt of role {role!r} in this "
                                 "worker's config")
    if not 1 <= request.max_tokens <= expected.max_tokens:
        return Refusal("max_tokens", f"{request.max_tokens} is not within 1..{expected.max_tokens}")
    if not 0 <= request.deadline_s <= expected.timeout_s:
        return Refusal("deadline_s", f"{request.deadline_s!r} is not within "
                                     f"0..{expected.timeout_s:g} s")
    outside = [spec.name for spec in tools if spec.name not in allowlist]
    if outside:
        return Refusal("tools", f"{outside[0][:200]!r} is not in the allowlist of role {role!r}")
    return None


def refuse_tool(request: ToolRequest, *, role: str, allowlist: list[str]) -> Refusal | None:
    """Why a worker of ``role`` must not run the tool call ``request`` asks for, or
    ``None``. Pure."""
    refusal = _common(request, role)
    if refusal is not None:
        return refusal
    if request.name not in allowlist:
        return Refusal("name", f"tool {request.name[:200]!r} is not in the allowlist of role "
                               f"{role!r}")
    return None

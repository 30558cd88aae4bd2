"""The span events of the call gate and the run supervisor (README, "Tracing"): policy
decisions and approval waits, on the current span (a step's ``invoke_agent``, or the
run's for a plan or synthesis call). Each is nothing at all unless tracing is on
(``actors/tracing.py``); the gate calls them only off its "allow" path."""

from __future__ import annotations

from warden.actors import genai_attributes as ga
from warden.actors import tracing
from warden.supervisor.approvals import EXPIRED
from warden.supervisor.interceptors import Allow, Deny, Substitute

__all__ = ("decided", "outcome", "waited", "waiting")


def decided(rule: str, decision: str, reason: str, key: str, tool: str | None = None) -> None:
    """``rule`` answered call ``key`` (of ``tool``) with ``decision`` (``deny``,
    ``substitute``) instead of letting it go on."""
    traces = tracing.tracer()
    if traces is not None:
        traces.decision(ga.EVENT_POLICY_DECISION, rule=rule, decision=decision,
                        reason=reason, tool=tool, key=key)


def waiting(rule: str, reason: str, key: str, tool: str | None = None,
            approval: str | None = None) -> None:
    """Call ``key`` (or a step's answer) waits for a person, as ``rule`` asked."""
    traces = tracing.tracer()
    if traces is not None:
        traces.decision(ga.EVENT_APPROVAL_REQUESTED, rule=rule, decision="pause",
                        reason=reason, tool=tool, key=key, approval=approval)


def waited(rule: str, decision: str, reason: str, key: str, tool: str | None = None,
           approval: str | None = None) -> None:
    """The wait of call ``key`` ended: ``decision`` is ``approved``, ``denied``,
    ``expired`` (``outcome``) or ``substitute``."""
    traces = tracing.tracer()
    if traces is not None:
        traces.decision(ga.EVENT_APPROVAL_DECIDED, rule=rule, decision=decision,
                        reason=reason, tool=tool, key=key, approval=approval)


def outcome(verdict: Allow | Deny | Substitute) -> str:
    """How a wait ended, in the words of ``waited``."""
    if isinstance(verdict, Allow):
        return "approved"
    if isinstance(verdict, Deny):
        return "expired" if verdict.reason.startswith(EXPIRED) else "denied"
    return "substitute"

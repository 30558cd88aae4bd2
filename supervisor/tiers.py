"""Model tiering and fallback: which model of a call's chain serves it, and why.

A call names a chain of models (``ModelCall.model`` then ``ModelCall.fallback``, from
``models.planner_fallback``, ``models.synthesizer_fallback`` or ``roles.<r>.fallback``).
The gate (``CallGate._serve``) tries them in order:

- the first serves, unless
- the run's budget asks for a downgrade (``Budget.wants_downgrade``): the chain starts one
  tier down (``budget``);
- a model answers overloaded (HTTP 529) or its breaker is open: the next one serves at
  once, without waiting the first out (``overloaded``, ``breaker_open``). The last model
  of a chain has no next: it is waited out and retried as any model is (``gate.py``).

Every call starts again at the top, so a chain returns to its first model as soon as that
model's breaker lets calls through again (a half-open probe that succeeds closes it). The
budget reserves the dearest model of the chain the call may use, so no fallback can take a
run past its budget. The call records which model served and why (the journal's request,
``ModelCallMade.fallback``).
"""

from __future__ import annotations

from typing import Literal

from warden.supervisor.interceptors import ModelCall

__all__ = ("OVERLOADED", "FallBack", "FallbackReason", "chain_of")

FallbackReason = Literal["overloaded", "breaker_open", "budget"]

OVERLOADED = 529
"""The HTTP status of an overloaded provider (Anthropic's ``overloaded_error``)."""


class FallBack(Exception):
    """The model tried cannot serve now and the chain has a next: let the next serve."""

    def __init__(self, reason: FallbackReason, problem: str) -> None:
        self.reason: FallbackReason = reason
        self.problem = problem
        super().__init__(f"{reason}: {problem}")


def chain_of(call: ModelCall, *, downgrade: bool) -> tuple[tuple[str, ...],
                                                             FallbackReason | None]:
    """The models that may serve ``call``, in order, and why the first is not the call's
    own first choice (``budget``: the run asked for a downgrade), if it is not. A chain of
    one model is never downgraded: there is nothing below it."""
    if not call.fallback:
        return (call.model,), None
    if downgrade:
        return call.fallback, "budget"
    return (call.model, *call.fallback), None

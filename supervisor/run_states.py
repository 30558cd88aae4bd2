"""The run state machine: a run's statuses and the transitions between them.

The rules (these words, exactly):

- **Statuses.** ``queued`` (committed, waiting for its run supervisor), ``planning``,
  ``running``, ``awaiting_approval`` (reserved: a call paused for a person's decision),
  and the terminal ones: ``succeeded``, ``degraded`` (stopped by a step cap, partial
  results kept), ``budget_exhausted``, ``failed``, ``cancelled``, ``rejected`` (bad
  input, refused at intake), ``needs_human`` (escalated: stopped until a person acts).
- **Created** ``queued``, or ``rejected`` at intake. No run is created in another status,
  and no run becomes ``rejected`` later.
- **Forward.** ``queued → planning → running ⇄ awaiting_approval``; a run with a recorded
  plan (resumed by hand) goes ``queued → running``. A run supervisor ends a run from
  ``running`` in any terminal status but ``rejected`` and ``cancelled``; from
  ``planning`` only ``budget_exhausted`` or ``failed`` (the plan call or the plan);
  from ``awaiting_approval`` a decision resumes it (``running``), escalates it
  (``needs_human``) or fails it.
- **Replays re-enter.** A run supervisor restarted after a crash replays the run from
  the journal and may set the status it already has: ``planning → planning``,
  ``running → running``, ``awaiting_approval → awaiting_approval``.
- **From outside.** Every unfinished run (``UNFINISHED``) can be ``cancelled`` or
  ``failed`` (its supervisor crashed past its restart intensity); a ``needs_human`` run
  can be ``cancelled`` too.
- **Resumed by hand** (``warden resume``): ``needs_human`` and ``failed`` go back to
  ``queued`` (``RESUMABLE_BY_HAND``). No other terminal status ever changes.
- **Terminal** (``TERMINAL``) means the run supervisor has stopped for good: nothing
  happens to the run unless a person resumes or cancels it. Every terminal transition
  publishes the run's terminal event and ``warden.done.<run>`` (``supervisor/events.py``).

``check_transition`` applies the rules; the journal calls it on every status change and
refuses an illegal one before writing (``Journal.transition``), and its SQL trigger
applies the same table (``journal_schema.status_guards``). This module is pure: no I/O,
no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, cast, get_args

from warden.supervisor.errors import IllegalTransitionError

__all__ = (
    "CANCELLABLE",
    "INITIAL",
    "RESUMABLE_BY_HAND",
    "STATUSES",
    "TERMINAL",
    "TRANSITIONS",
    "UNFINISHED",
    "RunStatus",
    "check_initial",
    "check_transition",
)

RunStatus = Literal[
    "queued",
    "planning",
    "running",
    "awaiting_approval",
    "succeeded",
    "degraded",
    "budget_exhausted",
    "failed",
    "cancelled",
    "rejected",
    "needs_human",
]
STATUSES: tuple[RunStatus, ...] = get_args(RunStatus)

UNFINISHED: frozenset[RunStatus] = frozenset({
    "queued", "planning", "running", "awaiting_approval",
})
"""A run supervisor has work to do: a daemon resumes these at start."""
TERMINAL: frozenset[RunStatus] = frozenset(STATUSES) - UNFINISHED
"""The run supervisor has stopped for good (see the rules)."""
RESUMABLE_BY_HAND: frozenset[RunStatus] = frozenset({"needs_human", "failed"})
CANCELLABLE: frozenset[RunStatus] = UNFINISHED | {"needs_human"}
INITIAL: frozenset[RunStatus] = frozenset({"queued", "rejected"})
"""The statuses a run is created in."""

_ENDINGS_OF_A_RUN: frozenset[RunStatus] = TERMINAL - {"rejected", "cancelled"}

TRANSITIONS: Mapping[RunStatus, frozenset[RunStatus]] = {
    "queued": frozenset({"planning", "running", "cancelled", "failed"}),
    "planning": frozenset({"planning", "running", "budget_exhausted", "failed", "cancelled"}),
    "running": _ENDINGS_OF_A_RUN | {"running", "awaiting_approval", "cancelled"},
    "awaiting_approval": frozenset({
        "awaiting_approval", "running", "needs_human", "failed", "cancelled",
    }),
    "needs_human": frozenset({"queued", "cancelled"}),
    "failed": frozenset({"queued"}),
    "succeeded": frozenset(),
    "degraded": frozenset(),
    "budget_exhausted": frozenset(),
    "cancelled": frozenset(),
    "rejected": frozenset(),
}
"""Each status and the statuses it may go to: the rules above, as a table."""

_NEXT = cast(Mapping[str, frozenset[str]], TRANSITIONS)  # looked up with statuses read from disk
_NOWHERE: frozenset[str] = frozenset()


def check_transition(run_id: str, old: str, new: str) -> None:
    """Return if run ``run_id`` may go from status ``old`` to ``new``.

    Pure and cheap (two lookups): called on every status change. A status that is not a
    ``RunStatus`` (a typo, a file of another version) goes nowhere and is reached from
    nowhere. Raises ``IllegalTransitionError`` naming the run and both statuses.
    """
    if new not in _NEXT.get(old, _NOWHERE):
        raise IllegalTransitionError(run_id, old, new)


def check_initial(run_id: str, status: str) -> None:
    """Return if a run may be created in ``status`` (``INITIAL``); raises
    ``IllegalTransitionError`` (with ``old=None``) otherwise."""
    if status not in INITIAL:
        raise IllegalTransitionError(run_id, None, status)

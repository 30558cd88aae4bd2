"""Restart intensity: how many restarts a supervisor tolerates before it gives up.

The rule is Erlang/OTP's: a supervisor allows at most ``max_restarts`` restarts within
any ``period`` seconds. The restart that would make it ``max_restarts + 1`` within the
period is refused, and the supervisor stops its children and escalates.

Timestamps come from ``anyio.current_time()`` (a monotonic clock), never from the wall
clock, and this module never reads a clock itself: the caller passes ``now``, so tests
drive time by passing numbers (``tests/supervisor/test_restart_intensity.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple


class RestartVerdict(NamedTuple):
    """The outcome of asking for one more restart."""

    allowed: bool
    """False once the restart would exceed ``max_restarts`` within ``period``."""
    restarts: tuple[float, ...]
    """The restarts still inside the period, oldest first, including the new one at ``now``."""


def add_restart(
    restarts: Sequence[float], now: float, *, max_restarts: int, period: float
) -> RestartVerdict:
    """Record a restart at ``now`` and say whether it is within the restart intensity.

    ``restarts`` are the timestamps of earlier restarts, oldest first (the ``restarts``
    of the previous verdict). Timestamps older than ``now - period`` are pruned; one that
    is exactly ``period`` old still counts, as in OTP. Pure: does not block, never raises
    for valid input, and ``max_restarts=0`` refuses every restart.

    Raises ``ValueError`` if ``max_restarts`` is negative or ``period`` is not positive.
    """
    if max_restarts < 0:
        raise ValueError(f"max_restarts must be >= 0, got {max_restarts!r}")
    if period <= 0:
        raise ValueError(f"period must be > 0, got {period!r}")
    threshold = now - period
    kept = (*(t for t in restarts if t >= threshold), now)
    return RestartVerdict(len(kept) <= max_restarts, kept)

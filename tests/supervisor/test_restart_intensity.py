"""Restart intensity: at most max_restarts restarts within any period seconds."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from warden.supervisor.restart_intensity import add_restart


def test_restarts_up_to_max_restarts_within_period_are_allowed() -> None:
    restarts: tuple[float, ...] = ()
    for now in (10.0, 11.0, 12.0):
        allowed, restarts = add_restart(restarts, now, max_restarts=3, period=5.0)
        assert allowed
    assert restarts == (10.0, 11.0, 12.0)


def test_one_restart_more_than_max_restarts_within_period_is_refused() -> None:
    verdict = add_restart((10.0, 11.0, 12.0), 13.0, max_restarts=3, period=5.0)
    assert not verdict.allowed
    assert verdict.restarts == (10.0, 11.0, 12.0, 13.0)


def test_restarts_older_than_period_are_pruned_and_no_longer_count() -> None:
    verdict = add_restart((1.0, 2.0, 9.0), 10.0, max_restarts=2, period=5.0)
    assert verdict.allowed
    assert verdict.restarts == (9.0, 10.0)


def test_a_restart_exactly_period_old_still_counts_as_in_otp() -> None:
    verdict = add_restart((5.0,), 10.0, max_restarts=1, period=5.0)
    assert not verdict.allowed
    assert verdict.restarts == (5.0, 10.0)


def test_zero_max_restarts_refuses_the_first_restart() -> None:
    assert not add_restart((), 0.0, max_restarts=0, period=1.0).allowed


@pytest.mark.parametrize(("max_restarts", "period"), [(-1, 1.0), (1, 0.0), (1, -2.0)])
def test_invalid_limits_are_rejected(max_restarts: int, period: float) -> None:
    with pytest.raises(ValueError):
        add_restart((), 0.0, max_restarts=max_restarts, period=period)


@given(
    gaps=st.lists(st.floats(min_value=0.0, max_value=10.0), min_size=1, max_size=40),
    max_restarts=st.integers(min_value=0, max_value=6),
    period=st.floats(min_value=0.1, max_value=20.0),
)
def test_verdicts_match_a_sliding_window_count_of_all_restarts(
    gaps: list[float], max_restarts: int, period: float
) -> None:
    """Fed one restart at a time, the verdict equals counting every restart so far in the window."""
    times: list[float] = []
    now = 0.0
    restarts: tuple[float, ...] = ()
    for gap in gaps:
        now += gap
        times.append(now)
        verdict = add_restart(restarts, now, max_restarts=max_restarts, period=period)
        in_window = [t for t in times if t >= now - period]
        assert verdict.allowed == (len(in_window) <= max_restarts)
        assert verdict.restarts == tuple(in_window)
        assert len(verdict.restarts) <= max_restarts + 1
        if not verdict.allowed:
            break  # the supervisor gives up: no more restarts are recorded
        restarts = verdict.restarts

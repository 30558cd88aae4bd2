"""The per-run budget: a call that could exceed it is refused before it is made."""

from __future__ import annotations

import pytest
from warden.supervisor.budget import Budget
from warden.supervisor.errors import BudgetExhaustedError


def test_reserve_settle_and_refuse_past_the_limit() -> None:
    budget = Budget("r-1", 1.0)
    held = budget.reserve(0.6)
    with pytest.raises(BudgetExhaustedError) as caught:
        budget.reserve(0.5)  # 0.6 held + 0.5 > 1.0
    assert "budget $1.0000 of run 'r-1' would be exceeded" in str(caught.value)
    budget.settle(held, 0.2)
    assert budget.statistics().spent_usd == pytest.approx(0.2)
    assert budget.statistics().reserved_usd == 0
    budget.settle(budget.reserve(0.8), 0.8)  # exactly at the limit is allowed
    with pytest.raises(BudgetExhaustedError):
        budget.reserve(0.0001)


def test_release_returns_a_reservation_without_charging() -> None:
    budget = Budget("r-1", 1.0)
    budget.release(budget.reserve(0.9))
    assert budget.statistics().spent_usd == 0
    budget.reserve(1.0)

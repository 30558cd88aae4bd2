"""The per-run cost budget: reserve the worst case before a call, settle after it.

The parent reserves what a call could cost at most (its prompt priced as input plus
``max_tokens`` of output) before the call is made; if that could take the run past its
budget, the call is not made (``BudgetExhaustedError``) and the run stops with its
partial results. After the call the reservation is settled at the actual cost.
"""

from __future__ import annotations

import msgspec
from warden.supervisor.errors import BudgetExhaustedError


class BudgetStatistics(msgspec.Struct, frozen=True, kw_only=True):
    limit_usd: float
    spent_usd: float
    reserved_usd: float
    calls: int


class Budget:
    """Dollars one run may spend. Not thread-safe; one run supervisor owns it."""

    def __init__(self, run_id: str, limit_usd: float, *, downgrade_below: float = 0.0) -> None:
        self.run_id = run_id
        self.limit_usd = limit_usd
        self.downgrade_below = downgrade_below
        """The fraction of ``limit_usd`` left below which later calls move down their
        model chain (``wants_downgrade``); 0: never."""
        self.spent_usd = 0.0
        self.reserved_usd = 0.0
        self.calls = 0

    def reserve(self, worst_case_usd: float) -> float:
        """Hold ``worst_case_usd`` for one call; returns the amount held.

        Raises ``BudgetExhaustedError`` (and holds nothing) when the call could take
        the run past its budget.
        """
        if self.spent_usd + self.reserved_usd + worst_case_usd > self.limit_usd:
            raise BudgetExhaustedError(
                self.run_id, self.limit_usd, self.spent_usd + self.reserved_usd, worst_case_usd
            )
        self.reserved_usd += worst_case_usd
        return worst_case_usd

    def settle(self, reserved_usd: float, actual_usd: float) -> None:
        """Release a reservation and charge what the call really cost."""
        self.reserved_usd = max(0.0, self.reserved_usd - reserved_usd)
        self.spent_usd += actual_usd
        self.calls += 1

    def release(self, reserved_usd: float) -> None:
        """Release a reservation of a call that was not made or cost nothing."""
        self.reserved_usd = max(0.0, self.reserved_usd - reserved_usd)

    def wants_downgrade(self) -> bool:
        """Whether what is left of the budget (neither spent nor held) is below
        ``downgrade_below`` of it: later calls should be served one tier down."""
        left = self.limit_usd - self.spent_usd - self.reserved_usd
        return left < self.downgrade_below * self.limit_usd

    def statistics(self) -> BudgetStatistics:
        return BudgetStatistics(
            limit_usd=self.limit_usd, spent_usd=self.spent_usd,
            reserved_usd=self.reserved_usd, calls=self.calls,
        )

"""Nested budgets: reserve a call's worst case at every level before it is made, settle
after it.

The spec. A model call passes four levels, each with a limit in USD and one in tokens
(0: no limit in that unit at that level):

- **day**: every run of the daemon, per day (``budgets.day_usd`` / ``day_tokens``);
- **tenant**: the runs of the run's tenant, per day (``budgets.tenant_day_*``, or the
  tenant's own ``budgets.tenants.<name>``);
- **run**: the run (``limits.run_budget_usd`` or the submission's ``budget_usd``;
  ``budgets.run_tokens``);
- **step**: one step of the run, all its attempts and turns (``budgets.step_usd`` /
  ``step_tokens``); the plan and synthesis calls belong to no step.

The day and tenant levels are shared by every run of the daemon (``spend.DailySpend``,
durable in the journal); the run and step levels are this run's (``Budget``).

``reserve(worst_usd, worst_tokens, step=...)`` checks every level first and then holds the
worst case at all of them, with no await in between (one event loop: no other call can
slip between the check and the hold). A call that could take any level past its limit is
refused, holding nothing: ``BudgetExhaustedError`` names the first level (in the order
above) and the unit. After the call, ``settle(held, usd, tokens)`` releases the holds and
charges what the call really cost at the same levels (the day it was reserved in, even
if the day turned meanwhile); ``release(held)`` releases a call that was not made.

Overshoot is 0 by construction, provided a call's actual cost is at most its worst case
(``PriceTable.worst_case`` and ``estimate_prompt_tokens + max_tokens``): every level's
spent plus held never passes its limit. Dollars are counted in integer pico-dollars so
that no rounding of a float sum can carry a level past its limit (pinned by
``tests/supervisor/test_budget_property.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import msgspec
from warden.config import DEFAULT_TENANT, Settings
from warden.supervisor.errors import BudgetExhaustedError

if TYPE_CHECKING:
    from warden.supervisor.spend import DailySpend

__all__ = ("Account", "Budget", "BudgetStatistics", "Hold", "Level", "Unit", "pico", "usd")

Level = Literal["day", "tenant", "run", "step"]
Unit = Literal["usd", "tokens"]

_PICO = 10**12


def pico(amount_usd: float) -> int:
    """``amount_usd`` in whole pico-dollars, rounded up (a cost is never undercounted).
    Exact: from the float's own ratio, not through a rounded product."""
    numerator, denominator = float(amount_usd).as_integer_ratio()
    return -(-numerator * _PICO // denominator)


def _pico_down(amount_usd: float) -> int:
    """``amount_usd`` in whole pico-dollars, rounded down (a limit is never raised)."""
    numerator, denominator = float(amount_usd).as_integer_ratio()
    return numerator * _PICO // denominator


def usd(amount_pico: int) -> float:
    return amount_pico / _PICO


class Account:
    """One level's limits and what is spent and held there. Limits of 0 are no limit."""

    __slots__ = ("level", "limit_pusd", "limit_tokens", "name", "reserved_pusd",
                 "reserved_tokens", "spent_pusd", "spent_tokens")

    def __init__(self, level: Level, name: str, limit_usd: float, limit_tokens: int) -> None:
        self.level: Level = level
        self.name = name
        self.limit_pusd = _pico_down(limit_usd) if limit_usd > 0 else 0
        self.limit_tokens = limit_tokens if limit_tokens > 0 else 0
        self.spent_pusd = 0
        self.spent_tokens = 0
        self.reserved_pusd = 0
        self.reserved_tokens = 0

    @property
    def limit_usd(self) -> float:
        return usd(self.limit_pusd)

    @property
    def spent_usd(self) -> float:
        return usd(self.spent_pusd)

    @property
    def reserved_usd(self) -> float:
        return usd(self.reserved_pusd)

    def left_usd(self) -> float | None:
        """USD left (spent and held taken off); ``None`` without a USD limit."""
        if not self.limit_pusd:
            return None
        return usd(max(0, self.limit_pusd - self.spent_pusd - self.reserved_pusd))

    def left_tokens(self) -> int | None:
        if not self.limit_tokens:
            return None
        return max(0, self.limit_tokens - self.spent_tokens - self.reserved_tokens)

    def refuse(self, run_id: str, unit: Unit, pusd: int, tokens: int) -> BudgetExhaustedError:
        if unit == "usd":
            return BudgetExhaustedError(
                run_id, self.limit_usd, usd(self.spent_pusd + self.reserved_pusd), usd(pusd),
                level=self.level, unit=unit, name=self.name)
        return BudgetExhaustedError(
            run_id, float(self.limit_tokens), float(self.spent_tokens + self.reserved_tokens),
            float(tokens), level=self.level, unit=unit, name=self.name)


class Hold(msgspec.Struct, frozen=True):
    """What one ``reserve`` holds, and where: what ``settle`` and ``release`` take."""

    pusd: int
    tokens: int
    accounts: tuple[Account, ...]


class BudgetStatistics(msgspec.Struct, frozen=True, kw_only=True):
    limit_usd: float
    spent_usd: float
    reserved_usd: float
    calls: int
    limit_tokens: int = 0
    spent_tokens: int = 0
    reserved_tokens: int = 0


class Budget:
    """The budget levels of one run. Not thread-safe: one run supervisor (on the daemon's
    event loop) owns it; ``daily`` is shared by the daemon's runs on that loop."""

    def __init__(
        self, run_id: str, limit_usd: float, *, limit_tokens: int = 0, step_usd: float = 0.0,
        step_tokens: int = 0, daily: DailySpend | None = None, tenant: str = DEFAULT_TENANT,
        downgrade_below: float = 0.0,
    ) -> None:
        self.run_id = run_id
        self.tenant = tenant
        self.daily = daily
        self.run = Account("run", run_id, limit_usd, limit_tokens)
        self.step_usd = step_usd
        self.step_tokens = step_tokens
        self.steps: dict[int, Account] = {}
        self.downgrade_below = downgrade_below
        self.calls = 0
        self._per_step = step_usd > 0 or step_tokens > 0
        self._day: tuple[Account, ...] = ()
        self._levels: dict[int, tuple[Account, ...]] = {}
        """The accounts of a call, by step (-1: no step), for the day ``_day`` holds."""

    @classmethod
    def of_run(cls, run_id: str, settings: Settings, *, budget_usd: float | None = None,
               tenant: str = DEFAULT_TENANT, daily: DailySpend | None = None) -> Budget:
        """The budget the settings give a run (``budget_usd``: the submission's own)."""
        budgets = settings.budgets
        return cls(run_id, budget_usd or settings.limits.run_budget_usd,
                   limit_tokens=budgets.run_tokens, step_usd=budgets.step_usd,
                   step_tokens=budgets.step_tokens, daily=daily, tenant=tenant,
                   downgrade_below=budgets.downgrade_below)

    # The run's spend, as the run supervisor reads it and restores it on a replay.

    @property
    def limit_usd(self) -> float:
        return self.run.limit_usd

    @property
    def spent_usd(self) -> float:
        return self.run.spent_pusd / _PICO

    @spent_usd.setter
    def spent_usd(self, value: float) -> None:
        self.run.spent_pusd = pico(value)

    @property
    def spent_tokens(self) -> int:
        return self.run.spent_tokens

    @spent_tokens.setter
    def spent_tokens(self, value: int) -> None:
        self.run.spent_tokens = value

    @property
    def reserved_usd(self) -> float:
        return self.run.reserved_usd

    def _accounts(self, step: int) -> tuple[Account, ...]:
        """The accounts a call of ``step`` passes, in the order of the levels. Kept per
        step until the day turns: this runs before every model call."""
        if self.daily is not None:
            day = self.daily.accounts(self.tenant)
            if day is not self._day:
                self._day, self._levels = day, {}
        key = step if step >= 0 and self._per_step else -1
        accounts = self._levels.get(key)
        if accounts is None:
            accounts = (*self._day, self.run)
            if key >= 0:
                accounts += (self.steps.setdefault(
                    key, Account("step", str(key), self.step_usd, self.step_tokens)),)
            self._levels[key] = accounts
        return accounts

    def reserve(self, worst_usd: float, worst_tokens: int = 0, *, step: int = -1) -> Hold:
        """Hold ``worst_usd`` and ``worst_tokens`` at every level of a call (of step
        ``step``; negative: the plan or synthesis, no step); returns the hold. Never
        blocks, never awaits.

        Raises ``BudgetExhaustedError`` naming the first level (day, tenant, run, step)
        and unit that the call could take past its limit; then nothing is held.
        """
        pusd = pico(worst_usd)
        accounts = self._accounts(step)
        for account in accounts:  # every level is checked before any is held
            limit = account.limit_pusd
            if limit and account.spent_pusd + account.reserved_pusd + pusd > limit:
                raise account.refuse(self.run_id, "usd", pusd, worst_tokens)
            limit = account.limit_tokens
            if limit and account.spent_tokens + account.reserved_tokens + worst_tokens > limit:
                raise account.refuse(self.run_id, "tokens", pusd, worst_tokens)
        for account in accounts:
            account.reserved_pusd += pusd
            account.reserved_tokens += worst_tokens
        return Hold(pusd, worst_tokens, accounts)

    def settle(self, held: Hold, actual_usd: float, actual_tokens: int = 0) -> None:
        """Release ``held`` and charge what the call really cost at the same levels."""
        pusd = pico(actual_usd)
        for account in held.accounts:
            account.reserved_pusd -= held.pusd
            account.reserved_tokens -= held.tokens
            account.spent_pusd += pusd
            account.spent_tokens += actual_tokens
        self.calls += 1

    def release(self, held: Hold) -> None:
        """Release the hold of a call that was not made (or failed before costing)."""
        for account in held.accounts:
            account.reserved_pusd -= held.pusd
            account.reserved_tokens -= held.tokens

    def wants_downgrade(self) -> bool:
        """Whether the run's USD left (spent and held taken off) is below
        ``budgets.downgrade_below`` of its limit: its later calls should move down the
        model chain. Always ``False`` with ``downgrade_below`` 0 or no USD limit."""
        run = self.run
        if self.downgrade_below <= 0 or not run.limit_pusd:
            return False
        left = run.limit_pusd - run.spent_pusd - run.reserved_pusd
        return left < self.downgrade_below * run.limit_pusd

    def statistics(self) -> BudgetStatistics:
        run = self.run
        return BudgetStatistics(
            limit_usd=run.limit_usd, spent_usd=run.spent_usd, reserved_usd=run.reserved_usd,
            calls=self.calls, limit_tokens=run.limit_tokens, spent_tokens=run.spent_tokens,
            reserved_tokens=run.reserved_tokens,
        )

"""``DailySpend``: the day and tenant budget levels, shared by every run of a daemon.

The day is ``budgets.timezone``'s calendar day, starting at ``budgets.day_starts_at_hour``
(so a day may be 23 or 25 hours long across a daylight-saving change). At start the
daemon loads the day's spend so far (USD and tokens, in all and per tenant) from the
journal: the model calls recorded since the day began (``journal_spend.py``), so a
restart does not reset the day. When the day turns, the levels start again at zero; a
call reserved before the turn settles into the day it was reserved in (its ``Hold``
names that day's accounts).

The clock is passed in (``time.time`` by default) so tests can turn the day. Reading the
day costs one clock read and a comparison per call; the date arithmetic runs once a day.
"""

from __future__ import annotations

import time
import zoneinfo
from collections.abc import Callable
from datetime import datetime, timedelta
from datetime import time as clock_time

from warden.bus.wire import MAX_SPEND_RUNS, SpendLevel, SpendReport
from warden.config import BudgetSettings, Settings
from warden.supervisor.budget import Account, pico
from warden.supervisor.journal import Journal
from warden.supervisor.journal_spend import run_spend_since, spend_since, tenant_spend_since

__all__ = ("DailySpend", "day_window", "spend_report")


def day_window(now: float, timezone: str, start_hour: int) -> tuple[str, float, float]:
    """The day holding ``now`` (a Unix time): its label (the date it starts on,
    ``YYYY-MM-DD``), and the Unix times it starts and ends at."""
    zone = zoneinfo.ZoneInfo(timezone)
    local = datetime.fromtimestamp(now, zone)
    date = local.date()
    start = datetime.combine(date, clock_time(start_hour), tzinfo=zone)
    if local < start:
        date -= timedelta(days=1)
        start = datetime.combine(date, clock_time(start_hour), tzinfo=zone)
    end = datetime.combine(date + timedelta(days=1), clock_time(start_hour), tzinfo=zone)
    return date.isoformat(), start.timestamp(), end.timestamp()


class DailySpend:
    """Today's day account and one account per tenant. Not thread-safe: used on the
    daemon's event loop only."""

    def __init__(self, budgets: BudgetSettings, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.budgets = budgets
        self._clock = clock
        self.day = ""
        """The current day's label."""
        self.starts_at = 0.0
        self.ends_at = 0.0
        self.total = Account("day", "", 0.0, 0)
        self.tenants: dict[str, Account] = {}
        self._pairs: dict[str, tuple[Account, Account]] = {}
        self._roll(clock())

    @classmethod
    async def load(cls, journal: Journal, budgets: BudgetSettings, *,
                   clock: Callable[[], float] = time.time) -> DailySpend:
        """Today's spend as the journal has it. A cancellation point (one read)."""
        spend = cls(budgets, clock=clock)
        for tenant, cost_usd, tokens in await spend_since(journal, spend.starts_at,
                                                          spend.ends_at):
            spend.total.spent_pusd += pico(cost_usd)
            spend.total.spent_tokens += tokens
            account = spend._tenant(tenant)
            account.spent_pusd += pico(cost_usd)
            account.spent_tokens += tokens
        return spend

    def _roll(self, now: float) -> None:
        budgets = self.budgets
        self.day, self.starts_at, self.ends_at = day_window(
            now, budgets.timezone, budgets.day_starts_at_hour)
        self.total = Account("day", self.day, budgets.day_usd, budgets.day_tokens)
        self.tenants = {}
        self._pairs = {}

    def _tenant(self, tenant: str) -> Account:
        account = self.tenants.get(tenant)
        if account is None:
            account = self.tenants[tenant] = self.new_account(tenant)
        return account

    def new_account(self, tenant: str) -> Account:
        """A fresh day account of ``tenant``, with its limits (not kept)."""
        budgets = self.budgets
        own = budgets.tenants.get(tenant)
        day_usd = budgets.tenant_day_usd
        day_tokens = budgets.tenant_day_tokens
        if own is not None:
            day_usd = day_usd if own.day_usd is None else own.day_usd
            day_tokens = day_tokens if own.day_tokens is None else own.day_tokens
        return Account("tenant", tenant, day_usd, day_tokens)

    def accounts(self, tenant: str) -> tuple[Account, Account]:
        """The current day's account and ``tenant``'s, turning the day when it ended: the
        same tuple all day (``Budget`` keeps what it built on it until it changes)."""
        now = self._clock()
        if now >= self.ends_at or now < self.starts_at:
            self._roll(now)
        pair = self._pairs.get(tenant)
        if pair is None:
            pair = self._pairs[tenant] = (self.total, self._tenant(tenant))
        return pair

    def current(self) -> tuple[Account, dict[str, Account]]:
        """The current day's account and every tenant account it has (each tenant with
        its own limits in ``budgets.tenants`` too), the day turned if it ended."""
        now = self._clock()
        if now >= self.ends_at or now < self.starts_at:
            self._roll(now)
        for tenant in self.budgets.tenants:
            self._tenant(tenant)
        return self.total, dict(self.tenants)


def _level(account: Account, cache_read: int, cache_write: int, *,
           tenant: str | None = None, status: str | None = None) -> SpendLevel:
    level = account.level
    assert level != "step"  # steps are not reported
    left_usd = account.left_usd()
    return SpendLevel(
        level=level, name=account.name,
        spent_usd=round(account.spent_usd, 6), spent_tokens=account.spent_tokens,
        reserved_usd=round(account.reserved_usd, 6), reserved_tokens=account.reserved_tokens,
        limit_usd=account.limit_usd, limit_tokens=account.limit_tokens,
        left_usd=None if left_usd is None else round(left_usd, 6),
        left_tokens=account.left_tokens(), cache_read_tokens=cache_read,
        cache_write_tokens=cache_write, tenant=tenant, status=status,
    )


async def spend_report(spend: DailySpend, journal: Journal, settings: Settings, *,
                       tenant: str | None = None) -> SpendReport:
    """Today's spend and what is left at the day level, per tenant (or of ``tenant``
    only) and per run with calls recorded today (their spend today), with the cache
    tokens of today's calls. Day and tenant figures are the levels' own (what the next
    reservation is checked against); run and cache figures come from the journal. A
    cancellation point (three reads)."""
    total, tenants = spend.current()
    start, end = spend.starts_at, spend.ends_at
    cache = {s.tenant: s for s in await tenant_spend_since(journal, start, end)}
    names = sorted(set(tenants) if tenant is None else {tenant})
    tenant_levels = []
    for name in names:
        # A tenant asked for that has no account today is not given one: a query must not
        # grow the daemon's state.
        account = tenants.get(name) or spend.new_account(name)
        recorded = cache.get(name)
        tenant_levels.append(_level(account, recorded.cache_read_tokens if recorded else 0,
                                    recorded.cache_write_tokens if recorded else 0))
    runs = await run_spend_since(journal, start, end, tenant=tenant, limit=MAX_SPEND_RUNS + 1)
    run_levels = []
    for run in runs[:MAX_SPEND_RUNS]:
        account = Account("run", run.run_id, run.budget_usd or settings.limits.run_budget_usd,
                          settings.budgets.run_tokens)
        account.spent_pusd, account.spent_tokens = pico(run.cost_usd), run.tokens
        run_levels.append(_level(account, run.cache_read_tokens, run.cache_write_tokens,
                                 tenant=run.tenant, status=run.status))
    return SpendReport(
        day=_level(total, sum(s.cache_read_tokens for s in cache.values()),
                   sum(s.cache_write_tokens for s in cache.values())),
        timezone=spend.budgets.timezone, starts_at=start, ends_at=end,
        tenants=tenant_levels, runs=run_levels,
        more_runs=len(runs) > MAX_SPEND_RUNS,
    )

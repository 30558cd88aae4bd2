"""The nested budgets: a call that could exceed any level (day, tenant, run, step; USD or
tokens) is refused before it is made, naming the level; the day levels are durable and
turn at the configured boundary; the downgrade hook."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from warden.bus.wire import Usage
from warden.config import BudgetSettings, ConfigError, TenantBudget, load_settings
from warden.supervisor.budget import Budget
from warden.supervisor.errors import BudgetExhaustedError
from warden.supervisor.journal import Journal
from warden.supervisor.spend import DailySpend, day_window, spend_report


def test_reserve_settle_and_refuse_past_the_limit() -> None:
    budget = Budget("r-1", 1.0)
    held = budget.reserve(0.6)
    with pytest.raises(BudgetExhaustedError) as caught:
        budget.reserve(0.5)  # 0.6 held + 0.5 > 1.0
    assert "budget $1.0000 of run 'r-1' would be exceeded" in str(caught.value)
    assert caught.value.level == "run" and caught.value.unit == "usd"
    budget.settle(held, 0.25)
    assert budget.statistics().spent_usd == 0.25
    assert budget.statistics().reserved_usd == 0
    # Exactly at the limit is allowed; counted exactly (0.2 + 0.8 as floats is more
    # than 1, and is refused).
    budget.settle(budget.reserve(0.75), 0.75)
    with pytest.raises(BudgetExhaustedError):
        budget.reserve(0.0001)


def test_release_returns_a_reservation_without_charging() -> None:
    budget = Budget("r-1", 1.0)
    budget.release(budget.reserve(0.9))
    assert budget.statistics().spent_usd == 0
    budget.reserve(1.0)


def test_the_run_token_level_refuses_in_tokens() -> None:
    budget = Budget("r-1", 10.0, limit_tokens=1000)
    budget.settle(budget.reserve(0.01, 900), 0.01, 600)
    budget.reserve(0.01, 400)  # 600 spent + 400 = 1000: at the limit
    with pytest.raises(BudgetExhaustedError) as caught:
        budget.reserve(0.01, 1)
    assert (caught.value.level, caught.value.unit) == ("run", "tokens")
    assert "run budget 1000 tokens of run 'r-1'" in str(caught.value)


def test_a_step_level_counts_each_step_apart_and_not_the_plan() -> None:
    budget = Budget("r-1", 10.0, step_usd=0.5)
    budget.settle(budget.reserve(0.4, step=0), 0.4)
    budget.reserve(0.4, step=1)  # another step: its own level
    budget.reserve(5.0)  # the plan or synthesis: no step level
    with pytest.raises(BudgetExhaustedError) as caught:
        budget.reserve(0.2, step=0)
    assert (caught.value.level, caught.value.name) == ("step", "0")
    assert "step budget $0.5000 of step 0 of run 'r-1'" in str(caught.value)


def _daily(now: list[float], **settings: object) -> DailySpend:
    return DailySpend(BudgetSettings(**settings), clock=lambda: now[0])  # type: ignore[arg-type]


def test_the_day_and_tenant_levels_are_shared_by_every_run() -> None:
    now = [1_800_000_000.0]
    daily = _daily(now, day_usd=1.0, tenant_day_usd=0.6,
                   tenants={"big": TenantBudget(day_usd=5.0)})
    a = Budget("a", 10.0, daily=daily, tenant="acme")
    b = Budget("b", 10.0, daily=daily, tenant="acme")
    big = Budget("c", 10.0, daily=daily, tenant="big")
    a.settle(a.reserve(0.5), 0.5)
    with pytest.raises(BudgetExhaustedError) as caught:
        b.reserve(0.2)  # acme: 0.5 + 0.2 > 0.6
    assert (caught.value.level, caught.value.name) == ("tenant", "acme")
    assert "tenant budget $0.6000 of tenant 'acme' for the day" in str(caught.value)
    big.settle(big.reserve(0.4), 0.4)  # its own 5.0; the day now at 0.9
    with pytest.raises(BudgetExhaustedError) as day:
        big.reserve(0.2)
    assert day.value.level == "day" and "day budget $1.0000 of the day" in str(day.value)
    assert daily.total.reserved_pusd == 0 and daily.tenants["acme"].reserved_pusd == 0


def test_a_refused_call_holds_nothing_at_any_level() -> None:
    daily = _daily([1_800_000_000.0], day_usd=1.0)
    budget = Budget("r", 0.5, daily=daily, step_usd=0.3)
    with pytest.raises(BudgetExhaustedError) as caught:
        budget.reserve(0.4, step=2)  # the day and the run would allow it: the step not
    assert caught.value.level == "step"
    assert daily.total.reserved_pusd == 0 and budget.run.reserved_pusd == 0
    assert budget.steps[2].reserved_pusd == 0


def test_the_day_turns_at_the_configured_hour_and_a_held_call_settles_into_its_day(
) -> None:
    zone = ZoneInfo("Europe/Paris")
    before = datetime(2026, 12, 3, 5, 59, tzinfo=zone).timestamp()
    now = [before]
    daily = _daily(now, day_usd=1.0, timezone="Europe/Paris", day_starts_at_hour=6)
    budget = Budget("r", 10.0, daily=daily)
    budget.settle(budget.reserve(0.6), 0.6)
    held = budget.reserve(0.3)
    yesterday = daily.total
    assert daily.day == "2026-12-02"
    now[0] = before + 120  # 06:01: a new day
    budget.reserve(0.9)  # the new day has its whole budget
    assert daily.day == "2026-12-03" and daily.total is not yesterday
    budget.settle(held, 0.3)
    assert yesterday.spent_usd == pytest.approx(0.9) and yesterday.reserved_pusd == 0
    assert daily.total.spent_pusd == 0 and daily.total.reserved_usd == pytest.approx(0.9)


def test_a_day_window_spans_a_daylight_saving_change() -> None:
    zone = ZoneInfo("Europe/Paris")
    at = datetime(2026, 3, 29, 12, 0, tzinfo=zone).timestamp()  # clocks went forward
    day, start, end = day_window(at, "Europe/Paris", 0)
    assert day == "2026-03-29" and end - start == 23 * 3600
    assert day_window(start - 1, "Europe/Paris", 0)[0] == "2026-03-28"


def test_a_bad_time_zone_is_a_config_error_naming_the_key() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env={"WARDEN_BUDGETS_TIMEZONE": "Mars/Olympus"})
    assert caught.value.key == "budgets.timezone"
    with pytest.raises(ConfigError) as hour:
        load_settings(env={"WARDEN_BUDGETS_DAY_STARTS_AT_HOUR": "24"})
    assert hour.value.key == "budgets.day_starts_at_hour"


@pytest.mark.parametrize(("fraction", "spent", "wants"), [
    (0.0, 0.99, False),  # 0: never
    (0.25, 0.70, False),  # 0.30 of 1.00 left
    (0.25, 0.80, True),  # 0.20 left: below a quarter
])
def test_wants_downgrade_when_what_is_left_falls_below_the_fraction(
    fraction: float, spent: float, wants: bool,
) -> None:
    budget = Budget("r", 1.0, downgrade_below=fraction)
    budget.settle(budget.reserve(spent), spent)
    assert budget.wants_downgrade() is wants


def test_wants_downgrade_counts_calls_in_flight() -> None:
    budget = Budget("r", 1.0, downgrade_below=0.25)
    budget.reserve(0.8)
    assert budget.wants_downgrade()


@pytest.mark.anyio
async def test_a_new_daily_spend_loads_todays_spend_per_tenant_from_the_journal(
    journal: Journal, tmp_path: Path,
) -> None:
    await journal.create_run("a", text="t", status="queued", tenant="acme")
    await journal.create_run("b", text="t", status="queued")
    for run_id, cost in (("a", 0.25), ("a", 0.5), ("b", 0.125)):
        await journal.record_turn(
            run_id, key=f"{run_id}/{cost}", step=0, turn=0, purpose="step",
            model="claude-haiku-4-5", request={}, response=[],
            usage=Usage(input_tokens=100, output_tokens=10, cache_read_input_tokens=7,
                        cache_creation_input_tokens=3),
            cost_usd=cost, latency_ms=1.0)
    settings = load_settings(env={}, overrides={("budgets", "tenant_day_usd"): 1.0,
                                                ("budgets", "day_usd"): 2.0})

    daily = await DailySpend.load(journal, settings.budgets)
    tomorrow = await DailySpend.load(journal, settings.budgets,
                                     clock=lambda: daily.ends_at + 1)
    report = await spend_report(daily, journal, settings, tenant="acme")
    unknown = await spend_report(daily, journal, settings, tenant="zed")

    assert daily.total.spent_usd == pytest.approx(0.875)
    assert daily.total.spent_tokens == 3 * 120
    assert daily.tenants["acme"].spent_usd == pytest.approx(0.75)
    assert daily.tenants["default"].spent_usd == pytest.approx(0.125)
    assert tomorrow.total.spent_pusd == 0 and tomorrow.tenants == {}
    with pytest.raises(BudgetExhaustedError) as caught:
        Budget("c", 5.0, daily=daily, tenant="acme").reserve(0.3)
    assert caught.value.level == "tenant"
    (acme,) = report.tenants
    assert (acme.name, acme.left_usd, acme.cache_read_tokens, acme.cache_write_tokens) == (
        "acme", 0.25, 14, 6)
    assert [(r.name, r.tenant, r.spent_usd) for r in report.runs] == [("a", "acme", 0.75)]
    assert report.day.left_usd == pytest.approx(1.125)
    (zed,) = unknown.tenants  # asked for, reported at 0, and not kept
    assert (zed.name, zed.spent_usd, zed.left_usd, unknown.runs) == ("zed", 0.0, 1.0, [])
    assert "zed" not in daily.tenants

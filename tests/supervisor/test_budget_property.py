"""The budget bound, property-based: many concurrent runs across tenants, through the real
run supervisor and ``CallGate`` on the in-memory dispatcher, against a fake model whose
usage (within each call's limits: prompt tokens at most the gate's estimate, output at
most ``max_tokens``) and failures (retryable and not) are random. Whatever the limits at
each level (day, tenant, run, step; USD and tokens; 0 = none), what the recorded calls
cost never passes any level's limit (overshoot 0 USD and 0 tokens), every refused call
names a level that was really short, and nothing stays held."""

from __future__ import annotations

import itertools
import math
import random
import re
from collections import defaultdict
from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from warden.actors.errors import ModelRequestError, ModelUnavailableError
from warden.actors.model import ModelReply, ModelRequest
from warden.actors.pricing import PriceTable
from warden.bus.wire import TextBlock, Usage
from warden.supervisor.budget import Budget, Hold
from warden.supervisor.context import RunContext
from warden.supervisor.dispatch import InMemoryDispatcher
from warden.supervisor.errors import BudgetExhaustedError
from warden.supervisor.journal import open_journal
from warden.supervisor.run import RunSupervisor, state_of_new_run
from warden.supervisor.spend import DailySpend

from tests.supervisor.run_fakes import FakeModel, plan_of, registry, settings_for, text, use

pytestmark = pytest.mark.anyio

TENANTS = ("t0", "t1", "t2")
_examples = itertools.count()


def _usd(low: float, high: float) -> st.SearchStrategy[float]:
    """0 (no limit) or a limit in [low, high]."""
    return st.one_of(st.just(0.0), st.floats(low, high, allow_nan=False))


def _tokens(low: int, high: int) -> st.SearchStrategy[int]:
    return st.one_of(st.just(0), st.integers(low, high))


LIMITS = st.fixed_dictionaries({
    # A call's worst case is about $0.003 and 1,000 tokens (max_tokens 512): these let a
    # few calls through at each level, then refuse.
    "budgets__day_usd": _usd(0.01, 0.2),
    "budgets__day_tokens": _tokens(3_000, 60_000),
    "budgets__tenant_day_usd": _usd(0.005, 0.1),
    "budgets__tenant_day_tokens": _tokens(2_000, 30_000),
    "limits__run_budget_usd": st.floats(0.004, 0.05, allow_nan=False),
    "budgets__run_tokens": _tokens(1_500, 15_000),
    "budgets__step_usd": _usd(0.003, 0.02),
    "budgets__step_tokens": _tokens(1_200, 6_000),
    "budgets__tenants": st.one_of(st.just({}), st.fixed_dictionaries({"t2": st.fixed_dictionaries(
        {"day_usd": _usd(0.005, 0.1), "day_tokens": _tokens(2_000, 30_000)})})),
})


def random_model(seed: int, failure_rate: float) -> FakeModel:
    """Plans 1-3 research steps; a step's turn uses a tool or answers; usage is random
    within the call's limits; some calls fail, retryably or for good."""
    rng = random.Random(seed)

    def answer(request: ModelRequest) -> ModelReply | Exception:
        roll = rng.random()
        if roll < failure_rate:
            if roll < failure_rate / 4:
                return ModelRequestError(request.model, "refused for good (test)")
            # A 503, not a 429: a 429 is the rate limiter's signal (it would slow the whole
            # daemon down, AIMD), and this test is about the budget's bound.
            return ModelUnavailableError(request.model, "unavailable (test)", status=503,
                                         retry_after=0.0)
        if request.purpose == "plan":
            reply = plan_of(*[("research", f"part {i}") for i in range(rng.randint(1, 3))])
        elif request.purpose == "step" and rng.random() < 0.4:
            reply = use("echo", text="x")
        else:
            reply = text("done")
        prompt = PriceTable.estimate_prompt_tokens(request.system, request.messages,
                                                   request.tools)
        inputs = rng.randint(0, prompt)
        read = rng.randint(0, prompt - inputs)
        written = rng.randint(0, prompt - inputs - read)
        usage = Usage(input_tokens=inputs, output_tokens=rng.randint(0, request.max_tokens),
                      cache_read_input_tokens=read, cache_creation_input_tokens=written)
        return ModelReply(content=reply.content or [TextBlock(text="?")],
                          stop_reason="end_turn", usage=usage, model=request.model)

    return FakeModel(answer)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(limits=LIMITS,
       tenants=st.lists(st.sampled_from(TENANTS), min_size=2, max_size=8),
       seed=st.integers(0, 2**32 - 1),
       failure_rate=st.sampled_from([0.0, 0.1, 0.3]))
async def test_spend_never_passes_any_level_and_every_refusal_names_its_level(
    tmp_path: Path, limits: dict[str, object], tenants: list[str], seed: int,
    failure_rate: float,
) -> None:
    example = tmp_path / f"e{next(_examples)}"
    config = settings_for(example, models__max_tokens=512, breaker__failure_threshold=10**6,
                          models__attempts=2, **limits)
    budgets = config.budgets
    refusals: list[BudgetExhaustedError] = []
    real_reserve = Budget.reserve

    def reserve(self: Budget, worst_usd: float, worst_tokens: int = 0, *,
                step: int = -1) -> Hold:
        try:
            return real_reserve(self, worst_usd, worst_tokens, step=step)
        except BudgetExhaustedError as exc:
            refusals.append(exc)
            raise

    Budget.reserve = reserve  # type: ignore[method-assign]
    try:
        async with open_journal(example / "journal.sqlite") as journal:
            daily = DailySpend(budgets)
            model = random_model(seed, failure_rate)
            tools = registry()
            ctx = RunContext.build(
                config, journal, InMemoryDispatcher(config, model, tools,
                                                    data_dir=example / "data"),
                tools, spend=daily)
            endings: dict[str, str] = {}

            async def one(index: int, tenant: str) -> None:
                run_id = f"r-{index}"
                await journal.create_run(run_id, text="do it", status="queued", tenant=tenant)
                state = state_of_new_run(run_id, "do it", None, None, tenant=tenant)
                endings[run_id] = await RunSupervisor(ctx, state).run()

            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:
                    for index, tenant in enumerate(tenants):
                        tg.start_soon(one, index, tenant)
            rows = await journal._rows(
                "SELECT m.run_id, r.tenant, m.step, m.cost_usd, m.input_tokens + "
                "m.output_tokens + m.cache_creation_tokens + m.cache_read_tokens "
                "FROM model_calls m JOIN runs r ON r.id = m.run_id")
            errors = {run_id: (await journal.get_run(run_id)) for run_id in endings}
    finally:
        Budget.reserve = real_reserve  # type: ignore[method-assign]

    spent: dict[tuple[str, ...], list[float]] = defaultdict(list)
    tokens: dict[tuple[str, ...], int] = defaultdict(int)
    for run_id, tenant, step, cost, used in rows:
        levels = [("day",), ("tenant", tenant), ("run", run_id)]
        if step is not None and step >= 0:
            levels.append(("step", run_id, str(step)))
        for level in levels:
            spent[level].append(cost)
            tokens[level] += used

    def limit(level: tuple[str, ...]) -> tuple[float, int]:
        match level[0]:
            case "day":
                return budgets.day_usd, budgets.day_tokens
            case "tenant":
                own = budgets.tenants.get(level[1])
                if own is not None:
                    return own.day_usd or 0.0, own.day_tokens or 0
                return budgets.tenant_day_usd, budgets.tenant_day_tokens
            case "run":
                return config.limits.run_budget_usd, budgets.run_tokens
        return budgets.step_usd, budgets.step_tokens

    for level, costs in spent.items():
        usd_limit, token_limit = limit(level)
        if usd_limit:
            assert max(0.0, math.fsum(costs) - usd_limit) == 0.0, level
        if token_limit:
            assert max(0, tokens[level] - token_limit) == 0, level
    for exc in refusals:
        assert exc.level in ("day", "tenant", "run", "step")
        assert exc.budget_usd > 0  # a level with a limit in that unit
        assert exc.spent_usd + exc.needed_usd > exc.budget_usd  # really short
    for run_id, status in endings.items():
        run = errors[run_id]
        assert run is not None and run.status == status
        if status == "budget_exhausted":
            assert re.match(r"(day|tenant|run|step) budget ", run.error or ""), run.error
    assert sum(s == "budget_exhausted" for s in endings.values()) <= len(refusals)
    assert daily.total.reserved_pusd == 0 and daily.total.reserved_tokens == 0
    assert all(a.reserved_pusd == 0 and a.reserved_tokens == 0
               for a in daily.tenants.values())

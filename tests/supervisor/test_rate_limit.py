"""The rate limiter (``supervisor/rate_limit.py``): buckets, the fair order, AIMD on 429,
the retry-after pause, the wait bound; on a fake clock where nothing has to wait, on the
real one (tens of milliseconds) where the order of waiting calls is the point."""

from __future__ import annotations

import math
from collections.abc import Callable

import anyio
import pytest
from warden.actors.pricing import PriceTable
from warden.bus.wire import Message, TextBlock, TurnReply, Usage
from warden.config import ConfigError, load_settings
from warden.supervisor import ModelCallFailedError, RateLimiter
from warden.supervisor.interceptors import ModelCall
from warden.supervisor.rate_limit import EndpointStatistics, FairQueue, Permit, TokenBucket

pytestmark = pytest.mark.anyio

MODEL = "claude-haiku-4-5"


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def limiter(clock: Callable[[], float] | None = None, **overrides: object) -> RateLimiter:
    values = {tuple(k.split("__")): v for k, v in overrides.items()}
    settings = load_settings(env={}, overrides=values)  # type: ignore[arg-type]
    kwargs = {} if clock is None else {"clock": clock}
    return RateLimiter(settings.rate_limits, patience_s=5.0, retry_after_cap_s=3.0,
                       **kwargs)  # type: ignore[arg-type]


async def acquire(rl: RateLimiter, c: ModelCall, model: str, tenant: str, run_id: str,
                  attempt: int, after: Permit | None = None) -> Permit:
    """``rl.acquire`` with the call's tokens as the gate gives them: the budget's
    estimate, the prompt's ``estimate_prompt_tokens`` plus ``max_tokens``."""
    tokens = PriceTable.estimate_prompt_tokens(c.system, c.messages, c.tools) + c.max_tokens
    return await rl.acquire(c, model, tenant, run_id, attempt, after, tokens=tokens)


def call(key: str = "r/c0", *, max_tokens: int = 100, model: str = MODEL) -> ModelCall:
    return ModelCall(key=key, purpose="plan", role="planner", model=model, system="plan it",
                     messages=[Message(role="user", content=[TextBlock(text="do it")])],
                     tools=[], max_tokens=max_tokens)


def ok(tokens: int = 10) -> TurnReply:
    return TurnReply(run_id="r", step=0, turn=0,
                     assistant=Message(role="assistant", content=[TextBlock(text="ok")]),
                     usage=Usage(input_tokens=tokens // 2, output_tokens=tokens - tokens // 2))


def rate_limited(retry_after_s: float | None = None, *, retryable: bool = True) -> TurnReply:
    return TurnReply(run_id="r", step=0, turn=0, error="rate_limit_error: slow down",
                     retryable=retryable, status=429, retry_after_s=retry_after_s)


def stats(rl: RateLimiter, model: str = MODEL) -> EndpointStatistics:
    return next(s for s in rl.statistics() if s.model == model)


# -- buckets ----------------------------------------------------------------------------


def test_a_bucket_holds_its_window_and_refills_at_its_rate() -> None:
    bucket = TokenBucket.per_minute(60.0, 10.0, now=0.0)  # 1 a second, 10 at most
    assert bucket.capacity == 10.0 and bucket.ready_at(10.0, 0.0) == 0.0
    bucket.level -= 10.0
    assert bucket.ready_at(1.0, 0.0) == 1.0
    assert bucket.ready_at(4.0, 2.0) == 4.0
    bucket.refill(100.0)
    assert bucket.level == 10.0  # never more than the window's allowance


def test_a_demand_bigger_than_the_bucket_waits_for_a_full_bucket_and_goes_into_debt() -> None:
    bucket = TokenBucket.per_minute(60.0, 2.0, now=0.0)
    assert bucket.ready_at(50.0, 0.0) == 0.0
    bucket.level -= 50.0
    assert bucket.ready_at(1.0, 0.0) == 49.0


async def test_calls_within_the_limit_go_at_once_and_the_next_fails_when_it_cannot_in_time(
) -> None:
    clock = FakeClock()
    rl = limiter(clock, rate_limits__models={MODEL: {"rpm": 120.0}},
                 rate_limits__window_s=1.0, rate_limits__max_wait_s=0.4)  # 2 a second

    for index in range(2):
        await acquire(rl, call(f"r/c{index}"), MODEL, "t", "r", 1)
    with anyio.fail_after(1), pytest.raises(ModelCallFailedError) as caught:
        await acquire(rl, call("r/c2"), MODEL, "t", "r", 1)  # capacity at 0.5 s: past 0.4 s
    assert "rate_limits.max_wait_s = 0.4 s" in str(caught.value)
    assert "120 requests/min" in str(caught.value)
    assert stats(rl).waiting == 0  # the refused call left the queue


async def test_a_call_waits_for_capacity_within_its_bound() -> None:
    rl = limiter(rate_limits__models={MODEL: {"rpm": 1200.0}}, rate_limits__window_s=0.05)
    started = anyio.current_time()
    for index in range(3):  # one at once, then one every 50 ms
        await acquire(rl, call(f"r/c{index}"), MODEL, "t", "r", 1)
    assert anyio.current_time() - started >= 0.09


async def test_a_calls_tokens_are_its_estimate_until_its_usage_corrects_them() -> None:
    clock = FakeClock()
    rl = limiter(clock, rate_limits__models={MODEL: {"tpm": 1500.0}},
                 rate_limits__max_wait_s=1.0)
    first = await acquire(rl, call("r/c0", max_tokens=1000), MODEL, "t", "r", 1)
    assert first.tokens > 1000  # the prompt's estimate plus max_tokens

    with pytest.raises(ModelCallFailedError, match="1500 tokens/min"):
        await acquire(rl, call("r/c1", max_tokens=1000), MODEL, "t", "r", 1)
    assert rl.settle(first, ok(tokens=100)) is False  # used 100: the rest comes back
    second = await acquire(rl, call("r/c2", max_tokens=1000), MODEL, "t", "r", 1)
    assert second.tokens > 1000


# -- the fair order ---------------------------------------------------------------------


def test_the_queue_takes_turns_over_tenants_then_runs_and_is_fifo_within_a_run() -> None:
    queue: FairQueue[str] = FairQueue()
    for tenant, run_id, item in [("a", "a1", "a1-1"), ("a", "a1", "a1-2"), ("a", "a1", "a1-3"),
                                 ("a", "a2", "a2-1"), ("b", "b1", "b1-1"), ("b", "b1", "b1-2")]:
        queue.push(tenant, run_id, item)
    order = []
    while queue:
        tenant, _ = next(queue.heads())
        order.append(queue.pop(tenant))
    assert order == ["a1-1", "b1-1", "a2-1", "b1-2", "a1-2", "a1-3"]


def test_an_item_taken_out_of_the_queue_leaves_the_turns_as_they_were() -> None:
    queue: FairQueue[str] = FairQueue()
    for tenant, item in [("a", "a-1"), ("b", "b-1"), ("c", "c-1")]:
        queue.push(tenant, tenant, item)
    queue.remove("b", "b", "b-1")
    queue.remove("b", "b", "b-1")  # idempotent
    assert [item for _, item in queue.heads()] == ["a-1", "c-1"] and len(queue) == 2


async def test_waiting_calls_are_served_in_turns_over_tenants_and_runs_not_by_arrival() -> None:
    rl = limiter(rate_limits__models={MODEL: {"rpm": 1200.0}}, rate_limits__window_s=0.05)
    await acquire(rl, call("x/c0"), MODEL, "x", "x", 1)  # empties the bucket: the rest all wait
    served: list[str] = []

    async def one(tenant: str, run_id: str, name: str) -> None:
        await acquire(rl, call(f"{run_id}/{name}"), MODEL, tenant, run_id, 1)
        served.append(name)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for tenant, run_id, name in [("a", "a1", "a1-1"), ("a", "a1", "a1-2"),
                                         ("a", "a1", "a1-3"), ("a", "a2", "a2-1"),
                                         ("b", "b1", "b1-1"), ("b", "b1", "b1-2")]:
                tg.start_soon(one, tenant, run_id, name)
    assert served == ["a1-1", "b1-1", "a2-1", "b1-2", "a1-2", "a1-3"]


async def test_a_tenant_at_its_own_limit_is_skipped_not_waited_for() -> None:
    clock = FakeClock()
    rl = limiter(clock, rate_limits__tenant_rpm=60.0, rate_limits__window_s=1.0)
    await acquire(rl, call("a/c0"), MODEL, "a", "a", 1)  # tenant a's one request this second
    waiting = anyio.Event()

    async def second_of_a() -> None:
        waiting.set()
        await acquire(rl, call("a/c1"), MODEL, "a", "a", 1)

    async with anyio.create_task_group() as tg:
        tg.start_soon(second_of_a)
        await waiting.wait()
        await anyio.wait_all_tasks_blocked()
        assert stats(rl).waiting == 1
        with anyio.fail_after(0.5):
            await acquire(rl, call("b/c0"), MODEL, "b", "b", 1)  # b is served past a's waiter
        assert stats(rl).waiting == 1
        tg.cancel_scope.cancel()
    assert stats(rl).waiting == 0


async def test_a_call_that_stops_waiting_leaves_the_queue_and_wakes_the_others_once() -> None:
    clock = FakeClock()
    reads = 0

    def counted() -> float:
        nonlocal reads
        reads += 1
        return clock.now

    rl = limiter(counted, rate_limits__models={MODEL: {"rpm": 60.0}}, rate_limits__window_s=1.0)
    await acquire(rl, call("x/c0"), MODEL, "x", "x", 1)  # the one request of this second

    async with anyio.create_task_group() as tg:
        scopes = []
        for tenant in ("a", "b"):
            scope = anyio.CancelScope()
            scopes.append(scope)

            async def wait(tenant: str = tenant, scope: anyio.CancelScope = scope) -> None:
                with scope:
                    await acquire(rl, call(f"{tenant}/c0"), MODEL, tenant, tenant, 1)

            tg.start_soon(wait)
        await anyio.wait_all_tasks_blocked()
        assert stats(rl).waiting == 2
        scopes[0].cancel()  # a's run ends while it waits
        with anyio.fail_after(2):
            await anyio.wait_all_tasks_blocked()  # b woke, found nothing yet, sleeps again
        assert stats(rl).waiting == 1 and reads < 20
        tg.cancel_scope.cancel()


# -- AIMD on 429 ------------------------------------------------------------------------


async def sent(rl: RateLimiter, clock: FakeClock, count: int, every_s: float) -> list[Permit]:
    permits = []
    for index in range(count):
        permits.append(await acquire(rl, call(f"r/c{index}"), MODEL, "t", "r", 1))
        clock.now += every_s
    return permits


async def test_a_429_without_a_configured_limit_halves_the_rate_seen_and_pauses_for_retry_after(
) -> None:
    clock = FakeClock()
    rl = limiter(clock, rate_limits__window_s=10.0)
    permits = await sent(rl, clock, 20, every_s=0.1)  # 20 in 2 s: 600 a minute
    assert stats(rl).limit_rpm is None

    assert rl.settle(permits[-1], rate_limited(retry_after_s=2.0)) is True
    assert stats(rl).limit_rpm == pytest.approx(300.0)
    assert stats(rl).paused_for_s == pytest.approx(2.0)
    # A 429 to a request sent before the decrease is of the same round: not lowered again.
    assert rl.settle(permits[-2], rate_limited()) is True
    assert stats(rl).limit_rpm == pytest.approx(300.0)


async def test_a_429_to_a_request_sent_under_the_lowered_limit_lowers_it_again() -> None:
    clock = FakeClock()
    rl = limiter(clock, rate_limits__models={MODEL: {"rpm": 600.0}})
    first = await acquire(rl, call("r/c0"), MODEL, "t", "r", 1)
    rl.settle(first, rate_limited())
    assert stats(rl).limit_rpm == pytest.approx(300.0)
    clock.now += 1.0
    again = await acquire(rl, call("r/c0"), MODEL, "t", "r", 1, first)
    rl.settle(again, rate_limited())
    assert stats(rl).limit_rpm == pytest.approx(150.0)


async def test_the_retry_after_pause_is_capped_and_holds_the_endpoint() -> None:
    clock = FakeClock()
    rl = limiter(clock, rate_limits__max_wait_s=2.0)  # retry_after_cap_s = 3 (limiter())
    permit = await acquire(rl, call(), MODEL, "t", "r", 1)
    rl.settle(permit, rate_limited(retry_after_s=60.0))
    assert stats(rl).paused_for_s == pytest.approx(3.0)
    with pytest.raises(ModelCallFailedError, match="slow down; still rate limited"):
        await acquire(rl, call(), MODEL, "t", "r", 1, permit)  # the pause outlasts the bound


async def test_successes_raise_a_lowered_limit_additively_up_to_the_configured_one() -> None:
    clock = FakeClock()
    rl = limiter(clock, rate_limits__models={MODEL: {"rpm": 600.0}},
                 rate_limits__aimd_increase_rpm=100.0)
    permit = await acquire(rl, call(), MODEL, "t", "r", 1)
    rl.settle(permit, rate_limited())
    limits = []
    for _ in range(4):
        rl.settle(permit, ok())
        limits.append(stats(rl).limit_rpm)
    assert limits == pytest.approx([400.0, 500.0, 600.0, 600.0])


async def test_without_a_configured_limit_a_recovered_endpoint_has_none_again() -> None:
    clock = FakeClock()
    rl = limiter(clock, rate_limits__window_s=10.0, rate_limits__aimd_increase_rpm=100.0)
    permits = await sent(rl, clock, 20, every_s=0.1)
    rl.settle(permits[-1], rate_limited())
    assert stats(rl).limit_rpm == pytest.approx(300.0)
    for permit in permits[:2]:
        rl.settle(permit, ok())
    assert stats(rl).limit_rpm == pytest.approx(500.0)
    rl.settle(permits[2], ok())  # back at the 600 it was lowered from: lifted
    assert stats(rl).limit_rpm is None


async def test_a_429_no_retry_repairs_is_not_the_limiters() -> None:
    clock = FakeClock()
    rl = limiter(clock)
    permit = await acquire(rl, call(), MODEL, "t", "r", 1)
    assert rl.settle(permit, rate_limited(retryable=False)) is False
    assert stats(rl).limit_rpm is None and stats(rl).paused_for_s == 0.0


async def test_with_no_limit_a_call_goes_at_once_and_takes_no_tokens() -> None:
    clock = FakeClock()
    rl = limiter(clock)
    permit = await acquire(rl, call(), MODEL, "t", "r", 1)
    assert permit.tokens == 0.0 and permit.deadline == math.inf
    assert rl.settle(permit, ok()) is False
    assert stats(rl).observed_rpm == pytest.approx(60.0)  # one in the first second


# -- settings ---------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "value", "named"), [
    ("rate_limits__models", {MODEL: {"rpm": -1.0}}, f"rate_limits.models.{MODEL}.rpm"),
    ("rate_limits__tenant_tpm", -5.0, "rate_limits.tenant_tpm"),
    ("rate_limits__max_wait_s", 0.0, "rate_limits.max_wait_s"),
    ("rate_limits__aimd_decrease", 1.0, "rate_limits.aimd_decrease"),
])
def test_a_bad_rate_limit_setting_is_a_config_error_naming_its_key(
    key: str, value: object, named: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env={}, overrides={tuple(key.split("__")): value})
    assert caught.value.key == named

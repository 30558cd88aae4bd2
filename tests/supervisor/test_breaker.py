"""Circuit breaker: closed → open → half_open → closed/open, on a fake clock."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest
from warden.config import BreakerSettings
from warden.supervisor.breaker import CircuitBreaker
from warden.supervisor.errors import BreakerOpenError


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Boom(Exception):
    pass


def make_breaker(clock: FakeClock, *, threshold: int = 3, probes: int = 2) -> CircuitBreaker:
    return CircuitBreaker(
        "model", failure_threshold=threshold, cooldown=30.0, half_open_probes=probes, clock=clock
    )


async def fail(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        with pytest.raises(Boom):
            async with breaker.guard():
                raise Boom


async def succeed(breaker: CircuitBreaker) -> None:
    async with breaker.guard():
        pass


async def open_breaker(clock: FakeClock, **kwargs: int) -> CircuitBreaker:
    breaker = make_breaker(clock, **kwargs)
    await fail(breaker, breaker.failure_threshold)
    assert breaker.state == "open"
    return breaker


@pytest.mark.anyio
async def test_breaker_opens_after_threshold_consecutive_failures(
    logs: list[dict[str, object]],
) -> None:
    breaker = make_breaker(FakeClock(), threshold=3)
    await fail(breaker, 2)
    assert breaker.state == "closed"
    await fail(breaker)
    assert breaker.state == "open"
    assert [(e["event"], e["breaker"], e["failures"]) for e in logs] == [
        ("breaker_opened", "model", 3)
    ]


@pytest.mark.anyio
async def test_a_success_resets_the_consecutive_failure_count() -> None:
    breaker = make_breaker(FakeClock(), threshold=3)
    await fail(breaker, 2)
    await succeed(breaker)
    await fail(breaker, 2)
    assert breaker.state == "closed"
    assert breaker.statistics().consecutive_failures == 2


@pytest.mark.anyio
async def test_open_breaker_fails_fast_without_running_the_call() -> None:
    clock = FakeClock()
    breaker = await open_breaker(clock)
    clock.now += 10.0
    ran = False
    with pytest.raises(BreakerOpenError) as raised:
        async with breaker.guard():
            ran = True
    assert not ran
    assert raised.value.name == "model"
    assert raised.value.retry_after == pytest.approx(20.0)
    assert raised.value.retryable
    with pytest.raises(BreakerOpenError):
        breaker.acquire()
    assert breaker.statistics().calls_rejected == 2


@pytest.mark.anyio
async def test_after_cooldown_half_open_lets_exactly_the_configured_probes_through(
    logs: list[dict[str, object]],
) -> None:
    clock = FakeClock()
    breaker = await open_breaker(clock, probes=2)
    clock.now += 29.9
    assert breaker.state == "open"
    clock.now += 0.1
    assert breaker.state == "half_open"
    assert [e["event"] for e in logs] == ["breaker_opened", "breaker_half_opened"]
    breaker.acquire()
    breaker.acquire()
    with pytest.raises(BreakerOpenError):
        breaker.acquire()
    assert breaker.statistics().probes_in_flight == 2


@pytest.mark.anyio
async def test_half_open_breaker_closes_after_the_probes_succeed(
    logs: list[dict[str, object]],
) -> None:
    clock = FakeClock()
    breaker = await open_breaker(clock, probes=2)
    clock.now += 30.0
    await succeed(breaker)
    assert breaker.state == "half_open"
    await succeed(breaker)
    assert breaker.state == "closed"
    assert [e["event"] for e in logs] == ["breaker_opened", "breaker_half_opened", "breaker_closed"]
    await succeed(breaker)  # closed again: calls go through without probe limits
    assert breaker.statistics().consecutive_failures == 0


@pytest.mark.anyio
async def test_a_failing_probe_reopens_the_breaker_for_a_full_cooldown(
    logs: list[dict[str, object]],
) -> None:
    clock = FakeClock()
    breaker = await open_breaker(clock, probes=2)
    clock.now += 30.0
    await succeed(breaker)
    await fail(breaker)
    assert breaker.state == "open"
    assert [e["event"] for e in logs] == ["breaker_opened", "breaker_half_opened", "breaker_opened"]
    assert logs[-1]["failures"] == 4  # three that opened it, then the failed probe
    with pytest.raises(BreakerOpenError) as raised:
        breaker.acquire()
    assert raised.value.retry_after == pytest.approx(30.0)
    assert breaker.statistics().times_opened == 2


@pytest.mark.anyio
async def test_cancellation_is_not_a_failure() -> None:
    breaker = make_breaker(FakeClock(), threshold=1)
    with anyio.CancelScope() as scope:
        async with breaker.guard():
            scope.cancel()
            await anyio.lowlevel.checkpoint()
    assert scope.cancelled_caught
    assert breaker.state == "closed"
    assert breaker.statistics().consecutive_failures == 0


@pytest.mark.anyio
async def test_a_cancelled_probe_frees_its_slot_for_another_probe() -> None:
    clock = FakeClock()
    breaker = await open_breaker(clock, probes=1)
    clock.now += 30.0
    with anyio.CancelScope() as scope:
        async with breaker.guard():
            with pytest.raises(BreakerOpenError):
                breaker.acquire()  # the only slot is taken
            scope.cancel()
            await anyio.lowlevel.checkpoint()
    assert breaker.state == "half_open"
    assert breaker.statistics().probes_in_flight == 0
    await succeed(breaker)
    assert breaker.state == "closed"


@pytest.mark.anyio
async def test_a_late_result_from_before_the_breaker_opened_is_not_counted() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock, threshold=2, probes=1)
    started = anyio.Event()
    finish = anyio.Event()

    async def slow_call() -> None:
        async with breaker.guard():
            started.set()
            await finish.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(slow_call)
        await started.wait()
        await fail(breaker, 2)  # opens while slow_call is in flight
        clock.now += 30.0
        assert breaker.state == "half_open"
        finish.set()  # slow_call succeeds, but it was let through while closed
    assert breaker.state == "half_open"
    assert breaker.statistics().probe_successes == 0


def test_from_settings_uses_the_settings_thresholds() -> None:
    settings = BreakerSettings(failure_threshold=7, cooldown_s=12.5, half_open_probes=3)
    breaker = CircuitBreaker.from_settings("tool", settings, clock=FakeClock())
    assert (breaker.failure_threshold, breaker.cooldown, breaker.half_open_probes) == (7, 12.5, 3)
    assert breaker.state == "closed"


@pytest.mark.parametrize(
    ("threshold", "cooldown", "probes"), [(0, 1.0, 1), (1, -1.0, 1), (1, 1.0, 0)]
)
def test_invalid_thresholds_are_rejected(threshold: int, cooldown: float, probes: int) -> None:
    with pytest.raises(ValueError, match="'model'"):
        CircuitBreaker(
            "model", failure_threshold=threshold, cooldown=cooldown, half_open_probes=probes
        )


def test_release_frees_a_half_open_probe_slot_without_a_verdict() -> None:
    now = [0.0]
    breaker = CircuitBreaker("b", failure_threshold=1, cooldown=1.0, half_open_probes=1,
                             clock=lambda: now[0])
    breaker.acquire()
    breaker.record_failure()
    now[0] = 2.0
    breaker.acquire()  # the one probe
    with pytest.raises(BreakerOpenError):
        breaker.acquire()  # its slot is taken
    breaker.release()
    assert breaker.state == "half_open"
    breaker.acquire()  # the slot is free again
    breaker.record_success()
    assert breaker.state == "closed"

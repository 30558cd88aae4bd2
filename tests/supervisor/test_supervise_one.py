"""``supervise_one``: the rules of a supervisor with one child, run in the caller's task."""

from __future__ import annotations

import anyio
import pytest
from warden.supervisor import RestartIntensityExceededError, supervise_one

pytestmark = pytest.mark.anyio


class Child:
    """Exits as scripted, one outcome per start: ``None`` returns, an exception raises."""

    def __init__(self, *outcomes: Exception | None) -> None:
        self.outcomes = list(outcomes)
        self.starts = 0

    async def __call__(self) -> None:
        self.starts += 1
        outcome = self.outcomes.pop(0)
        if outcome is not None:
            raise outcome


async def test_a_transient_child_that_returns_is_not_restarted() -> None:
    child = Child(None)
    await supervise_one("sup", "c", child, restart="transient")
    assert child.starts == 1


async def test_a_transient_child_that_crashes_is_restarted_until_it_returns() -> None:
    child = Child(RuntimeError("1"), RuntimeError("2"), None)
    await supervise_one("sup", "c", child, restart="transient", max_restarts=3, period=60)
    assert child.starts == 3


async def test_a_permanent_child_is_restarted_after_a_normal_exit_too() -> None:
    child = Child(None, None, RuntimeError("x"))
    with pytest.raises(RestartIntensityExceededError):
        await supervise_one("sup", "c", child, restart="permanent", max_restarts=1, period=60)
    assert child.starts == 2


async def test_past_its_restart_intensity_it_escalates_with_the_last_crash_as_cause() -> None:
    child = Child(RuntimeError("1"), RuntimeError("2"), RuntimeError("3"), None)
    with pytest.raises(RestartIntensityExceededError) as raised:
        await supervise_one("run:r-1", "run", child, max_restarts=2, period=60)
    assert child.starts == 3
    assert isinstance(raised.value.__cause__, RuntimeError)
    assert str(raised.value.__cause__) == "3"
    assert (raised.value.supervisor, raised.value.child) == ("run:r-1", "run")


async def test_being_cancelled_stops_the_child_and_is_not_a_crash() -> None:
    started = anyio.Event()
    starts = 0

    async def forever() -> None:
        nonlocal starts
        starts += 1
        started.set()
        await anyio.sleep_forever()

    async with anyio.create_task_group() as tg:
        tg.start_soon(supervise_one, "sup", "c", forever)
        with anyio.fail_after(5):
            await started.wait()
        tg.cancel_scope.cancel()
    assert starts == 1


async def test_a_temporary_child_is_refused() -> None:
    child = Child(None)
    with pytest.raises(ValueError, match="transient or permanent"):
        await supervise_one("sup", "c", child, restart="temporary")
    assert child.starts == 0

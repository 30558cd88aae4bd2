"""Supervision: strategy x restart type x exit kind, intensity, escalation, shutdown.

Children record what happens to them in a journal ("start B", "crash B", "stop B");
tests wait on the journal changing (never on time) and compare the whole sequence.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import anyio
import anyio.lowlevel
import pytest
from anyio.abc import TaskStatus
from warden.supervisor.errors import RestartIntensityExceededError
from warden.supervisor.supervision import (
    ChildInfo,
    ChildSpec,
    RestartType,
    Strategy,
    open_supervisor,
    supervisor_child,
)

pytestmark = pytest.mark.anyio

STRATEGIES: list[Strategy] = ["one_for_one", "one_for_all", "rest_for_one"]
RESTART_TYPES: list[RestartType] = ["permanent", "transient", "temporary"]
ExitKind = Literal["normal", "crash", "shutdown"]
EXIT_KINDS: list[ExitKind] = ["normal", "crash", "shutdown"]





class Boom(Exception):
    pass


class Journal:
    """An append-only list of events that tests can wait on."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self._changed = anyio.Event()

    def add(self, event: str) -> None:
        self.events.append(event)
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_for(self, predicate: Callable[[list[str]], bool]) -> None:
        with anyio.fail_after(5):  # a deadline against hangs, not a wait for luck
            while not predicate(self.events):
                await self._changed.wait()

    async def wait_len(self, n: int) -> None:
        await self.wait_for(lambda events: len(events) >= n)


def child(
    name: str,
    journal: Journal,
    *,
    restart: RestartType = "permanent",
    exit_on: anyio.Event | None = None,
    exits: ExitKind = "normal",
    exit_runs: int = 1,
    fail_start_runs: tuple[int, ...] = (),
    shutdown_timeout: float = 5.0,
) -> ChildSpec:
    """A child that records its life; its first ``exit_runs`` runs exit once ``exit_on`` is set."""
    runs = 0

    async def start(*, task_status: TaskStatus[None]) -> None:
        nonlocal runs
        runs += 1
        if runs in fail_start_runs:
            journal.add(f"fail {name}")
            raise Boom(f"{name} cannot start")
        journal.add(f"start {name}")
        task_status.started()
        try:
            if exit_on is not None and runs <= exit_runs:
                await exit_on.wait()
            else:
                await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            journal.add(f"stop {name}")
            raise
        if exits == "crash":
            journal.add(f"crash {name}")
            raise Boom(name)
        journal.add(f"return {name}")

    return ChildSpec(name, start, restart, shutdown_timeout)


async def poll(condition: Callable[[], bool]) -> None:
    """Poll at every checkpoint until ``condition`` holds, with a deadline against hangs."""
    with anyio.fail_after(5):
        # Polling, not an Event: the conditions read supervisor state that has no event.
        while not condition():
            await anyio.lowlevel.checkpoint()


def names(children: list[ChildInfo]) -> list[str]:
    return [c.name for c in children]


def expected_after_exit(strategy: Strategy, restart: RestartType, exit_kind: ExitKind) -> list[str]:
    """What follows the exit of B among A, B, C (all others permanent), per OTP."""
    first = {"normal": "return B", "crash": "crash B", "shutdown": "stop B"}[exit_kind]
    restarted = exit_kind != "shutdown" and (
        restart == "permanent" or (restart == "transient" and exit_kind == "crash")
    )
    if not restarted:
        return [first]
    return [first] + {
        "one_for_one": ["start B"],
        "one_for_all": ["stop C", "stop A", "start A", "start B", "start C"],
        "rest_for_one": ["stop C", "start B", "start C"],
    }[strategy]


@pytest.mark.parametrize("exit_kind", EXIT_KINDS)
@pytest.mark.parametrize("restart", RESTART_TYPES)
@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_exit_of_a_child_restarts_exactly_the_children_the_strategy_names(
    strategy: Strategy, restart: RestartType, exit_kind: ExitKind, logs: list[dict[str, object]]
) -> None:
    journal = Journal()
    exit_b = anyio.Event()
    specs = [
        child("A", journal),
        child("B", journal, restart=restart, exit_on=exit_b, exits=exit_kind),
        child("C", journal),
    ]
    after = expected_after_exit(strategy, restart, exit_kind)
    restarted = len(after) > 1
    async with open_supervisor(specs, name="sup", strategy=strategy) as sup:
        assert journal.events == ["start A", "start B", "start C"]
        if exit_kind == "shutdown":
            await sup.terminate_child("B")
        else:
            exit_b.set()
        await journal.wait_len(3 + len(after))
        if not restarted:
            # The exit is handled once B leaves the child list.
            await poll(lambda: "B" not in names(sup.which_children()))
        assert journal.events[3:] == after
        expected_children = ["A", "B", "C"] if restarted else ["A", "C"]
        assert names(sup.which_children()) == expected_children
        assert all(info.running for info in sup.which_children())
        restarts = {info.name: info.restarts for info in sup.which_children()}
        if restarted:
            assert restarts["B"] == 1
            assert restarts["A"] == (1 if strategy == "one_for_all" else 0)
            assert restarts["C"] == (0 if strategy == "one_for_one" else 1)
        assert sup.statistics().restarts == (1 if restarted else 0)

    stops = ["stop C", "stop B", "stop A"] if restarted else ["stop C", "stop A"]
    assert journal.events == ["start A", "start B", "start C", *after, *stops]
    b_exits = [e["exit"] for e in logs if e["event"] == "child_terminated" and e["child"] == "B"]
    assert b_exits[0] == exit_kind
    assert any(e["event"] == "child_restarted" and e["child"] == "B" for e in logs) == restarted
    assert logs[-1]["event"] == "supervisor_stopped"


@pytest.mark.parametrize("strategy", ["one_for_all", "rest_for_one"])
async def test_temporary_sibling_stopped_by_the_strategy_is_not_restarted(
    strategy: Strategy,
) -> None:
    journal = Journal()
    crash_a = anyio.Event()
    specs = [
        child("A", journal, exit_on=crash_a, exits="crash"),
        child("B", journal, restart="temporary"),
        child("C", journal),
    ]
    async with open_supervisor(specs, name="sup", strategy=strategy) as sup:
        crash_a.set()
        await journal.wait_len(8)
        assert journal.events[3:] == ["crash A", "stop C", "stop B", "start A", "start C"]
        assert names(sup.which_children()) == ["A", "C"]


async def test_restart_intensity_exceeded_stops_children_in_reverse_and_escalates(
    logs: list[dict[str, object]],
) -> None:
    journal = Journal()
    go = anyio.Event()
    specs = [
        child("A", journal),
        child("B", journal, exit_on=go, exits="crash", exit_runs=99),
        child("C", journal),
    ]
    with pytest.raises(RestartIntensityExceededError) as raised:
        async with open_supervisor(specs, name="sup", max_restarts=2, period=60.0):
            go.set()
            await anyio.sleep_forever()  # cancelled when the supervisor gives up
    assert (raised.value.supervisor, raised.value.child) == ("sup", "B")
    assert (raised.value.max_restarts, raised.value.period) == (2, 60.0)
    assert journal.events == [
        "start A", "start B", "start C",
        "crash B", "start B",
        "crash B", "start B",
        "crash B", "stop C", "stop A",
    ]  # fmt: skip
    exceeded = [e for e in logs if e["event"] == "restart_intensity_exceeded"]
    assert [(e["supervisor"], e["child"]) for e in exceeded] == [("sup", "B")]


async def test_nested_supervisor_that_gives_up_is_restarted_by_its_parent(
    logs: list[dict[str, object]],
) -> None:
    journal = Journal()
    go = anyio.Event()
    go.set()
    worker = child("W", journal)
    flaky = child("X", journal, exit_on=go, exits="crash", exit_runs=2)
    inner = supervisor_child("inner", [flaky], max_restarts=1, period=60.0)
    async with open_supervisor([worker, inner], name="outer") as outer:
        await journal.wait_for(lambda events: events.count("start X") == 3)
        # "start X" comes before the restarted subtree signals started to outer.
        await poll(lambda: all(i.running for i in outer.which_children()))
        info = {i.name: i for i in outer.which_children()}
        assert info["inner"].restarts == 1 and info["inner"].running
        assert info["W"].restarts == 0
    assert journal.events == [
        "start W",
        "start X", "crash X", "start X", "crash X",  # inner: 1 restart allowed, then gives up
        "start X",  # outer restarted inner
        "stop X", "stop W",
    ]  # fmt: skip
    events = [(e["event"], e.get("supervisor"), e.get("child"), e.get("exit")) for e in logs]
    assert ("restart_intensity_exceeded", "inner", "X", None) in events
    assert ("child_terminated", "outer", "inner", "crash") in events
    assert ("child_restarted", "outer", "inner", None) in events


async def test_escalation_reaches_the_top_when_the_parent_gives_up_too() -> None:
    journal = Journal()
    go = anyio.Event()
    go.set()
    flaky = child("X", journal, exit_on=go, exits="crash", exit_runs=99)
    inner = supervisor_child("inner", [flaky], max_restarts=0)
    with pytest.raises(RestartIntensityExceededError) as raised:
        async with open_supervisor([inner], name="outer", max_restarts=0):
            await anyio.sleep_forever()
    assert (raised.value.supervisor, raised.value.child) == ("outer", "inner")
    assert journal.events == ["start X", "crash X"]


async def test_shutdown_waits_for_a_slow_cleanup_within_the_grace_timeout(
    logs: list[dict[str, object]],
) -> None:
    journal = Journal()

    async def slow_cleanup(*, task_status: TaskStatus[None]) -> None:
        journal.add("start B")
        task_status.started()
        try:
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                journal.add("cleanup B begins")
                for _ in range(20):
                    await anyio.lowlevel.checkpoint()
                journal.add("cleanup B ends")

    specs = [child("A", journal), ChildSpec("B", slow_cleanup, shutdown_timeout=30.0)]
    async with open_supervisor(specs, name="sup"):
        pass
    assert journal.events == ["start A", "start B", "cleanup B begins", "cleanup B ends", "stop A"]
    assert not [e for e in logs if e["event"] == "child_shutdown_overran"]


async def test_a_child_overrunning_its_grace_timeout_is_logged_and_the_next_one_stopped(
    logs: list[dict[str, object]],
) -> None:
    journal = Journal()
    release = anyio.Event()

    async def stuck_cleanup(*, task_status: TaskStatus[None]) -> None:
        journal.add("start B")
        task_status.started()
        try:
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                journal.add("cleanup B begins")
                await release.wait()  # released only once A was stopped
                journal.add("cleanup B ends")

    async def releasing(*, task_status: TaskStatus[None]) -> None:
        journal.add("start A")
        task_status.started()
        try:
            await anyio.sleep_forever()
        finally:
            journal.add("stop A")
            release.set()

    specs = [ChildSpec("A", releasing), ChildSpec("B", stuck_cleanup, shutdown_timeout=0.01)]
    async with open_supervisor(specs, name="sup"):
        pass
    # The task group still waited for B's cleanup before the `async with` returned.
    assert journal.events == ["start A", "start B", "cleanup B begins", "stop A", "cleanup B ends"]
    overran = [e for e in logs if e["event"] == "child_shutdown_overran"]
    assert [(e["child"], e["shutdown_timeout"]) for e in overran] == [("B", 0.01)]


@pytest.mark.parametrize("exits", ["normal", "crash"])
async def test_dynamic_temporary_child_is_removed_after_it_exits(exits: ExitKind) -> None:
    journal = Journal()
    done = anyio.Event()
    async with open_supervisor([child("A", journal)], name="runs") as sup:
        await sup.start_child(
            child("run-1", journal, restart="temporary", exit_on=done, exits=exits)
        )
        assert names(sup.which_children()) == ["A", "run-1"]
        done.set()
        await poll(lambda: sup.statistics().children == 1)
        assert names(sup.which_children()) == ["A"]
        assert sup.statistics().restarts == 0
    ending = "return run-1" if exits == "normal" else "crash run-1"
    assert journal.events == ["start A", "start run-1", ending, "stop A"]


async def test_thousands_of_dynamic_temporary_children_leave_no_trace() -> None:
    journal = Journal()
    done = anyio.Event()
    async with open_supervisor(name="runs") as sup:
        for i in range(2000):
            await sup.start_child(child(f"run-{i}", journal, restart="temporary", exit_on=done))
        assert sup.statistics().running == 2000
        done.set()
        await poll(lambda: sup.statistics().children == 0)
    assert journal.events.count("return run-1999") == 1


async def test_a_child_failing_to_start_fails_the_supervisor_start() -> None:
    journal = Journal()
    specs = [child("A", journal), child("B", journal, fail_start_runs=(1,)), child("C", journal)]
    with pytest.raises(Boom, match="B cannot start"):
        async with open_supervisor(specs, name="sup"):
            pytest.fail("the body must not run")
    assert journal.events == ["start A", "fail B", "stop A"]


async def test_start_child_raises_what_the_child_raised_and_does_not_add_it() -> None:
    journal = Journal()
    async with open_supervisor(name="sup") as sup:
        with pytest.raises(Boom):
            await sup.start_child(child("B", journal, fail_start_runs=(1,)))
        assert sup.which_children() == []
        await sup.start_child(child("B2", journal))
        with pytest.raises(ValueError, match="already has a child 'B2'"):
            await sup.start_child(child("B2", journal))
        with pytest.raises(LookupError):
            await sup.terminate_child("nope")


async def test_a_failed_restart_counts_as_another_crash_and_is_retried() -> None:
    journal = Journal()
    crash = anyio.Event()
    specs = [child("A", journal, exit_on=crash, exits="crash", fail_start_runs=(2,))]
    async with open_supervisor(specs, name="sup") as sup:
        crash.set()
        await journal.wait_len(4)
        assert journal.events == ["start A", "crash A", "fail A", "start A"]
        assert sup.statistics().restarts == 2
        assert sup.which_children()[0].running


async def test_an_error_in_the_body_stops_children_in_reverse_and_is_raised_as_itself() -> None:
    journal = Journal()
    specs = [child("A", journal), child("B", journal)]
    with pytest.raises(Boom, match="body"):
        async with open_supervisor(specs, name="sup"):
            raise Boom("body")
    assert journal.events == ["start A", "start B", "stop B", "stop A"]


async def test_cancelling_the_supervisor_still_stops_children_one_by_one_in_reverse() -> None:
    journal = Journal()
    specs = [child("A", journal), child("B", journal), child("C", journal)]
    with anyio.CancelScope() as scope:
        async with open_supervisor(specs, name="sup"):
            scope.cancel()
            await anyio.sleep_forever()
    assert scope.cancelled_caught
    assert journal.events == ["start A", "start B", "start C", "stop C", "stop B", "stop A"]


def test_unknown_strategy_and_restart_type_are_rejected_naming_the_value() -> None:
    with pytest.raises(ValueError, match="'one_for_some'"):
        open_supervisor(name="sup", strategy="one_for_some")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'sometimes'"):
        ChildSpec("A", child("A", Journal()).start, "sometimes")  # type: ignore[arg-type]

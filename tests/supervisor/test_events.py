"""The event stream: each event told once to every observer, in order; a failing observer
is logged and changes nothing else; a status change is committed before anyone hears of
it. The three observers: the journal's events table, NATS (the wire as it always was),
the log."""

from __future__ import annotations

import sqlite3
import typing
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import anyio.lowlevel
import msgspec
import pytest
from warden.bus import subjects
from warden.bus.wire import RunEvent, Usage, event_decoder
from warden.supervisor import events as events_module
from warden.supervisor.errors import IllegalTransitionError
from warden.supervisor.events import (
    Event,
    EventStream,
    JournalObserver,
    LogObserver,
    ModelCallMade,
    NatsObserver,
    PlanInvalid,
    RunCreated,
    StatusChanged,
    StepFinished,
    StepRetry,
    StepSkipped,
    StepStarted,
    ToolCallMade,
    Turn,
    standard_observers,
)
from warden.supervisor.journal import Journal, open_journal
from warden.supervisor.logs import configure_logging

pytestmark = pytest.mark.anyio

STEP = {"run_id": "r-1", "status": "running", "step": 1, "role": "code"}
SAMPLES: list[Event] = [
    RunCreated(run_id="r-1", status="queued"),
    StatusChanged(run_id="r-1", status="planning", message="planning"),
    PlanInvalid(run_id="r-1", status="planning", attempt=0, problem="the plan has no steps"),
    StepStarted(**STEP, attempt=0, instruction="Write it."),  # type: ignore[arg-type]
    StepRetry(**STEP, attempt=0, reason="FAIL: no tests"),  # type: ignore[arg-type]
    Turn(**STEP, turn=0, tools=("write_file", "run_tests")),  # type: ignore[arg-type]
    ModelCallMade(run_id="r-1", status="running", key="r-1/e0/s1/a1/t0", purpose="step",
                  model="m", step=1, role="code", turn=0,
                  usage=Usage(input_tokens=10, output_tokens=5), call_cost_usd=0.001,
                  latency_ms=12.0),
    ToolCallMade(**STEP, key="r-1/e0/s1/a1/t0/c0", turn=0, name="write_file", ok=True,  # type: ignore[arg-type]
                 duration_ms=3.0),
    StepFinished(**STEP, attempt=1, output="done"),  # type: ignore[arg-type]
    StepSkipped(run_id="r-1", status="running", step=2, role="review", reason="failed twice"),
]


class Recording:
    def __init__(self, name: str, seen: list[tuple[str, Event]]) -> None:
        self.name = name
        self.seen = seen

    def takes(self, kind: str) -> bool:
        return True

    async def observe(self, event: Event) -> None:
        self.seen.append((self.name, event))


class Broken:
    def takes(self, kind: str) -> bool:
        return True

    async def observe(self, event: Event) -> None:
        raise RuntimeError("observer down")


class RecordingBus:
    def __init__(self) -> None:
        self.published: list[tuple[str, RunEvent]] = []

    async def publish(self, subject: str, data: bytes) -> None:
        self.published.append((subject, event_decoder.decode(data)))


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    async with open_journal(tmp_path / "j.sqlite") as journal:
        await journal.create_run("r-1", text="t", status="queued")
        yield journal


def test_every_kind_has_exactly_one_event_whose_tag_is_its_kind() -> None:
    members = typing.get_args(Event)
    kinds = [member.kind for member in members]
    assert sorted(kinds) == sorted(typing.get_args(events_module.EventKind))
    for member in members:
        assert member.__struct_config__.tag == member.kind
        assert member.__struct_config__.frozen


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: e.kind)
def test_an_event_round_trips_through_json_as_the_union(event: Event) -> None:
    data = msgspec.json.encode(event)
    assert msgspec.json.decode(data)["kind"] == event.kind
    assert msgspec.json.decode(data, type=Event) == event


async def test_emit_tells_every_observer_once_in_order(journal: Journal) -> None:
    seen: list[tuple[str, Event]] = []
    stream = EventStream(journal, [Recording("a", seen), Recording("b", seen)])
    for event in SAMPLES[:2]:
        await stream.emit(event)
    assert seen == [("a", SAMPLES[0]), ("b", SAMPLES[0]), ("a", SAMPLES[1]), ("b", SAMPLES[1])]


async def test_an_observer_that_raises_is_logged_and_the_others_still_hear(
    journal: Journal, logs: list[dict[str, object]]
) -> None:
    seen: list[tuple[str, Event]] = []
    stream = EventStream(journal, [Recording("a", seen), Broken(), Recording("c", seen)])
    await stream.emit(SAMPLES[0])
    assert seen == [("a", SAMPLES[0]), ("c", SAMPLES[0])]
    failed = [e for e in logs if e["event"] == "observer_failed"]
    assert len(failed) == 1
    assert failed[0]["observer"] == "Broken" and "observer down" in str(failed[0]["error"])


async def test_a_transition_is_committed_before_its_status_event_is_emitted(
    journal: Journal,
) -> None:
    statuses_seen: list[str | None] = []

    class ReadsBack:
        def takes(self, kind: str) -> bool:
            return True

        async def observe(self, event: Event) -> None:
            statuses_seen.append(await journal.run_status(event.run_id))

    stream = EventStream(journal, [ReadsBack()])
    await stream.transition("r-1", "cancelled", message="cancelled by request", tokens=3,
                            cost_usd=0.25)
    assert statuses_seen == ["cancelled"]


async def test_a_status_event_carries_the_message_tokens_and_cost(journal: Journal) -> None:
    seen: list[tuple[str, Event]] = []
    stream = EventStream(journal, [Recording("a", seen)])
    await stream.transition("r-1", "failed", error="run crashed: boom", tokens=7,
                            cost_usd=0.1234567)
    assert seen == [("a", StatusChanged(run_id="r-1", status="failed",
                                        message="run crashed: boom", tokens=7,
                                        cost_usd=0.123457))]


async def test_an_illegal_transition_raises_and_emits_nothing(journal: Journal) -> None:
    seen: list[tuple[str, Event]] = []
    stream = EventStream(journal, [Recording("a", seen)])
    with pytest.raises(IllegalTransitionError):
        await stream.transition("r-1", "succeeded")
    assert seen == []


async def test_a_terminal_transition_is_finished_even_when_its_caller_is_cancelled(
    journal: Journal,
) -> None:
    seen: list[tuple[str, Event]] = []
    stream = EventStream(journal, [Recording("a", seen)])
    with anyio.CancelScope() as scope:
        scope.cancel()
        await stream.transition("r-1", "cancelled", message="cancelled by request")
        await anyio.lowlevel.checkpoint()  # the first unshielded one: cancelled here
        pytest.fail("the scope was cancelled")
    assert await journal.run_status("r-1") == "cancelled"
    assert [e.status for _, e in seen] == ["cancelled"]  # type: ignore[union-attr]


async def test_the_journal_observer_writes_the_events_the_journal_does_not_record_itself(
    journal: Journal,
) -> None:
    stream = EventStream(journal, [JournalObserver(journal)])
    for event in SAMPLES:
        await stream.emit(event)
    await journal.sync()
    with sqlite3.connect(journal.path) as db:
        rows = db.execute("SELECT kind, status, message, data FROM events WHERE run_id = 'r-1' "
                          "ORDER BY seq").fetchall()
    # The run_created row is the journal's own (create_run); status rows come with
    # transitions; model and tool calls (and so turns) are in their own tables.
    assert [r[0] for r in rows] == ["run_created", "plan_invalid", "step_started",
                                    "step_retry", "step_finished", "step_skipped"]
    _, status, message, data = rows[2]
    assert (status, message) == ("running", "Write it.")
    assert msgspec.json.decode(data, type=Event) == SAMPLES[3]


async def test_the_nats_observer_publishes_the_wire_event_and_endings_on_done() -> None:
    bus = RecordingBus()
    observer = NatsObserver(bus)
    await observer.observe(SAMPLES[3])
    await observer.observe(StatusChanged(run_id="r-1", status="succeeded", message="done",
                                         tokens=42, cost_usd=0.5))
    await observer.observe(RunCreated(run_id="r-2", status="rejected", error="bad id"))
    events, done = subjects.run_events("r-1"), subjects.run_done("r-1")
    assert [subject for subject, _ in bus.published] == [
        events, events, done, subjects.run_events("r-2"), subjects.run_done("r-2"),
    ]
    started, ended, ended_too, rejected, _ = (wire for _, wire in bus.published)
    assert (started.kind, started.status, started.message, started.step, started.role) == (
        "step_started", "running", "Write it.", 1, "code")
    assert (ended.kind, ended.status, ended.message, ended.tokens, ended.cost_usd) == (
        "status", "succeeded", "done", 42, 0.5)
    assert ended_too == ended
    assert (rejected.kind, rejected.status, rejected.message) == ("status", "rejected", "bad id")
    assert started.seq < ended.seq < rejected.seq


@pytest.mark.parametrize("publish_calls", [False, True])
async def test_call_events_go_on_nats_only_when_asked_for(
    journal: Journal, publish_calls: bool
) -> None:
    bus = RecordingBus()
    _, nats, _ = standard_observers(journal, bus, publish_calls=publish_calls)  # type: ignore[arg-type]
    stream = EventStream(journal, [nats])
    calls = [e for e in SAMPLES if isinstance(e, ModelCallMade | ToolCallMade)]
    others = [e for e in SAMPLES if not isinstance(e, ModelCallMade | ToolCallMade)]
    assert calls and others
    for event in SAMPLES:
        await stream.emit(event)
    kinds = {wire.kind for _, wire in bus.published}
    assert ({"model_call", "tool_call"} <= kinds) is publish_calls
    assert not ({"model_call", "tool_call"} & kinds) or publish_calls
    assert {e.kind for e in others if e.kind != "run_created"} <= kinds


async def test_the_nats_observer_publishes_a_queued_run_as_a_status_event_not_an_ending() -> None:
    bus = RecordingBus()
    await NatsObserver(bus).observe(SAMPLES[0])
    [(subject, wire)] = bus.published
    assert subject == subjects.run_events("r-1")
    assert (wire.kind, wire.status, wire.message) == ("status", "queued", "queued")


async def test_the_log_observer_logs_each_event_under_a_fixed_name_with_its_fields(
    logs: list[dict[str, object]],
) -> None:
    observer = LogObserver()
    await observer.observe(StatusChanged(run_id="r-1", status="failed", message="crashed"))
    await observer.observe(SAMPLES[4])
    names = [(e["event"], e["log_level"]) for e in logs]
    assert names == [("run_status_changed", "info"), ("step_retry", "warning")]
    assert (logs[0]["run_id"], logs[0]["status"], logs[0]["message"]) == (
        "r-1", "failed", "crashed")
    assert logs[1]["reason"] == "FAIL: no tests"



@pytest.mark.parametrize("publish_calls", [False, True])
async def test_call_events_are_wanted_only_by_an_observer_that_takes_them(
    journal: Journal, publish_calls: bool
) -> None:
    # At the default level (info) the log does not take calls; the journal never does
    # (they have their own tables); NATS only when asked for. Nobody: the gate builds none.
    stream = EventStream(journal, standard_observers(
        journal, RecordingBus(), publish_calls=publish_calls))  # type: ignore[arg-type]
    configure_logging("info", cache=False)
    try:
        assert stream.wants("model_call") is publish_calls
        assert stream.wants("tool_call") is publish_calls
        assert stream.wants("step_started") and stream.wants("status")
    finally:
        configure_logging("debug", cache=False)  # the suite's level (tests/conftest.py)


def test_the_log_observer_takes_a_kind_only_when_its_level_is_logged() -> None:
    observer = LogObserver()
    try:
        configure_logging("debug", cache=False)
        assert observer.takes("model_call") and observer.takes("step_retry")
        configure_logging("info", cache=False)
        assert not observer.takes("model_call") and not observer.takes("turn")
        assert observer.takes("step_retry") and observer.takes("status")
    finally:
        configure_logging("debug", cache=False)  # the suite's level (tests/conftest.py)

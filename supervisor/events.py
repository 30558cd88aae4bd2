"""One stream of run events: what happened to a run, told once to every observer.

The contract:

- **One place.** Every event of a run goes out through an ``EventStream``: the journal's
  events table, NATS (``warden.runs.<run>.events``, and ``warden.done.<run>`` for a
  terminal status), and the log are its observers; tracing and metrics will be two more.
  Nothing else publishes run events or writes event rows.
- **Vocabulary.** An event is one of the frozen, tagged Structs of ``Event``; its tag is
  its kind (``EventKind``, owned here). Every event carries the run, the run's status
  when it happened, and the run's tokens and dollars so far.
- **Once, in order, never fatal.** ``emit`` hands the event to each observer in turn,
  awaiting each; an observer that raises is logged (``observer_failed``) and the others
  still see the event, and the caller goes on. An event is never retried.
- **A status change is a transition first.** ``transition`` commits the new status
  through ``Journal.transition`` (checked by the run state machine: an illegal change
  raises ``IllegalTransitionError`` and nothing is emitted), with its ``status`` row in
  the same transaction, and only then emits ``StatusChanged``. A terminal one is
  shielded from cancellation, so a run that ended always says so on
  ``warden.done.<run>``. ``RunCreated`` is emitted after ``Journal.create_run``.

How a caller emits (the run supervisor, with ``events: EventStream`` in its context)::

    await events.transition(run_id, "running", message="plan of 3 steps", plan=plan,
                            tokens=tokens, cost_usd=spent, wait=False)
    await events.emit(StepStarted(run_id=run_id, status="running", tokens=tokens,
                                  cost_usd=spent, step=0, role="code", attempt=0,
                                  instruction="Write it."))

``transition`` takes what ``Journal.transition`` takes, ``wait`` included (a terminal
status is always waited for). In place of ``_emit(kind, status, message, step=, role=)``:
``plan_invalid`` → ``PlanInvalid(attempt, problem)``; ``step_started`` →
``StepStarted(step, role, attempt, instruction)``; ``step_finished`` →
``StepFinished(step, role, attempt, output)``; ``step_retry`` → ``StepRetry(step, role,
attempt, reason)``; ``step_skipped`` → ``StepSkipped(step, role, reason)``; ``turn`` →
``Turn(step, role, turn, tools)``. Each gets ``run_id``, ``status`` (what ``_emit``
was given) and the run's ``tokens`` and ``cost_usd``; ``summary()`` is what was the
``message`` (``StepFinished`` cuts its output at 200 characters, as ``_emit`` did). After
``Journal.record_turn`` and ``Journal.record_outcome`` (which stay the durable record,
keyed for replay): ``ModelCallMade`` and ``ToolCallMade``, not for a call answered from
the journal on a replay.

The wire is unchanged: the NATS observer publishes each event as the ``RunEvent`` of
``bus/wire.py`` (``kind`` is the event's kind, ``run_created`` going out as ``status``
as it always has; ``message`` is the event's ``summary()``; ``seq`` orders the events
this daemon published). The call events (``model_call``, ``tool_call``) are published
only with ``nats.publish_call_events``: each is a stored JetStream message, and the
journal has every call in full.

Evolution: these Structs are also stored (the ``data`` column of the events table): new
fields get defaults and go last; never retype a field.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import ClassVar, Literal, Protocol

import anyio
import msgspec
import structlog
from warden.bus import subjects
from warden.bus.connection import Bus
from warden.bus.wire import RunEvent, Usage, encoder
from warden.supervisor.journal import Journal
from warden.supervisor.run_states import TERMINAL, RunStatus

__all__ = (
    "Event",
    "EventKind",
    "EventStream",
    "JournalObserver",
    "LogObserver",
    "ModelCallMade",
    "NatsObserver",
    "Observer",
    "PlanInvalid",
    "Publisher",
    "RunCreated",
    "StatusChanged",
    "StepFinished",
    "StepRetry",
    "StepSkipped",
    "StepStarted",
    "ToolCallMade",
    "Turn",
    "standard_observers",
)

log = structlog.get_logger("warden.events")

EventKind = Literal[
    "run_created",
    "status",
    "plan_invalid",
    "step_started",
    "step_finished",
    "step_retry",
    "step_skipped",
    "turn",
    "model_call",
    "tool_call",
]


class _Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind"):
    kind: ClassVar[EventKind]
    run_id: str
    status: RunStatus
    """The run's status when this happened."""
    tokens: int = 0
    """The run's tokens so far."""
    cost_usd: float = 0.0
    """The run's dollars so far."""

    def summary(self) -> str:
        """One line for people (the wire's ``message``)."""
        raise NotImplementedError


class RunCreated(_Event, frozen=True, kw_only=True, tag="run_created"):
    """A run was committed, ``queued`` or ``rejected`` (with ``error``)."""

    kind: ClassVar[EventKind] = "run_created"
    error: str | None = None

    def summary(self) -> str:
        return self.error or self.status


class StatusChanged(_Event, frozen=True, kw_only=True, tag="status"):
    """The run's status changed to ``status`` (committed before this is emitted)."""

    kind: ClassVar[EventKind] = "status"
    message: str = ""

    def summary(self) -> str:
        return self.message


class PlanInvalid(_Event, frozen=True, kw_only=True, tag="plan_invalid"):
    """The plan of attempt ``attempt`` failed validation (it is asked for again)."""

    kind: ClassVar[EventKind] = "plan_invalid"
    attempt: int
    problem: str

    def summary(self) -> str:
        return self.problem


class _StepEvent(_Event, frozen=True, kw_only=True):
    step: int
    role: str


class StepStarted(_StepEvent, frozen=True, kw_only=True, tag="step_started"):
    kind: ClassVar[EventKind] = "step_started"
    attempt: int
    instruction: str

    def summary(self) -> str:
        return self.instruction


class StepFinished(_StepEvent, frozen=True, kw_only=True, tag="step_finished"):
    kind: ClassVar[EventKind] = "step_finished"
    attempt: int
    output: str

    def summary(self) -> str:
        return self.output[:200]


class StepRetry(_StepEvent, frozen=True, kw_only=True, tag="step_retry"):
    """Attempt ``attempt`` of the step failed with ``reason``; it is tried again."""

    kind: ClassVar[EventKind] = "step_retry"
    attempt: int
    reason: str

    def summary(self) -> str:
        return self.reason


class StepSkipped(_StepEvent, frozen=True, kw_only=True, tag="step_skipped"):
    kind: ClassVar[EventKind] = "step_skipped"
    reason: str

    def summary(self) -> str:
        return self.reason


class Turn(_StepEvent, frozen=True, kw_only=True, tag="turn"):
    """Turn ``turn`` of the step asked for ``tools`` (which ran); the step goes on."""

    kind: ClassVar[EventKind] = "turn"
    turn: int
    tools: tuple[str, ...]

    def summary(self) -> str:
        return ", ".join(self.tools)


class ModelCallMade(_Event, frozen=True, kw_only=True, tag="model_call"):
    """A model call was made and recorded under ``key`` (not one answered by a replay)."""

    kind: ClassVar[EventKind] = "model_call"
    key: str
    purpose: str
    model: str
    step: int | None = None
    role: str | None = None
    turn: int | None = None
    usage: Usage
    call_cost_usd: float
    latency_ms: float
    decided_by: str | None = None
    """The interceptor that answered it in the gate (a substitute), if one did."""
    fallback: str | None = None
    """Why a model further down the call's chain served it (``overloaded``,
    ``breaker_open``, ``budget``: ``tiers.py``); ``None`` when its first choice did."""

    def summary(self) -> str:
        served = f" (fallback: {self.fallback})" if self.fallback else ""
        return (f"{self.purpose} {self.model}{served}: {self.usage.total_tokens} tokens, "
                f"${self.call_cost_usd:.6f}, {self.latency_ms:.0f} ms")


class ToolCallMade(_Event, frozen=True, kw_only=True, tag="tool_call"):
    """A tool call ran and its outcome was recorded under ``key``."""

    kind: ClassVar[EventKind] = "tool_call"
    key: str
    step: int
    role: str
    turn: int
    name: str
    ok: bool
    duration_ms: float
    decided_by: str | None = None
    """The interceptor that answered it in the gate (a deny or a substitute), if one did."""

    def summary(self) -> str:
        return f"{self.name}: {'ok' if self.ok else 'failed'}, {self.duration_ms:.0f} ms"


Event = (
    RunCreated | StatusChanged | PlanInvalid | StepStarted | StepFinished | StepRetry
    | StepSkipped | Turn | ModelCallMade | ToolCallMade
)
_event_encoder = msgspec.json.Encoder()


class Observer(Protocol):
    """Something told of every run event (journal, NATS, log; later traces, metrics)."""

    def takes(self, kind: EventKind) -> bool:
        """Whether this observer wants events of ``kind`` at all. Asked once per kind,
        after start-up (so a log level set at start counts); the answer is kept."""
        ...

    async def observe(self, event: Event) -> None:
        """Take one event. May raise: the stream logs it and goes on."""
        ...


class EventStream:
    """Emits each run event once to every observer, in order; see the module docstring.

    Each event goes only to the observers that take its kind (``Observer.takes``, asked
    once per kind), and ``wants(kind)`` tells an emitter whether anyone does, so an
    event nobody takes is not even built (the call events, by default: the journal has
    them in their own tables, NATS skips them, the log has them at debug).
    """

    def __init__(self, journal: Journal, observers: Sequence[Observer]) -> None:
        self.journal = journal
        self.observers = tuple(observers)
        self._routes: dict[EventKind, tuple[Observer, ...]] = {}

    def _route(self, kind: EventKind) -> tuple[Observer, ...]:
        route = self._routes.get(kind)
        if route is None:
            route = self._routes[kind] = tuple(o for o in self.observers if o.takes(kind))
        return route

    def wants(self, kind: EventKind) -> bool:
        """Whether any observer takes events of ``kind``."""
        return bool(self._route(kind))

    async def emit(self, event: Event) -> None:
        """Tell every observer that takes ``event``'s kind, one after another.

        A cancellation point (an observer may await). Never raises for an observer's
        failure: that is logged as ``observer_failed`` and the next observer is told.
        """
        for observer in self._route(event.kind):
            try:
                await observer.observe(event)
            except Exception as exc:
                log.warning("observer_failed", observer=type(observer).__name__,
                            run_id=event.run_id, kind=event.kind, error=repr(exc))

    async def transition(
        self,
        run_id: str,
        status: RunStatus,
        *,
        message: str = "",
        error: str | None = None,
        result: str | None = None,
        plan: str | None = None,
        tokens: int | None = None,
        cost_usd: float | None = None,
        wait: bool = True,
    ) -> None:
        """Commit the run's new ``status`` in the journal, then emit ``StatusChanged``.

        Takes what ``Journal.transition`` takes; a terminal status is always waited for
        and the whole change is shielded from cancellation (the run's end is recorded and
        announced, or neither). A cancellation point otherwise. Raises
        ``IllegalTransitionError`` (nothing written or emitted), ``RunNotFoundError``,
        ``JournalError``.
        """
        ending = status in TERMINAL
        # Only an ending is shielded: a cancel scope per status change costs a backend
        # lookup on the hot path.
        with anyio.CancelScope(shield=True) if ending else contextlib.nullcontext():
            await self.journal.transition(
                run_id, status, message=message, error=error, result=result, plan=plan,
                tokens=tokens, cost_usd=cost_usd, wait=wait or ending,
            )
            await self.emit(StatusChanged(
                run_id=run_id, status=status, message=message or error or "",
                tokens=tokens or 0, cost_usd=round(cost_usd or 0.0, 6),
            ))


class JournalObserver:
    """Appends each event to the journal's events table, with the event as JSON.

    Not ``run_created`` nor ``status``: the journal writes those rows with the run and
    with each status change, in the same transaction (a crash cannot separate them).
    Not ``model_call`` nor ``tool_call``: those are recorded in full, under their keys,
    in ``model_calls`` and ``tool_calls``; nor ``turn``, which is its model call's row
    (the reply's tool uses) and its tool calls' rows. Not waited for: nothing a replay
    needs.
    """

    _RECORDED_ELSEWHERE: ClassVar[frozenset[EventKind]] = frozenset({
        "run_created", "status", "model_call", "tool_call", "turn",
    })

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def takes(self, kind: EventKind) -> bool:
        return kind not in self._RECORDED_ELSEWHERE

    async def observe(self, event: Event) -> None:
        await self.journal.record_event(event.run_id, event.kind, event.status,
                                        event.summary(), _event_encoder.encode(event))


class Publisher(Protocol):
    """What the NATS observer needs of a bus (``Bus`` is one)."""

    async def publish(self, subject: str, data: bytes) -> None: ...


class NatsObserver:
    """Publishes each event as a wire ``RunEvent`` on ``warden.runs.<run>.events``; an
    event with a terminal status also on ``warden.done.<run>``.

    ``seq`` grows with every event this observer publishes, so a run's events are in
    order by it (not numbered from 1: no count per run to keep or to drop). Raises
    ``BusError`` when NATS does not take the publish (the stream logs it: events are for
    watchers, the journal is the record).
    """

    def __init__(self, bus: Publisher, *, skip: frozenset[EventKind] = frozenset()) -> None:
        self.bus = bus
        self.skip = skip
        """Kinds not published (``model_call`` and ``tool_call`` unless
        ``nats.publish_call_events``)."""
        self._seq = 0
        self._subjects: dict[str, str] = {}
        """Each live run's events subject, built once (dropped at its end)."""

    def takes(self, kind: EventKind) -> bool:
        return kind not in self.skip

    async def observe(self, event: Event) -> None:
        run_id = event.run_id
        self._seq += 1
        ending = isinstance(event, RunCreated | StatusChanged) and event.status in TERMINAL
        step: int | None = None
        role: str | None = None
        if isinstance(event, _StepEvent | ModelCallMade | ToolCallMade):
            step, role = event.step, event.role
        kind = "status" if event.kind == "run_created" else event.kind
        data = encoder.encode(RunEvent(
            run_id=run_id, seq=self._seq, kind=kind, status=event.status,
            message=event.summary(), step=step, role=role, tokens=event.tokens,
            cost_usd=event.cost_usd,
        ))
        subject = self._subjects.get(run_id)
        if subject is None:
            subject = self._subjects[run_id] = subjects.run_events(run_id)
        await self.bus.publish(subject, data)
        if ending:
            self._subjects.pop(run_id, None)
            await self.bus.publish(subjects.run_done(run_id), data)


class LogObserver:
    """Logs each event under a fixed name: its kind (``run_status_changed`` for a status
    change), with its fields; calls at debug, trouble at warning, the rest at info."""

    _NAMES: ClassVar[dict[EventKind, str]] = {"status": "run_status_changed"}
    _LEVELS: ClassVar[dict[EventKind, int]] = {
        "model_call": logging.DEBUG, "tool_call": logging.DEBUG, "turn": logging.DEBUG,
        "plan_invalid": logging.WARNING, "step_retry": logging.WARNING,
        "step_skipped": logging.WARNING,
    }

    def takes(self, kind: EventKind) -> bool:
        # Asked once per kind (the stream keeps the answer): the level is set at start-up.
        return bool(log.is_enabled_for(self._LEVELS.get(kind, logging.INFO)))

    async def observe(self, event: Event) -> None:
        log.log(self._LEVELS.get(event.kind, logging.INFO),
                self._NAMES.get(event.kind, event.kind), kind=event.kind,
                **msgspec.structs.asdict(event))


CALL_KINDS: frozenset[EventKind] = frozenset({"model_call", "tool_call"})


def standard_observers(
    journal: Journal, bus: Bus, *, publish_calls: bool = False
) -> tuple[Observer, ...]:
    """The daemon's observers, in the order they are told: the journal, NATS (without the
    call events unless ``publish_calls``), the log."""
    skip = frozenset() if publish_calls else CALL_KINDS
    return (JournalObserver(journal), NatsObserver(bus, skip=skip), LogObserver())

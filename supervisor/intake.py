"""Intake: the JetStream consumer of submitted tasks, and the rules a submission must pass.

A submission (``TaskSubmission`` as JSON on ``warden.tasks``) becomes a run: its id is the
submission's ``id``, else its ``Nats-Msg-Id``, else ``t-<stream sequence>`` (stable across
redeliveries). The message is acknowledged only after the run is committed to the journal.
The order is commit, ack, start: a crash between any two is recovered by the daemon's
resume at start (a committed run is resumed; a redelivered message maps to it).
A submission that is not valid JSON, lacks a field, has a wrong type or is too large is
recorded as a run with status ``rejected`` and an error naming the field and the problem;
it is acknowledged (kept in the journal, not redelivered) and never stops the consumer.
A run taken in is announced on the event stream (``RunCreated``: its event on
``warden.runs.<run>.events``, and for a rejected one ``warden.done.<run>`` too).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
import msgspec
import structlog
from anyio.abc import TaskStatus
from warden.bus import subjects
from warden.bus.connection import Bus, TaskMessage
from warden.bus.wire import TaskSubmission, task_decoder
from warden.config import Settings
from warden.config.crashpoints import crash_point
from warden.supervisor.events import EventStream, RunCreated
from warden.supervisor.journal import Journal, RunState
from warden.supervisor.run import state_of_new_run
from warden.supervisor.run_states import RunStatus

__all__ = ("Intake", "Rejection", "StartRun", "admit", "check_submission")

log = structlog.get_logger("warden.intake")

StartRun = Callable[[RunState], Awaitable[None]]


class Rejection(msgspec.Struct, frozen=True, kw_only=True):
    run_id: str
    field: str | None
    error: str
    preview: str


def _preview(data: bytes) -> str:
    return data[:200].decode("utf-8", errors="replace")


def _field_of(message: str) -> str | None:
    if "`$." in message:
        return message.split("`$.", 1)[1].split("`", 1)[0]
    if "missing required field `" in message:
        return message.split("missing required field `", 1)[1].split("`", 1)[0]
    return None


def check_submission(
    data: bytes, *, max_bytes: int, fallback_id: str
) -> tuple[str, TaskSubmission] | Rejection:
    """Decode and validate one submission.

    Returns ``(run_id, task)`` or a ``Rejection`` whose ``error`` names the field and
    the problem. Never raises for bad input.
    """
    if len(data) > max_bytes:
        return Rejection(
            run_id=fallback_id, field=None, preview=_preview(data),
            error=f"submission is {len(data)} bytes, larger than limits.max_task_bytes "
                  f"({max_bytes})",
        )
    try:
        task = task_decoder.decode(data)
    except msgspec.DecodeError as exc:
        message = str(exc)
        field = _field_of(message)
        where = f"field {field!r}: " if field else ""
        return Rejection(
            run_id=fallback_id, field=field, preview=_preview(data),
            error=f"invalid submission: {where}{message}",
        )
    run_id = task.id or fallback_id
    problem: tuple[str, str] | None = None
    if task.id is not None and not subjects.is_valid_id(task.id):
        problem = ("id", f"{task.id!r} must be 1-128 characters of [A-Za-z0-9_-]")
        run_id = fallback_id
    elif not task.text.strip():
        problem = ("text", "must not be empty")
    elif task.budget_usd is not None and task.budget_usd <= 0:
        problem = ("budget_usd", f"{task.budget_usd!r} must be greater than 0")
    if problem is not None:
        return Rejection(
            run_id=run_id, field=problem[0], preview=_preview(data),
            error=f"invalid submission: field {problem[0]!r} {problem[1]}",
        )
    return run_id, task


async def admit(
    journal: Journal, data: bytes, *, max_bytes: int, fallback_id: str
) -> tuple[str, TaskSubmission | None, Rejection | None, bool]:
    """Check a submission and record its run (queued or rejected) in the journal.

    Returns ``(run_id, task, rejection, created)``; ``created`` is ``False`` when the run
    id was already known (a redelivery or a duplicate), in which case nothing is written.
    """
    checked = check_submission(data, max_bytes=max_bytes, fallback_id=fallback_id)
    if isinstance(checked, Rejection):
        created = await journal.create_run(
            checked.run_id, text=checked.preview, status="rejected", error=checked.error
        )
        if created:
            log.warning("submission_rejected", run_id=checked.run_id, error=checked.error)
        return checked.run_id, None, checked, created
    run_id, task = checked
    created = await journal.create_run(
        run_id, text=task.text, status="queued", scenario=task.scenario,
        budget_usd=task.budget_usd,
    )
    return run_id, task, None, created


class Intake:
    """The JetStream consumer of ``warden.tasks``; hands each new run to ``start_run``."""

    def __init__(
        self, bus: Bus, journal: Journal, settings: Settings, start_run: StartRun,
        events: EventStream,
    ) -> None:
        self.bus = bus
        self.journal = journal
        self.settings = settings
        self.start_run = start_run
        self.events = events
        self.admitted = 0
        self.rejected = 0
        self.dead = 0

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Consume until cancelled. Blocks."""
        intake = self.settings.intake
        async with self.bus.task_consumer(
            max_deliver=intake.max_deliveries + 1, ack_wait=intake.ack_wait_s
        ) as consumer:
            task_status.started()
            while True:
                batch = await consumer.fetch(batch=intake.batch, timeout=1.0)
                # The batch is taken in concurrently, so its runs share the journal's
                # commits and their acks overlap (one at a time: ~200 runs/s at most).
                async with anyio.create_task_group() as tg:
                    for message in batch:
                        tg.start_soon(self.take, message)

    async def take(self, message: TaskMessage) -> None:
        """Admit one message: commit its run, then acknowledge it, then start the run.

        A message delivered more than ``intake.max_deliveries`` times, or that cannot be
        admitted on its last delivery, is kept as a dead letter (``warden dlq``).
        """
        limit = self.settings.intake.max_deliveries
        if message.num_delivered > limit:
            await self._dead_letter(message, f"delivered {message.num_delivered} times "
                                             f"(more than intake.max_deliveries={limit})")
            return
        fallback = message.msg_id if message.msg_id and subjects.is_valid_id(message.msg_id) \
            else f"t-{message.stream_seq}"
        try:
            run_id, task, rejection, created = await admit(
                self.journal, message.data, max_bytes=self.settings.limits.max_task_bytes,
                fallback_id=fallback,
            )
        except Exception as exc:
            log.error("intake_failed", stream_seq=message.stream_seq, error=repr(exc))
            if message.num_delivered >= limit:
                await self._dead_letter(message, f"could not be taken in: {exc!r}")
            else:
                await message.nak(delay=1.0)
            return
        crash_point("intake_committed")
        await message.ack()
        crash_point("intake_acked")
        if not created:
            return  # a redelivery or a duplicate: its run exists (and was resumed at start)
        status: RunStatus = "rejected" if rejection is not None else "queued"
        await self.events.emit(RunCreated(
            run_id=run_id, status=status, error=None if rejection is None else rejection.error,
        ))
        if rejection is not None:
            self.rejected += 1
        elif task is not None:
            self.admitted += 1
            await self.start_run(
                state_of_new_run(run_id, task.text, task.scenario, task.budget_usd)
            )

    async def _dead_letter(self, message: TaskMessage, reason: str) -> None:
        await self.journal.record_dead_letter(
            stream_seq=message.stream_seq, msg_id=message.msg_id, data=message.data,
            reason=reason, deliveries=message.num_delivered,
        )
        await message.term()
        self.dead += 1
        log.error("task_dead_lettered", stream_seq=message.stream_seq, reason=reason)

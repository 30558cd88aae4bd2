"""Intake: the JetStream consumer of submitted tasks, and the rules a submission must pass.

A submission (``TaskSubmission`` as JSON on ``warden.tasks``) becomes a run: its id is the
submission's ``id``, else its ``Nats-Msg-Id``, else ``t-<stream sequence>`` (stable across
redeliveries); a dry run's is that id as ``dry-<id>`` (``dry_run.py``), a prefix no
other run's id may have. The message is acknowledged only after the run is committed to
the journal. The order is commit, ack, start: a crash between any two is recovered by the
daemon's resume at start (a committed run is resumed; a redelivered message maps to it).
A submission that is not valid JSON, lacks a field, has a wrong type or is too large is
recorded as a run with status ``rejected`` and an error naming the field and the problem;
it is acknowledged (kept in the journal, not redelivered) and never stops the consumer.
A run taken in is announced on the event stream (``RunCreated``: its event on
``warden.runs.<run>.events``, and for a rejected one ``warden.done.<run>`` too).

One intake per task stream (issue 9, "no silent split"): the intake consumes only while
it holds the lease ``INTAKE_LOCK`` in the KV bucket ``WARDEN_LOCKS`` (``bus/lease.py``),
refreshed every ``intake.lock_ttl_s / 3``. A daemon that finds the lease held by another
says so in one line (``intake_refused``, naming the holder: its id, pid, host and data
dir) and waits in standby, trying again every ``lock_ttl_s / 3``; its API and workers
serve meanwhile. A holder killed without releasing loses the lease ``lock_ttl_s`` after
its last refresh, so a standby daemon takes over within ``lock_ttl_s * 4 / 3``; a clean
stop releases it at once. A holder that finds its lease lost (taken after a partition
longer than ``lock_ttl_s``) stops consuming at once and goes back to standby.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Literal

import anyio
import msgspec
import structlog
from anyio.abc import TaskStatus
from warden.bus import subjects
from warden.bus.connection import Bus, TaskMessage
from warden.bus.decoding import InvalidMessage, decode
from warden.bus.errors import BusError
from warden.bus.lease import Lease
from warden.bus.wire import TaskSubmission, strict_task_decoder, task_decoder
from warden.config import DEFAULT_TENANT, Settings
from warden.config.crashpoints import crash_point
from warden.supervisor.dry_run import dry_run_id, reserved_id_problem
from warden.supervisor.events import EventStream, RunCreated
from warden.supervisor.journal import Journal, RunState
from warden.supervisor.run import state_of_new_run
from warden.supervisor.run_states import RunStatus

__all__ = ("Intake", "Rejection", "StartRun", "admit", "check_submission")

log = structlog.get_logger("warden.intake")

StartRun = Callable[[RunState], Awaitable[None]]
IntakeState = Literal["starting", "consuming", "standby"]


class Rejection(msgspec.Struct, frozen=True, kw_only=True):
    run_id: str
    field: str | None
    error: str
    preview: str


def _preview(data: bytes) -> str:
    return data[:200].decode("utf-8", errors="replace")


def check_submission(
    data: bytes, *, max_bytes: int, fallback_id: str, strict: bool = False
) -> tuple[str, TaskSubmission] | Rejection:
    """Decode and validate one submission under limits (``bus/decoding.py``: size, depth,
    UTF-8, finite numbers, ``v``; with ``strict``, as the API reads it, unknown fields).

    Returns ``(run_id, task)`` or a ``Rejection`` whose ``error`` names the field and
    the problem. Never raises for bad input; an exception in the checks themselves is
    a bug, and is a ``Rejection`` saying so (a task is rejected at its first delivery,
    never retried into the dead letters).
    """
    try:
        return _check(data, max_bytes=max_bytes, fallback_id=fallback_id, strict=strict)
    except Exception as exc:  # a bug: logged, and the submission still gets its answer
        log.exception("submission_check_failed", error=repr(exc))
        return Rejection(run_id=fallback_id, field=None, preview=_preview(data),
                         error=f"invalid submission: it could not be checked ({exc!r})")


def _check(
    data: bytes, *, max_bytes: int, fallback_id: str, strict: bool
) -> tuple[str, TaskSubmission] | Rejection:
    if len(data) > max_bytes:
        return Rejection(
            run_id=fallback_id, field=None, preview=_preview(data),
            error=f"submission is {len(data)} bytes, larger than limits.max_task_bytes "
                  f"({max_bytes})",
        )
    decoded: TaskSubmission | InvalidMessage
    if strict:
        decoded = decode(strict_task_decoder, data, max_bytes=max_bytes, what="submission")
    else:
        decoded = decode(task_decoder, data, max_bytes=max_bytes, what="submission")
    if isinstance(decoded, InvalidMessage):
        field = decoded.field
        where = f"field {field!r}: " if field else ""
        what = decoded.problem.removeprefix("invalid submission: ")
        return Rejection(run_id=fallback_id, field=field, preview=_preview(data),
                         error=f"invalid submission: {where}{what}")
    task: TaskSubmission = decoded
    run_id = task.id or fallback_id
    if task.dry_run:
        run_id = dry_run_id(run_id)
    problem: tuple[str, str] | None = None
    if task.id is not None and not subjects.is_valid_id(task.id):
        problem = ("id", f"{task.id!r} must be 1-128 characters of [A-Za-z0-9_-]")
        run_id = fallback_id
    elif (reserved := reserved_id_problem(run_id, dry_run=task.dry_run)) is not None:
        problem = ("id", reserved)
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
        budget_usd=task.budget_usd, dry_run=task.dry_run, tenant=task.tenant,
    )
    return run_id, task, None, created


class Intake:
    """The JetStream consumer of ``warden.tasks``; hands each new run to ``start_run``.

    ``holder`` is the daemon's id, ``note`` where it runs (pid, host, data dir): the
    intake lease's value, which a refused daemon prints.
    """

    def __init__(
        self, bus: Bus, journal: Journal, settings: Settings, start_run: StartRun,
        events: EventStream, *, holder: str = "warden", note: str = "",
    ) -> None:
        self.bus = bus
        self.journal = journal
        self.settings = settings
        self.start_run = start_run
        self.events = events
        self.holder = holder
        self.note = note
        self.admitted = 0
        self.rejected = 0
        self.dead = 0
        self.state: IntakeState = "starting"
        self.held_by: str | None = None
        """Who holds the task stream while this intake is in standby."""

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Take the intake lease, then consume until cancelled; in standby while another
        daemon holds it. Blocks. Signals started once the lease was tried (consuming or
        in standby). Raises ``BusError`` when the bus fails."""
        ttl = self.settings.intake.lock_ttl_s
        lease = await self.bus.lease(bucket=subjects.LOCKS_BUCKET, key=subjects.INTAKE_LOCK,
                                     holder=self.holder, note=self.note, ttl=ttl)
        started = False
        try:
            while True:
                held_by = await lease.acquire()
                if held_by is not None:
                    if held_by != self.held_by:
                        log.warning("intake_refused", holder=held_by, detail=(
                            f"that daemon consumes {subjects.TASKS} on this NATS server; "
                            "this one serves its API and workers, and takes over if it "
                            f"stops (within {ttl * 4 / 3:g}s if it is killed)"))
                    self.state, self.held_by = "standby", held_by
                    if not started:
                        task_status.started()
                        started = True
                    await anyio.sleep(ttl / 3)
                    continue
                self.held_by = None
                log.info("intake_lease_taken", holder=self.holder)
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._keep, lease, tg.cancel_scope)
                    await self._consume(task_status if not started else None)
                    started = True
                log.error("intake_lease_lost", holder=self.holder)
                self.state = "standby"
        finally:
            await lease.release()

    async def _keep(self, lease: Lease, scope: anyio.CancelScope) -> None:
        while True:
            await anyio.sleep(lease.ttl / 3)
            try:
                if not await lease.refresh():
                    scope.cancel()  # another daemon holds it now: stop taking tasks at once
                    return
            except BusError as exc:  # a lasting failure ends as a lost lease
                log.warning("intake_lease_refresh_failed", error=str(exc))

    async def _consume(self, task_status: TaskStatus[None] | None) -> None:
        intake = self.settings.intake
        async with self.bus.task_consumer(
            max_deliver=intake.max_deliveries + 1, ack_wait=intake.ack_wait_s
        ) as consumer:
            self.state = "consuming"
            if task_status is not None:
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
            await self.start_run(state_of_new_run(run_id, task.text, task.scenario,
                                                  task.budget_usd, dry_run=task.dry_run,
                                                  tenant=task.tenant or DEFAULT_TENANT))

    async def _dead_letter(self, message: TaskMessage, reason: str) -> None:
        await self.journal.record_dead_letter(
            stream_seq=message.stream_seq, msg_id=message.msg_id, data=message.data,
            reason=reason, deliveries=message.num_delivered,
        )
        await message.term()
        self.dead += 1
        log.error("task_dead_lettered", stream_seq=message.stream_seq, reason=reason)

"""The daemon's request/reply API on ``warden.api.<verb>``: submit, runs, show, cancel,
resume, dlq, dlq_retry, ping.

Every reply is a wire message (``RunSummary``, ``RunList`` or ``ErrorReply``); a request
that does not decode gets an ``ErrorReply`` naming the field, never silence.
"""

from __future__ import annotations

import secrets
import time
from typing import Protocol

import msgspec
import structlog
from warden.actors.actor import Actor
from warden.bus import subjects
from warden.bus.connection import Bus, Envelope
from warden.bus.errors import BusError
from warden.bus.wire import (
    DeadLetterInfo,
    DeadLetterList,
    ErrorReply,
    Reply,
    RunList,
    RunSummary,
    dlq_retry_decoder,
    encoder,
    run_query_decoder,
    runs_query_decoder,
)
from warden.config import Settings
from warden.supervisor.errors import DaemonError, IllegalTransitionError, RunNotFoundError
from warden.supervisor.events import EventStream, RunCreated
from warden.supervisor.intake import Rejection, check_submission
from warden.supervisor.journal import Journal

__all__ = ("Api", "RunControl")

log = structlog.get_logger("warden.api")


class RunControl(Protocol):
    """What the API asks of the daemon for runs it does not only read."""

    async def cancel_run(self, run_id: str) -> str: ...
    async def resume_run(self, run_id: str) -> str: ...


class Api(Actor):
    """Serves ``warden.api.*`` for the CLI and any other client."""

    def __init__(
        self, bus: Bus, journal: Journal, settings: Settings, control: RunControl,
        events: EventStream,
    ) -> None:
        super().__init__(bus, subjects.API_WILDCARD, concurrency=32)
        self.journal = journal
        self.settings = settings
        self.control = control
        self.events = events

    @property
    def name(self) -> str:
        return "api"

    async def handle(self, envelope: Envelope) -> None:
        try:
            reply = await self._answer(envelope)
        except msgspec.DecodeError as exc:
            reply = ErrorReply(error=f"bad request on {envelope.subject}: {exc}")
        await self.bus.respond(envelope, encoder.encode(reply))

    async def _answer(self, envelope: Envelope) -> Reply:
        match envelope.subject:
            case subjects.API_PING:
                return RunList(runs=[])
            case subjects.API_RUNS:
                query = runs_query_decoder.decode(envelope.data or b"{}")
                return RunList(runs=await self.journal.list_runs(limit=query.limit,
                                                                 status=query.status))
            case subjects.API_SHOW:
                run_query = run_query_decoder.decode(envelope.data)
                run = await self.journal.get_run(run_query.run_id)
                if run is None:
                    return ErrorReply(error=f"no run {run_query.run_id!r}", field="run_id")
                return run
            case subjects.API_SUBMIT:
                return await self._submit(envelope.data)
            case subjects.API_CANCEL | subjects.API_RESUME:
                run_query = run_query_decoder.decode(envelope.data)
                act = (self.control.cancel_run if envelope.subject == subjects.API_CANCEL
                       else self.control.resume_run)
                try:
                    await act(run_query.run_id)
                except (RunNotFoundError, DaemonError, IllegalTransitionError) as exc:
                    return ErrorReply(error=str(exc), field="run_id")
                return await self.journal.get_run(run_query.run_id) or ErrorReply(
                    error=f"no run {run_query.run_id!r}", field="run_id")
            case subjects.API_DLQ:
                return DeadLetterList(letters=[
                    DeadLetterInfo(
                        id=d.id, stream_seq=d.stream_seq, msg_id=d.msg_id, reason=d.reason,
                        deliveries=d.deliveries, created_at=d.created_at,
                        retried_at=d.retried_at,
                        preview=bytes(d.data[:200]).decode("utf-8", errors="replace"),
                    )
                    for d in await self.journal.dead_letters()
                ])
            case subjects.API_DLQ_RETRY:
                return await self._retry_dead_letter(dlq_retry_decoder.decode(envelope.data).id)
        return ErrorReply(error=f"unknown API subject {envelope.subject!r}")

    async def _retry_dead_letter(self, letter_id: int) -> Reply:
        letters = {d.id: d for d in await self.journal.dead_letters()}
        letter = letters.get(letter_id)
        if letter is None:
            return ErrorReply(error=f"no dead letter {letter_id}", field="id")
        msg_id = f"dlq-{letter_id}-{int(time.time())}"
        try:
            await self.bus.publish_task(bytes(letter.data), msg_id=msg_id)
        except BusError as exc:
            return ErrorReply(error=f"could not re-submit dead letter {letter_id}: {exc}")
        await self.journal.mark_retried(letter_id)
        return RunSummary(id=msg_id, status="queued", text="(dead letter re-submitted)",
                          created_at=time.time(), updated_at=time.time())

    async def _submit(self, data: bytes) -> RunSummary | ErrorReply:
        # Checked here so a bad request gets its error as the reply; a good one goes
        # through the tasks stream like any other submission (one path into runs).
        fallback = f"api-{secrets.token_hex(6)}"
        checked = check_submission(
            data, max_bytes=self.settings.limits.max_task_bytes, fallback_id=fallback
        )
        if isinstance(checked, Rejection):
            if await self.journal.create_run(
                checked.run_id, text=checked.preview, status="rejected", error=checked.error
            ):
                await self.events.emit(RunCreated(run_id=checked.run_id, status="rejected",
                                                  error=checked.error))
            return ErrorReply(error=checked.error, field=checked.field)
        run_id, task = checked
        stamped = msgspec.structs.replace(task, id=run_id)
        try:
            await self.bus.publish_task(encoder.encode(stamped), msg_id=run_id)
        except BusError as exc:
            return ErrorReply(error=f"could not queue the task: {exc}")
        return RunSummary(id=run_id, status="queued", text=task.text, created_at=0.0,
                          updated_at=0.0)

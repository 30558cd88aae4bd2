"""The daemon's request/reply API on ``warden.api.<verb>``: submit, runs, show, ping.

Every reply is a wire message (``RunSummary``, ``RunList`` or ``ErrorReply``); a request
that does not decode gets an ``ErrorReply`` naming the field, never silence.
"""

from __future__ import annotations

import secrets

import msgspec
import structlog

from actors.actor import Actor
from bus import subjects
from bus.connection import Bus, Envelope
from bus.errors import BusError
from bus.wire import (
    ErrorReply,
    RunList,
    RunSummary,
    encoder,
    run_query_decoder,
    runs_query_decoder,
)
from config import Settings
from supervisor.intake import Rejection, check_submission
from supervisor.journal import Journal

log = structlog.get_logger("warden.api")


class Api(Actor):
    """Serves ``warden.api.*`` for the CLI and any other client."""

    def __init__(self, bus: Bus, journal: Journal, settings: Settings) -> None:
        super().__init__(bus, subjects.API_WILDCARD, concurrency=32)
        self.journal = journal
        self.settings = settings

    @property
    def name(self) -> str:
        return "api"

    async def handle(self, envelope: Envelope) -> None:
        try:
            reply = await self._answer(envelope)
        except msgspec.DecodeError as exc:
            reply = ErrorReply(error=f"bad request on {envelope.subject}: {exc}")
        await self.bus.respond(envelope, encoder.encode(reply))

    async def _answer(self, envelope: Envelope) -> RunSummary | RunList | ErrorReply:
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
        return ErrorReply(error=f"unknown API subject {envelope.subject!r}")

    async def _submit(self, data: bytes) -> RunSummary | ErrorReply:
        # Checked here so a bad request gets its error as the reply; a good one goes
        # through the tasks stream like any other submission (one path into runs).
        fallback = f"api-{secrets.token_hex(6)}"
        checked = check_submission(
            data, max_bytes=self.settings.limits.max_task_bytes, fallback_id=fallback
        )
        if isinstance(checked, Rejection):
            await self.journal.create_run(
                checked.run_id, text=checked.preview, status="rejected", error=checked.error
            )
            return ErrorReply(error=checked.error, field=checked.field)
        run_id, task = checked
        stamped = msgspec.structs.replace(task, id=run_id)
        try:
            await self.bus.publish_task(encoder.encode(stamped), msg_id=run_id)
        except BusError as exc:
            return ErrorReply(error=f"could not queue the task: {exc}")
        return RunSummary(id=run_id, status="queued", text=task.text, created_at=0.0,
                          updated_at=0.0)

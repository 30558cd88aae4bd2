"""The daemon's API: a ``nats.micro`` service named ``warden`` on
``warden.api.<daemon_id>.<verb>``: submit, runs, show, cancel, resume, dlq, dlq_retry, ping,
approvals (the pending approval requests: id, run, tool, arguments, risk, why, hash, expiry),
calls (a page of one run's recorded model and tool calls, ``warden show RUN --calls``),
spend (today's spend and what is left at the day, tenant and run budget levels,
``warden spend``).

The rules, in the order a request meets them:

- **Addressed.** The daemon's id is in every subject, so a client talks to the daemon it
  asked for (two daemons on one server never both answer); ``$SRV.PING.warden`` lists
  every daemon with its id, data dir and pid in the service metadata.
- **Decoded under limits** (``bus/decoding.py``): size, depth, UTF-8, finite numbers,
  ``v``, unknown fields refused. A request that fails gets an ``ErrorReply`` naming the
  field and the problem, never silence.
- **Answered, always.** An exception escaping a verb is a bug: it is logged
  (``api_handler_failed``, with the traceback) and answered with an ``ErrorReply``; it
  never reaches the supervisor, so no input can take the daemon down through restart
  intensity (issue 9 measured six depth bombs doing exactly that).
- **Bounded.** A reply stays under the server's max payload (``Bus.max_payload``, less a
  margin for headers): ``runs`` is a page (``limit``, cursor ``before``, the reply's
  ``next_before``) whose runs carry cut text; ``show`` cuts step outputs, then the result,
  then the task's text (``truncated`` says so); ``dlq`` lists as many letters as fit;
  ``calls`` is a page of as many calls as fit (cursor ``after``, the reply's ``next``), a
  call too large alone with its texts cut (``cut``).
- **Concurrent.** Each request is answered in a task of its own, at most
  ``_CONCURRENCY`` at once (a ``cancel`` waits for the run to stop; a ``show`` must not
  wait behind it); past that, requests wait in the subscription.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from typing import Protocol

import anyio
import msgspec
import structlog
from anyio.abc import TaskStatus
from warden.bus import subjects
from warden.bus.connection import Bus, Envelope
from warden.bus.decoding import InvalidMessage, decode
from warden.bus.errors import BusError
from warden.bus.wire import (
    ApprovalInfo,
    ApprovalList,
    CallView,
    DaemonHealth,
    DeadLetterInfo,
    DeadLetterList,
    ErrorReply,
    InterceptedCall,
    PingQuery,
    Reply,
    RunCalls,
    RunList,
    RunSummary,
    StepSummary,
    approvals_query_decoder,
    calls_query_decoder,
    dlq_retry_decoder,
    encoder,
    ping_query_decoder,
    run_query_decoder,
    runs_query_decoder,
    spend_query_decoder,
)
from warden.config import Settings
from warden.supervisor.approvals import info_of
from warden.supervisor.errors import DaemonError, IllegalTransitionError, RunNotFoundError
from warden.supervisor.events import EventStream, RunCreated
from warden.supervisor.intake import Rejection, check_submission
from warden.supervisor.journal import Journal
from warden.supervisor.run_states import STATUSES
from warden.supervisor.spend import DailySpend, spend_report

__all__ = ("Api", "RunControl", "fit_run", "page_calls")

log = structlog.get_logger("warden.api")

_CONCURRENCY = 32
_MAX_REQUEST_BYTES = 4096  # every request but submit (which has limits.max_task_bytes)
_REPLY_MARGIN = 4096  # under max_payload: room for headers and the reply subject
_LISTING_TEXT_CHARS = 200
_CUT = "… [cut: reply size]"


class RunControl(Protocol):
    """What the API asks of the daemon beyond the journal."""

    async def cancel_run(self, run_id: str) -> str: ...
    async def resume_run(self, run_id: str) -> str: ...
    def health(self) -> DaemonHealth: ...


def _cut(text: str | None, chars: int) -> str | None:
    return text if text is None or len(text) <= chars else text[:chars] + _CUT


def page_calls(run_id: str, calls: list[CallView], after: int, budget: int) -> RunCalls:
    """The calls from index ``after`` on that fit in ``budget`` bytes of JSON, at least
    one: a call too large alone has its request and response cut to fit (``cut``)."""
    page: list[CallView] = []
    size = 128
    for index in range(after, len(calls)):
        call = calls[index]
        encoded = len(encoder.encode(call)) + 1
        if size + encoded > budget:
            if page:
                return RunCalls(run_id=run_id, calls=page, next=index)
            chars = max(64, (budget - 1024) // 4)
            call = msgspec.structs.replace(call, request=_cut(call.request, chars) or "",
                                           response=_cut(call.response, chars) or "",
                                           cut=True)
            encoded = len(encoder.encode(call)) + 1
        page.append(call)
        size += encoded
    return RunCalls(run_id=run_id, calls=page, next=None)


def fit_run(run: RunSummary, budget: int) -> RunSummary:
    """``run`` as it fits in ``budget`` bytes of JSON: step outputs (and a dry run's
    intercepted outputs) cut first, then the result, then the task's text and the error,
    each to fewer characters until it fits (``truncated=True`` then). A run with more
    steps (or intercepted calls) than fit keeps the first ones."""
    if len(encoder.encode(run)) <= budget:
        return run
    chars = max(256, budget // 8)
    while True:
        steps = [msgspec.structs.replace(s, output=_cut(s.output, chars // 4) or "",
                                         instruction=_cut(s.instruction, chars // 4) or "")
                 for s in run.steps]
        calls = [msgspec.structs.replace(c, output=_cut(c.output, chars // 4) or "",
                                         reason=_cut(c.reason, chars // 4) or "")
                 for c in run.intercepted]
        cut = msgspec.structs.replace(run, steps=steps, result=_cut(run.result, chars),
                                      text=_cut(run.text, chars) or "",
                                      error=_cut(run.error, chars), truncated=True,
                                      intercepted=calls)
        if len(encoder.encode(cut)) <= budget:
            return cut
        if chars <= 64 and calls:  # a dry run's calls go before its steps
            kept: list[InterceptedCall] = []
            for intercepted in calls:
                candidate = msgspec.structs.replace(cut, steps=[],
                                                    intercepted=[*kept, intercepted])
                if len(encoder.encode(candidate)) > budget:
                    break
                kept.append(intercepted)
            cut = msgspec.structs.replace(cut, intercepted=kept)
        if chars <= 64:
            fitted: list[StepSummary] = []
            for step in steps:  # only the step list can still be too long: keep a prefix
                candidate = msgspec.structs.replace(cut, steps=[*fitted, step])
                if len(encoder.encode(candidate)) > budget:
                    break
                fitted.append(step)
            return msgspec.structs.replace(cut, steps=fitted)
        chars //= 2


class Api:
    """Serves this daemon's ``warden.api.<daemon_id>.*`` as a ``nats.micro`` service."""

    def __init__(
        self, bus: Bus, journal: Journal, settings: Settings, control: RunControl,
        events: EventStream, *, daemon_id: str, version: str, metadata: Mapping[str, str],
        spend: DailySpend | None = None,
    ) -> None:
        self.bus = bus
        self.journal = journal
        self.settings = settings
        self.control = control
        self.events = events
        self.daemon_id = daemon_id
        self.version = version
        self.metadata = dict(metadata)
        self.spend = spend
        """The day and tenant budget levels (``spend``); ``None``: none to report."""
        self.handled = 0
        self.failed = 0

    @property
    def name(self) -> str:
        return "api"

    @property
    def _budget(self) -> int:
        return max(4096, self.bus.max_payload - _REPLY_MARGIN)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled. Blocks. Raises only ``BusError`` (the service could not
        start); a request never makes it raise."""
        limiter = anyio.Semaphore(_CONCURRENCY)
        endpoints: dict[str, str] = {verb: subjects.api(self.daemon_id, verb)
                                     for verb in subjects.API_VERBS}
        async with anyio.create_task_group() as tg:

            async def deliver(envelope: Envelope) -> None:
                # In nats-py's delivery task: a full API makes later requests wait there.
                await limiter.acquire()
                tg.start_soon(self._serve, envelope, limiter)

            async with self.bus.service(
                name=subjects.SERVICE_NAME, version=self.version,
                description="warden daemon API", metadata=self.metadata,
                endpoints=endpoints, handler=deliver,
            ):
                task_status.started()
                log.info("api_serving", daemon_id=self.daemon_id,
                         subjects=subjects.api(self.daemon_id, "ping").rsplit(".", 1)[0] + ".*")
                await anyio.sleep_forever()

    async def _serve(self, envelope: Envelope, limiter: anyio.Semaphore) -> None:
        verb = envelope.subject.rsplit(".", 1)[-1]
        try:
            try:
                reply = await self.answer(verb, envelope.data)
            except Exception as exc:  # a bug in a verb: answered, logged, never a crash
                self.failed += 1
                log.exception("api_handler_failed", verb=verb, error=repr(exc))
                reply = ErrorReply(error=f"internal error answering {verb!r}: "
                                         f"{type(exc).__name__} (logged by the daemon)")
            data = encoder.encode(reply)
            if len(data) > self._budget:  # fit_run and the pages make this a bug too
                log.error("api_reply_too_large", verb=verb, size=len(data))
                data = encoder.encode(ErrorReply(
                    error=f"the reply to {verb!r} would be {len(data)} bytes, over the "
                          f"server's max payload ({self.bus.max_payload})"))
            try:
                await self.bus.respond(envelope, data)
            except BusError as exc:
                log.warning("api_reply_failed", verb=verb, error=str(exc))
            self.handled += 1
        finally:
            limiter.release()

    async def answer(self, verb: str, data: bytes) -> Reply:
        """The reply to one request on ``verb``. Bad input is an ``ErrorReply``."""
        match verb:
            case "ping":
                ping = decode(ping_query_decoder, data or b"{}",
                              max_bytes=_MAX_REQUEST_BYTES, what="ping request")
                if isinstance(ping, InvalidMessage):
                    return _error(ping)
                assert isinstance(ping, PingQuery)
                return self.control.health()
            case "runs":
                return await self._runs(data)
            case "show":
                query = decode(run_query_decoder, data, max_bytes=_MAX_REQUEST_BYTES,
                               what="show request")
                if isinstance(query, InvalidMessage):
                    return _error(query)
                run = await self.journal.get_run(query.run_id)
                if run is None:
                    return ErrorReply(error=f"no run {query.run_id!r}", field="run_id")
                return fit_run(run, self._budget)
            case "submit":
                return await self._submit(data)
            case "cancel" | "resume":
                query = decode(run_query_decoder, data, max_bytes=_MAX_REQUEST_BYTES,
                               what=f"{verb} request")
                if isinstance(query, InvalidMessage):
                    return _error(query)
                act = self.control.cancel_run if verb == "cancel" else self.control.resume_run
                try:
                    await act(query.run_id)
                except (RunNotFoundError, DaemonError, IllegalTransitionError) as exc:
                    return ErrorReply(error=str(exc), field="run_id")
                run = await self.journal.get_run(query.run_id)
                if run is None:
                    return ErrorReply(error=f"no run {query.run_id!r}", field="run_id")
                return fit_run(run, self._budget)
            case "dlq":
                return await self._dead_letters(data)
            case "approvals":
                return await self._approvals(data)
            case "calls":
                return await self._calls(data)
            case "spend":
                return await self._spend(data)
            case "dlq_retry":
                retry = decode(dlq_retry_decoder, data, max_bytes=_MAX_REQUEST_BYTES,
                               what="dlq_retry request")
                if isinstance(retry, InvalidMessage):
                    return _error(retry)
                return await self._retry_dead_letter(retry.id)
        return ErrorReply(error=f"unknown API verb {verb!r}")

    async def _runs(self, data: bytes) -> Reply:
        query = decode(runs_query_decoder, data or b"{}", max_bytes=_MAX_REQUEST_BYTES,
                       what="runs request")
        if isinstance(query, InvalidMessage):
            return _error(query)
        if query.status is not None and query.status not in STATUSES:
            return ErrorReply(error=f"status {query.status!r} is not one of {list(STATUSES)}",
                              field="status")
        before: int | None = None
        if query.before is not None:
            try:
                before = int(query.before)
            except ValueError:
                return ErrorReply(error=f"cursor {query.before!r} is not one this daemon "
                                        "gave (a runs reply's next_before)", field="before")
        page = await self.journal.page_runs(limit=query.limit, status=query.status,
                                            before=before, text_chars=_LISTING_TEXT_CHARS)
        # Newest first from the journal; kept while the encoded page fits.
        size = len(encoder.encode(RunList(runs=[], next_before="9" * 20)))
        kept: list[tuple[int, RunSummary]] = []
        for cursor, run in page:
            size += len(encoder.encode(run)) + 1
            if size > self._budget:
                break
            kept.append((cursor, run))
        more = len(kept) < len(page) or len(page) == query.limit
        next_before = str(kept[-1][0]) if kept and more else None
        return RunList(runs=[run for _, run in reversed(kept)], next_before=next_before)

    async def _dead_letters(self, data: bytes) -> Reply:
        query = decode(runs_query_decoder, data or b"{}", max_bytes=_MAX_REQUEST_BYTES,
                       what="dlq request")
        if isinstance(query, InvalidMessage):
            return _error(query)
        letters: list[DeadLetterInfo] = []
        size = 64
        for d in await self.journal.dead_letters():
            info = DeadLetterInfo(
                id=d.id, stream_seq=d.stream_seq, msg_id=d.msg_id, reason=d.reason[:500],
                deliveries=d.deliveries, created_at=d.created_at, retried_at=d.retried_at,
                preview=bytes(d.data[:200]).decode("utf-8", errors="replace"),
            )
            size += len(encoder.encode(info)) + 1
            if size > self._budget or len(letters) >= query.limit:
                break
            letters.append(info)
        return DeadLetterList(letters=letters)

    async def _approvals(self, data: bytes) -> Reply:
        query = decode(approvals_query_decoder, data or b"{}", max_bytes=_MAX_REQUEST_BYTES,
                       what="approvals request")
        if isinstance(query, InvalidMessage):
            return _error(query)
        listed: list[ApprovalInfo] = []
        size = 64
        for record in await self.journal.approvals(status="pending", limit=query.limit,
                                                   live_only=True):
            info = info_of(record)
            size += len(encoder.encode(info)) + 1
            if size > self._budget:
                break
            listed.append(info)
        return ApprovalList(approvals=listed)

    async def _calls(self, data: bytes) -> Reply:
        query = decode(calls_query_decoder, data, max_bytes=_MAX_REQUEST_BYTES,
                       what="calls request")
        if isinstance(query, InvalidMessage):
            return _error(query)
        if await self.journal.run_status(query.run_id) is None:
            return ErrorReply(error=f"no run {query.run_id!r}", field="run_id")
        return page_calls(query.run_id, await self.journal.calls(query.run_id), query.after,
                          self._budget)

    async def _spend(self, data: bytes) -> Reply:
        query = decode(spend_query_decoder, data or b"{}", max_bytes=_MAX_REQUEST_BYTES,
                       what="spend request")
        if isinstance(query, InvalidMessage):
            return _error(query)
        if self.spend is None:
            return ErrorReply(error="this daemon keeps no day budgets")
        return await spend_report(self.spend, self.journal, self.settings, tenant=query.tenant)

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

    async def _submit(self, data: bytes) -> Reply:
        # Checked here so a bad request gets its error as the reply; a good one goes
        # through the tasks stream like any other submission (one path into runs).
        fallback = f"api-{secrets.token_hex(6)}"
        checked = check_submission(
            data, max_bytes=self.settings.limits.max_task_bytes, fallback_id=fallback,
            strict=True,
        )
        if isinstance(checked, Rejection):
            if await self.journal.create_run(
                checked.run_id, text=checked.preview, status="rejected", error=checked.error
            ):
                await self.events.emit(RunCreated(run_id=checked.run_id, status="rejected",
                                                  error=checked.error))
            return ErrorReply(error=checked.error, field=checked.field)
        run_id, task = checked
        health = self.control.health()
        if health.intake == "standby":  # the run would land in the holder's journal
            return ErrorReply(error=f"this daemon ({self.daemon_id}) does not take tasks: "
                                    f"daemon {health.intake_holder} consumes {subjects.TASKS} "
                                    "on this server; submit through that one")
        if task.id is not None:
            stored = await self.journal.get_run(run_id)
            if stored is not None:  # re-submitted: say so, show what is stored
                return fit_run(msgspec.structs.replace(stored, already_submitted=True),
                               self._budget)
        stamped = msgspec.structs.replace(task, id=run_id)
        try:
            ack = await self.bus.publish_task(encoder.encode(stamped), msg_id=run_id)
        except BusError as exc:
            return ErrorReply(error=f"could not queue the task: {exc}")
        if ack.duplicate:  # in the stream already, perhaps not yet taken in
            stored = await self.journal.get_run(run_id)
            if stored is not None:
                return fit_run(msgspec.structs.replace(stored, already_submitted=True),
                               self._budget)
            return RunSummary(id=run_id, status="queued", text="(already submitted; not yet "
                              "taken in, this text was ignored)", created_at=0.0,
                              updated_at=0.0, already_submitted=True)
        return fit_run(RunSummary(id=run_id, status="queued", text=task.text, created_at=0.0,
                                  updated_at=0.0), self._budget)


def _error(problem: InvalidMessage) -> ErrorReply:
    return ErrorReply(error=problem.problem, field=problem.field)

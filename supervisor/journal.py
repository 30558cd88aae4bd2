"""The run journal: the typed reads and writes of runs, steps, calls, effects and dead
letters, over SQLite.

Writes go through the journal's one writer (``supervisor/journal_writer.py``: group
commit, one thread hop per transaction); a write method returns once its write is
committed, unless called with ``wait=False``. Reads use a second connection, through
aiosqlite (WAL lets them run beside the writer). Only this module and the writer import
aiosqlite or sqlite3; the rest of warden sees ``Journal``.

Schema (``SCHEMA_VERSION`` 6; an older file is migrated in place at open)::

    runs          id, status, text, scenario, budget_usd, created_at, updated_at,
                  tokens, cost_usd, error, result, plan, epoch, dry_run, tenant
    steps         run_id, idx, role, instruction, status, turns, output, tokens, cost_usd
    model_calls   key (unique), run_id, step, turn, purpose, model, request, response,
                  input_tokens, output_tokens, cache_creation_tokens, cache_read_tokens,
                  cost_usd, latency_ms, created_at
    tool_calls    run_id, step, turn, name, arguments, ok, output, duration_ms, created_at
    effects       key (primary), run_id, step, tool, arguments, state (intent | done),
                  ok, output, duration_ms, created_at, updated_at
    dead_letters  id, stream_seq, msg_id, data, reason, deliveries, created_at, retried_at
    dry_run_calls key (primary), run_id, step, turn, tool, arguments, decision, by,
                  reason, output, simulated, created_at   (what a dry run would have done)
    approvals     id (primary), run_id, step, call_key (unique), tool, arguments, risk, why,
                  hash, created_at, expires_at, status (pending | approved | denied |
                  expired), decided_by, reason, decided_at   (supervisor/approvals.py)
    events        seq, run_id, kind, status, message, data, created_at, hash   (append-only;
                  hash-chained, journal_audit.py)
    audit_head    id (1), seq, hash   (the newest event's, kept by a trigger)
    run_profiles, anomalies   anomaly flags of ended runs (journal_anomaly.py)

``model_calls.key`` and ``effects.key`` are the idempotency keys the run supervisor
derives from (run, epoch, step, attempt, turn, call): a replay finds its recorded model
replies and tool outcomes under the same keys and does not call again.

Statuses follow the run state machine (``supervisor/run_states.py``): ``create_run`` and
``transition`` refuse an illegal status with ``IllegalTransitionError`` before anything
is queued. The check needs no read per write: the journal keeps the last status of each
live run in memory (set when a change is queued, so writes queued without waiting are
seen at once), loads a status it does not hold from the file after waiting for the queued
writes, and forgets a run's status when a write of it failed. Triggers apply the same
table inside SQLite (``journal_schema.status_guards``).

The events table holds, per run, a ``run_created`` row written with the run and a
``status`` row written with each status change (in the same transaction: a crash cannot
separate a status from its event), and the rows the journal observer of the event stream
writes (``supervisor/events.py``).

Secrets never reach it: requests are stored as the model saw them (prompt and messages),
never headers, keys or the environment.
"""

from __future__ import annotations

import sqlite3
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, NamedTuple

import aiosqlite
import anyio
import msgspec
import structlog
from warden.bus.wire import (
    CallView,
    DryRunDecision,
    InterceptedCall,
    RunSummary,
    StepSummary,
    ToolCallRecord,
    Usage,
)
from warden.config import DEFAULT_TENANT
from warden.supervisor.errors import IllegalTransitionError, JournalError, RunNotFoundError
from warden.supervisor.journal_anomaly import anomalies_of
from warden.supervisor.journal_audit import CHAIN_FUNCTION
from warden.supervisor.journal_schema import GUARD_MESSAGE, SCHEMA_VERSION
from warden.supervisor.journal_writer import JournalWriter, Statement, open_journal_writer
from warden.supervisor.run_states import (
    TERMINAL,
    UNFINISHED,
    RunStatus,
    check_initial,
    check_transition,
)

__all__ = (
    "ApprovalRecord",
    "DeadLetter",
    "Effect",
    "Journal",
    "JournalError",
    "RecordedCall",
    "RunState",
    "open_journal",
    "open_journal_reader",
)

log = structlog.get_logger("warden.journal")

Row = tuple[Any, ...]
"""A row as read: SQLite's types, checked by the schema, not by mypy."""
_json = msgspec.json.Encoder()
_ENDED_KEPT = 4096
"""Statuses of ended runs kept in memory (a later resume or cancel of an older one reads
its status from the file once)."""


class Journal:
    """The journal of runs; obtained from ``open_journal``. A write method returns once
    its write is committed, unless called with ``wait=False`` (``JournalWriter.write``)."""

    def __init__(self, path: Path, writer: JournalWriter, reader: aiosqlite.Connection,
                 *, version: int = SCHEMA_VERSION):
        self.path = path
        self.version = version
        """The file's schema version: older than ``SCHEMA_VERSION`` only when read-only
        (``open_journal_reader``), which reads what an older file has."""
        self._writer = writer
        self._reader = reader
        self._statuses: dict[str, str] = {}
        self._ended: deque[str] = deque()
        writer.on_failure = self._write_failed

    @property
    def commits(self) -> int:
        """Transactions committed so far (group commit: fewer than ``writes``)."""
        return self._writer.commits

    @property
    def writes(self) -> int:
        """Writes committed (or failed) so far."""
        return self._writer.writes

    async def sync(self) -> None:
        """Wait until every write queued before this call is committed. A cancellation
        point; what a reader that must see queued writes calls first."""
        await self._writer.sync()

    # -- statuses -----------------------------------------------------------------------

    def _remember(self, run_id: str, status: str) -> None:
        self._statuses[run_id] = status
        if status in TERMINAL:
            self._ended.append(run_id)
            while len(self._ended) > _ENDED_KEPT:
                old = self._ended.popleft()
                if self._statuses.get(old) in TERMINAL:
                    del self._statuses[old]

    def _write_failed(self, run_id: str, error: BaseException) -> None:
        # What the write would have set is not on disk: read it again when next needed.
        self._statuses.pop(run_id, None)

    async def _current_status(self, run_id: str) -> str:
        known = self._statuses.get(run_id)
        if known is not None:
            return known
        await self._writer.sync()  # a queued write of this run must be read back
        status = await self.run_status(run_id)
        if status is None:
            raise RunNotFoundError(run_id)
        return self._statuses.setdefault(run_id, status)  # a concurrent change wins

    # -- writes -------------------------------------------------------------------------

    async def create_run(
        self,
        run_id: str,
        *,
        text: str,
        status: RunStatus,
        scenario: str | None = None,
        budget_usd: float | None = None,
        error: str | None = None,
        dry_run: bool = False,
        tenant: str | None = None,
    ) -> bool:
        """Record a new run in ``status`` (``queued`` or ``rejected``); ``False`` (and
        nothing written) if the id is already known. ``dry_run``: the run is a dry run,
        for as long as it lives (``RunState.dry_run``). ``tenant``: whose run it is
        (``None``: the ``default`` tenant's).

        Raises ``IllegalTransitionError`` for any other status.
        """
        check_initial(run_id, status)
        if run_id in self._statuses or await self.run_status(run_id) is not None:
            return False
        if run_id in self._statuses:  # created meanwhile, by a concurrent call
            return False
        self._remember(run_id, status)
        now = time.time()
        await self._writer.write(
            [
                (
                    "INSERT OR IGNORE INTO runs (id, status, text, scenario, budget_usd, "
                    "created_at, updated_at, error, dry_run, tenant) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (run_id, status, text, scenario, budget_usd, now, now, error, int(dry_run),
                     tenant),
                ),
                _event(run_id, "run_created", status, error or "", None, now),
            ],
            tag=run_id,
        )
        return True

    async def transition(
        self,
        run_id: str,
        status: str,
        *,
        message: str = "",
        error: str | None = None,
        result: str | None = None,
        plan: str | None = None,
        tokens: int | None = None,
        cost_usd: float | None = None,
        wait: bool = True,
    ) -> None:
        """Set the run's status (and what came with it) and append its ``status`` event,
        in one transaction; a terminal status also ends the run's ``running`` steps in
        that status (a step cut off by a cancel is ``cancelled``, not left ``running``).

        ``status`` is a ``RunStatus``; the change is checked against the run's current
        status (``check_transition``) before anything is queued. Does not read the file
        unless the journal does not hold the run's status (then it waits for the queued
        writes and reads it once). A cancellation point with ``wait``.

        Raises ``IllegalTransitionError`` (nothing written) for a change the state
        machine refuses, ``RunNotFoundError`` for an unknown run, ``JournalError`` when
        the write fails.
        """
        old = self._statuses.get(run_id)
        if old is None:
            old = await self._current_status(run_id)
        check_transition(run_id, old, status)
        self._remember(run_id, status)
        now = time.time()
        statements: list[Statement] = [
            (
                "UPDATE runs SET status = ?, updated_at = ?, "
                "error = COALESCE(?, error), result = COALESCE(?, result), "
                "plan = COALESCE(?, plan), tokens = COALESCE(?, tokens), "
                "cost_usd = COALESCE(?, cost_usd) WHERE id = ?",
                (status, now, error, result, plan, tokens, cost_usd, run_id),
            ),
            _event(run_id, "status", status, message or error or "", None, now),
        ]
        if status in TERMINAL:
            # A run that ended has no running step: one cut off where it stood (a run
            # cancelled mid-step) ends with the run, in its status. Pinned by
            # test_a_run_that_ends_ends_its_running_steps_in_its_status.
            statements.append((
                "UPDATE steps SET status = ? WHERE run_id = ? AND status = 'running'",
                (status, run_id),
            ))
        try:
            await self._writer.write(statements, wait=wait, tag=run_id)
        except JournalError as exc:
            if GUARD_MESSAGE not in str(exc):
                raise
            # The file disagreed with what the journal held (another writer?): the
            # trigger refused it and the status was forgotten; say what the file has.
            raise IllegalTransitionError(run_id, await self.run_status(run_id), status) from exc

    async def record_step(
        self,
        run_id: str,
        index: int,
        *,
        role: str,
        instruction: str,
        status: str,
        turns: int = 0,
        output: str = "",
        tokens: int = 0,
        cost_usd: float = 0.0,
        wait: bool = True,
    ) -> None:
        """Insert or update one step of a run (its events come through the event stream)."""
        await self._writer.write(
            [
                (
                    "INSERT INTO steps (run_id, idx, role, instruction, status, turns, output, "
                    "tokens, cost_usd) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (run_id, idx) DO UPDATE SET status = excluded.status, "
                    "turns = excluded.turns, output = excluded.output, "
                    "tokens = excluded.tokens, cost_usd = excluded.cost_usd",
                    (run_id, index, role, instruction, status, turns, output, tokens, cost_usd),
                ),
            ],
            wait=wait,
        )

    async def record_turn(
        self,
        run_id: str,
        *,
        key: str | None = None,
        step: int | None,
        turn: int | None,
        purpose: str,
        model: str,
        request: object,
        response: object,
        usage: Usage,
        cost_usd: float,
        latency_ms: float,
    ) -> None:
        """Record one model call, under its idempotency ``key``."""
        now = time.time()
        statements: list[Statement] = [
            (
                "INSERT OR IGNORE INTO model_calls (key, run_id, step, turn, purpose, model, "
                "request, response, input_tokens, output_tokens, cache_creation_tokens, "
                "cache_read_tokens, cost_usd, latency_ms, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key, run_id, step, turn, purpose, model,
                    _json.encode(request).decode(), _json.encode(response).decode(),
                    usage.input_tokens, usage.output_tokens,
                    usage.cache_creation_input_tokens, usage.cache_read_input_tokens,
                    cost_usd, latency_ms, now,
                ),
            )
        ]
        await self._writer.write(statements)

    async def record_intent(
        self, key: str, *, run_id: str, step: int, tool: str, arguments: dict[str, object]
    ) -> None:
        """Commit that the side-effecting call ``key`` is about to act (before it does)."""
        now = time.time()
        await self._writer.write([(
            "INSERT OR IGNORE INTO effects (key, run_id, step, tool, arguments, state, "
            "created_at, updated_at) VALUES (?, ?, ?, ?, ?, 'intent', ?, ?)",
            (key, run_id, step, tool, _json.encode(arguments).decode(), now, now),
        )])

    async def record_outcome(
        self, key: str, *, run_id: str, step: int, turn: int, record: ToolCallRecord,
        wait: bool = True,
    ) -> None:
        """Commit the outcome of call ``key`` (and its tool_calls row), after it acted."""
        now = time.time()
        await self._writer.write([
            (
                "INSERT INTO effects (key, run_id, step, tool, arguments, state, ok, output, "
                "duration_ms, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, 'done', ?, ?, ?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET state = 'done', ok = excluded.ok, "
                "output = excluded.output, duration_ms = excluded.duration_ms, "
                "updated_at = excluded.updated_at",
                (key, run_id, step, record.name, _json.encode(record.arguments).decode(),
                 int(record.ok), record.output, record.duration_ms, now, now),
            ),
            _tool_call(run_id, step, turn, record, now),
        ], wait=wait)

    async def record_intercepted(
        self, run_id: str, *, key: str, step: int, turn: int, tool: str,
        arguments: dict[str, object], decision: DryRunDecision, by: str, reason: str,
        output: str, simulated: bool = False, wait: bool = True,
    ) -> None:
        """Record what a dry run would have done at one tool call, under its key (a
        replay's second record of the same call is ignored). A cancellation point with
        ``wait``."""
        await self._writer.write([(
            "INSERT OR IGNORE INTO dry_run_calls (key, run_id, step, turn, tool, arguments, "
            "decision, by, reason, output, simulated, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (key, run_id, step, turn, tool, _json.encode(arguments).decode(), decision, by,
             reason, output, int(simulated), time.time()),
        )], wait=wait)

    async def record_event(
        self, run_id: str, kind: str, status: str, message: str, data: bytes | None
    ) -> None:
        """Append one event of the run's event stream (not waited for: the events table
        is what a replay does not need). ``data`` is the event as JSON."""
        await self._writer.write(
            [_event(run_id, kind, status, message, None if data is None else data.decode(),
                    time.time())],
            wait=False,
        )

    async def bump_epoch(self, run_id: str) -> int:
        """Start a new epoch of the run (``warden resume``); returns it."""
        await self._writer.write([("UPDATE runs SET epoch = epoch + 1 WHERE id = ?", (run_id,))])
        state = await self.run_state(run_id)
        return 0 if state is None else state.epoch

    async def record_dead_letter(
        self, *, stream_seq: int, msg_id: str | None, data: bytes, reason: str, deliveries: int
    ) -> None:
        """Keep a task message that could not be taken in, with why."""
        await self._writer.write([(
            "INSERT INTO dead_letters (stream_seq, msg_id, data, reason, deliveries, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (stream_seq, msg_id, data, reason, deliveries, time.time()),
        )])

    async def mark_retried(self, letter_id: int) -> None:
        await self._writer.write([(
            "UPDATE dead_letters SET retried_at = ? WHERE id = ?", (time.time(), letter_id)
        )])

    # -- approvals (supervisor/approvals.py) --------------------------------------------

    async def record_approval(self, request: ApprovalRecord) -> None:
        """Commit a pending approval request; a second one for the same call key is
        ignored (the first stands: a replay finds it)."""
        r = request
        await self._writer.write([(
            "INSERT OR IGNORE INTO approvals (id, run_id, step, call_key, tool, arguments, "
            "risk, why, hash, created_at, expires_at, status, decided_by, reason, decided_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (r.id, r.run_id, r.step, r.call_key, r.tool, _json.encode(r.arguments).decode(),
             r.risk, r.why, r.hash, r.created_at, r.expires_at, r.status, r.decided_by,
             r.reason, r.decided_at),
        )])

    async def decide_approval(self, approval_id: str, *, status: str, decided_by: str,
                              reason: str, decided_at: float) -> None:
        """Commit the decision of a pending request (a decided one is left as it is)."""
        await self._writer.write([(
            "UPDATE approvals SET status = ?, decided_by = ?, reason = ?, decided_at = ? "
            "WHERE id = ? AND status = 'pending'",
            (status, decided_by, reason, decided_at, approval_id),
        )])

    async def approval(self, approval_id: str) -> ApprovalRecord | None:
        """The approval request ``approval_id``, as the file has it."""
        rows = await self._rows(f"{_APPROVAL_COLUMNS} WHERE id = ?", (approval_id,))
        return _approval(rows[0]) if rows else None

    async def approval_for_call(self, call_key: str) -> ApprovalRecord | None:
        """The approval request of tool call ``call_key``, if one was made."""
        rows = await self._rows(f"{_APPROVAL_COLUMNS} WHERE call_key = ?", (call_key,))
        return _approval(rows[0]) if rows else None

    async def approvals(self, *, status: str | None = "pending", limit: int = 1000,
                        live_only: bool = False, run_id: str | None = None,
                        ) -> list[ApprovalRecord]:
        """Approval requests in ``status`` (``None``: all), of run ``run_id`` if given,
        oldest first; with ``live_only``, only those of runs that have not ended (a
        cancelled run's request stays pending in the file, and no decision can matter
        to it)."""
        where, params = [], []
        if status is not None:
            where.append("status = ?")
            params.append(status)
        if run_id is not None:
            where.append("run_id = ?")
            params.append(run_id)
        if live_only:
            ended = ", ".join("?" for _ in TERMINAL)
            where.append(f"run_id IN (SELECT id FROM runs WHERE status NOT IN ({ended}))")
            params.extend(sorted(TERMINAL))
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = await self._rows(f"{_APPROVAL_COLUMNS}{clause} ORDER BY created_at LIMIT ?",
                                (*params, limit))
        return [_approval(row) for row in rows]

    # -- reads --------------------------------------------------------------------------
    # Each read is one hop that runs its statement to the end: a statement left open
    # between hops would pin the reader's snapshot, and a read just after a commit could
    # miss it (seen under load: a finished run read back without its result).

    async def _rows(self, sql: str, params: tuple[object, ...] = ()) -> list[Row]:
        return [tuple(row) for row in await self._reader.execute_fetchall(sql, params)]

    async def _one(self, sql: str, params: tuple[object, ...] = ()) -> Row | None:
        rows = await self._rows(sql, params)
        return rows[0] if rows else None

    async def run_status(self, run_id: str) -> str | None:
        """The run's status as the file has it (writes still queued are not seen)."""
        row = await self._one("SELECT status FROM runs WHERE id = ?", (run_id,))
        return None if row is None else str(row[0])

    async def get_run(self, run_id: str) -> RunSummary | None:
        """The run with its steps (and, for a dry run, what it would have done), or
        ``None``."""
        row = await self._one(_RUN_COLUMNS + " WHERE id = ?", (run_id,))
        if row is None:
            return None
        tenant: object = None
        if self.version >= 6:
            dry_run_value, tenant = await self._one(
                "SELECT dry_run, tenant FROM runs WHERE id = ?", (run_id,)) or (0, None)
            dry_run = bool(dry_run_value)
        else:
            dry_run = self.version >= 3 and bool((await self._one(
                "SELECT dry_run FROM runs WHERE id = ?", (run_id,)) or (0,))[0])
        rows = await self._rows(
            "SELECT idx, role, instruction, status, turns, output, tokens, cost_usd "
            "FROM steps WHERE run_id = ? ORDER BY idx",
            (run_id,),
        )
        steps = [
            StepSummary(
                index=r[0], role=r[1], instruction=r[2], status=r[3], turns=r[4],
                output=r[5], tokens=r[6], cost_usd=r[7],
            )
            for r in rows
        ]
        summary = _summary(row, steps)
        if tenant is not None:  # NULL: the default tenant's (RunSummary's default)
            summary = msgspec.structs.replace(summary, tenant=str(tenant))
        anomalies = await anomalies_of(self, run_id)
        if anomalies:
            summary = msgspec.structs.replace(summary, anomalies=anomalies)
        if not dry_run:
            return summary
        return msgspec.structs.replace(summary, dry_run=True,
                                       intercepted=await self.intercepted(run_id))

    async def calls(self, run_id: str) -> list[CallView]:
        """Every model and tool call recorded for the run, in the order recorded (a
        refused tool call too: its output says why)."""
        model = await self._rows(
            "SELECT step, turn, purpose, model, request, response, input_tokens, "
            "output_tokens, cache_read_tokens, cache_creation_tokens, cost_usd, latency_ms, "
            "created_at, id FROM model_calls WHERE run_id = ?", (run_id,))
        tools = await self._rows(
            "SELECT step, turn, name, arguments, ok, output, duration_ms, created_at, id "
            "FROM tool_calls WHERE run_id = ?", (run_id,))
        views = [(r[12], 0, r[13], CallView(
            kind="model", step=r[0], turn=r[1], purpose=r[2], name=r[3], request=r[4],
            response=r[5], input_tokens=r[6], output_tokens=r[7], cache_read_tokens=r[8],
            cache_creation_tokens=r[9], cost_usd=r[10], duration_ms=r[11], at=r[12],
        )) for r in model]
        views += [(r[7], 1, r[8], CallView(
            kind="tool", step=r[0], turn=r[1], name=r[2], request=r[3], ok=bool(r[4]),
            response=r[5], duration_ms=r[6], at=r[7],
        )) for r in tools]
        # A turn's model call is recorded before its tools (its reply names them).
        return [view for *_, view in sorted(views, key=lambda v: v[:3])]

    async def intercepted(self, run_id: str) -> list[InterceptedCall]:
        """What dry run ``run_id`` would have done: its intercepted and refused tool
        calls, in the order they were made."""
        rows = await self._rows(
            "SELECT key, step, turn, tool, arguments, decision, by, reason, output, "
            "simulated FROM dry_run_calls WHERE run_id = ? ORDER BY created_at, rowid",
            (run_id,),
        )
        return [
            InterceptedCall(key=str(r[0]), step=int(r[1]), turn=int(r[2]), tool=str(r[3]),
                            arguments=msgspec.json.decode(r[4]), decision=r[5], by=str(r[6]),
                            reason=str(r[7]), output=str(r[8]), simulated=bool(r[9]))
            for r in rows
        ]

    async def list_runs(self, *, limit: int = 100, status: str | None = None) -> list[RunSummary]:
        """The newest ``limit`` runs, newest last, optionally of one status."""
        where, params = (" WHERE status = ?", (status,)) if status else ("", ())
        sql = f"{_RUN_COLUMNS}{where} ORDER BY created_at DESC, rowid DESC LIMIT ?"
        rows = await self._rows(sql, (*params, limit))
        return [_summary(r, []) for r in reversed(rows)]

    async def page_runs(
        self, *, limit: int, status: str | None = None, before: int | None = None,
        text_chars: int = 200, text: str = "",
    ) -> list[tuple[int, RunSummary]]:
        """One page of runs for a listing, newest first, each with its cursor: the
        ``limit`` newest runs (of ``status``, if given; whose id or text holds ``text``,
        case-insensitive, if given) older than cursor ``before``.

        A listing's run has its text, scenario and error cut to ``text_chars``
        (``truncated`` set then), no result and no steps: what a listing shows, and bounded
        in bytes whatever the runs hold (``get_run`` has the rest). The cursor is the run's rowid,
        which grows with every run created.
        """
        where: list[str] = []
        params: list[object] = [text_chars, text_chars, text_chars]
        if status is not None:
            where.append("status = ?")
            params.append(status)
        if before is not None:
            where.append("rowid < ?")
            params.append(before)
        if text:
            where.append("(instr(lower(id), ?) > 0 OR instr(lower(text), ?) > 0)")
            params += [text.lower(), text.lower()]
        sql = (
            "SELECT rowid, id, status, substr(text, 1, ?), substr(scenario, 1, ?), created_at, "
            "updated_at, tokens, cost_usd, substr(error, 1, ?), length(text), length(error) "
            "FROM runs"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY rowid DESC LIMIT ?"
        )
        rows = await self._rows(sql, (*params, limit))
        return [
            (int(r[0]), msgspec.structs.replace(
                _summary((*r[1:10], None), []),
                truncated=int(r[10] or 0) > text_chars or int(r[11] or 0) > text_chars,
            ))
            for r in rows
        ]

    async def run_state(self, run_id: str) -> RunState | None:
        """What a resuming run supervisor needs of its run, or ``None``."""
        row = await self._one(
            "SELECT id, status, text, scenario, budget_usd, plan, epoch, dry_run, tenant "
            "FROM runs "
            "WHERE id = ?",
            (run_id,),
        )
        return None if row is None else _state(row)

    async def unfinished_runs(self) -> list[RunState]:
        """Runs a daemon must resume at start: those in an ``UNFINISHED`` status."""
        rows = await self._rows(
            "SELECT id, status, text, scenario, budget_usd, plan, epoch, dry_run, tenant "
            "FROM runs "
            f"WHERE status IN ({', '.join('?' * len(UNFINISHED))}) ORDER BY created_at, rowid",
            tuple(sorted(UNFINISHED)),
        )
        return [_state(row) for row in rows]

    async def recorded_calls(self, run_id: str) -> dict[str, RecordedCall]:
        """Every model call of the run that has a key, by key."""
        rows = await self._rows(
            "SELECT key, model, response, input_tokens, output_tokens, cache_creation_tokens, "
            "cache_read_tokens, cost_usd, latency_ms FROM model_calls "
            "WHERE run_id = ? AND key IS NOT NULL",
            (run_id,),
        )
        return {
            str(r[0]): RecordedCall(
                model=r[1], response=r[2],
                usage=Usage(input_tokens=r[3], output_tokens=r[4],
                            cache_creation_input_tokens=r[5], cache_read_input_tokens=r[6]),
                cost_usd=r[7], latency_ms=r[8],
            )
            for r in rows
        }

    async def spent(self, run_id: str) -> tuple[int, float]:
        """Tokens and dollars of every recorded model call of the run."""
        row = await self._one(
            "SELECT COALESCE(SUM(input_tokens + output_tokens + cache_creation_tokens + "
            "cache_read_tokens), 0), COALESCE(SUM(cost_usd), 0) FROM model_calls "
            "WHERE run_id = ?",
            (run_id,),
        )
        return (0, 0.0) if row is None else (int(row[0]), float(row[1]))

    async def effects(self, run_id: str) -> dict[str, Effect]:
        """Every recorded tool call of the run (intent or done), by key."""
        rows = await self._rows(
            "SELECT key, tool, arguments, state, ok, output, duration_ms FROM effects "
            "WHERE run_id = ?",
            (run_id,),
        )
        found: dict[str, Effect] = {}
        for key, tool, arguments, state, ok, output, duration_ms in rows:
            record = None
            if state == "done":
                record = ToolCallRecord(
                    name=str(tool), arguments=msgspec.json.decode(arguments),
                    ok=bool(ok), output=str(output or ""),
                    duration_ms=float(duration_ms or 0.0),
                )
            found[str(key)] = Effect(key=str(key), tool=str(tool), state=str(state),
                                     record=record)
        return found

    async def dead_letters(self) -> list[DeadLetter]:
        rows = await self._rows(
            "SELECT id, stream_seq, msg_id, data, reason, deliveries, created_at, retried_at "
            "FROM dead_letters ORDER BY id"
        )
        return [DeadLetter(*row) for row in rows]

    async def count_model_calls(self, run_id: str) -> int:
        row = await self._one("SELECT COUNT(*) FROM model_calls WHERE run_id = ?", (run_id,))
        return int(row[0]) if row else 0

    async def call_tally(self) -> dict[str, tuple[int, int, int]]:
        """Every run's ``(model calls, tool calls, tokens of its model calls)``."""
        tally: dict[str, tuple[int, int, int]] = {}
        for run_id, calls, tokens in await self._rows(
            "SELECT run_id, COUNT(*), SUM(input_tokens + output_tokens + cache_creation_tokens "
            "+ cache_read_tokens) FROM model_calls GROUP BY run_id"
        ):
            tally[str(run_id)] = (int(calls), 0, int(tokens))
        for run_id, calls in await self._rows(
            "SELECT run_id, COUNT(*) FROM tool_calls GROUP BY run_id"
        ):
            model_calls, _, tokens = tally.get(str(run_id), (0, 0, 0))
            tally[str(run_id)] = (model_calls, int(calls), tokens)
        return tally

    async def tool_call_names(self, run_id: str) -> list[str]:
        rows = await self._rows(
            "SELECT name FROM tool_calls WHERE run_id = ? ORDER BY id", (run_id,)
        )
        return [str(r[0]) for r in rows]


class RunState(NamedTuple):
    """What a run supervisor needs of its run."""

    id: str
    status: RunStatus
    text: str
    scenario: str | None
    budget_usd: float | None
    plan: str | None
    epoch: int
    dry_run: bool = False
    """A dry run (``supervisor/dry_run.py``): its side effects are intercepted."""
    tenant: str = DEFAULT_TENANT
    """Whose run it is: its day's spend counts at this tenant's budget level."""


def _state(row: Row) -> RunState:
    run_id, status, text, scenario, budget_usd, plan, epoch, dry_run, tenant = row
    return RunState(run_id, status, text, scenario, budget_usd, plan, epoch, bool(dry_run),
                    tenant or DEFAULT_TENANT)


class RecordedCall(NamedTuple):
    model: str
    response: str
    usage: Usage
    cost_usd: float
    latency_ms: float


class Effect(NamedTuple):
    key: str
    tool: str
    state: str
    """``intent`` (about to act, outcome unknown) or ``done``."""
    record: ToolCallRecord | None


class ApprovalRecord(NamedTuple):
    """One approval request and its decision (``supervisor/approvals.py``)."""

    id: str
    run_id: str
    step: int
    call_key: str
    tool: str
    arguments: dict[str, object]
    risk: str
    why: str
    hash: str
    created_at: float
    expires_at: float
    status: str
    """``pending``, ``approved``, ``denied`` or ``expired`` (``approvals.ApprovalStatus``)."""
    decided_by: str | None = None
    reason: str | None = None
    decided_at: float | None = None


_APPROVAL_COLUMNS = (
    "SELECT id, run_id, step, call_key, tool, arguments, risk, why, hash, created_at, "
    "expires_at, status, decided_by, reason, decided_at FROM approvals"
)


def _approval(row: Row) -> ApprovalRecord:
    return ApprovalRecord(
        id=str(row[0]), run_id=str(row[1]), step=int(row[2]), call_key=str(row[3]),
        tool=str(row[4]), arguments=msgspec.json.decode(row[5]), risk=str(row[6]),
        why=str(row[7]), hash=str(row[8]), created_at=float(row[9]),
        expires_at=float(row[10]), status=str(row[11]),
        decided_by=None if row[12] is None else str(row[12]),
        reason=None if row[13] is None else str(row[13]),
        decided_at=None if row[14] is None else float(row[14]),
    )


class DeadLetter(NamedTuple):
    id: int
    stream_seq: int
    msg_id: str | None
    data: bytes
    reason: str
    deliveries: int
    created_at: float
    retried_at: float | None


def _tool_call(
    run_id: str, step: int | None, turn: int | None, record: ToolCallRecord, now: float
) -> Statement:
    return (
        "INSERT INTO tool_calls (run_id, step, turn, name, arguments, ok, output, "
        "duration_ms, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            run_id, -1 if step is None else step, -1 if turn is None else turn, record.name,
            _json.encode(record.arguments).decode(), int(record.ok), record.output,
            record.duration_ms, now,
        ),
    )


_RUN_COLUMNS = (
    "SELECT id, status, text, scenario, created_at, updated_at, tokens, cost_usd, error, "
    "result FROM runs"
)


def _summary(row: sqlite3.Row | tuple[object, ...], steps: list[StepSummary]) -> RunSummary:
    return RunSummary(
        id=str(row[0]), status=str(row[1]), text=str(row[2]),
        scenario=row[3] if row[3] is None else str(row[3]),
        created_at=float(row[4]), updated_at=float(row[5]),  # type: ignore[arg-type]
        tokens=int(row[6]), cost_usd=float(row[7]),  # type: ignore[arg-type]
        error=None if row[8] is None else str(row[8]),
        result=None if row[9] is None else str(row[9]),
        steps=steps,
    )


def _event(
    run_id: str, kind: str, status: str, message: str, data: str | None, now: float
) -> Statement:
    return (_INSERT_EVENT, (run_id, kind, status, message, data, now))


_INSERT_EVENT = (
    "INSERT INTO events (run_id, kind, status, message, data, created_at, hash) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, " + CHAIN_FUNCTION + "("
    "(SELECT hash FROM events ORDER BY seq DESC LIMIT 1), "
    "(SELECT COALESCE(MAX(seq), 0) + 1 FROM events), ?1, ?2, ?3, ?4, ?5, ?6))"
)
"""An event, linked into the audit chain by the writer's ``warden_chain`` (its seq is the
rowid SQLite gives it: one more than the largest)."""


async def _connect(path: Path) -> aiosqlite.Connection:
    conn = await aiosqlite.connect(path, isolation_level=None)
    await conn.execute("PRAGMA busy_timeout = 5000")
    return conn


@asynccontextmanager
async def open_journal(path: Path) -> AsyncIterator[Journal]:
    """Open (creating or migrating it) the journal at ``path`` and run its writer.

    Raises ``JournalError`` with the reason when the file is not usable (not a database,
    read-only, corrupt). On exit, waits for queued writes to commit, then closes.
    """
    async with open_journal_writer(path) as writer:
        try:
            reader = await _connect(path)
        except (sqlite3.Error, OSError) as exc:
            # The writer is closed on the way out; a reader that connected owns a
            # (non-daemon) thread. Pinned by test_a_file_that_is_not_a_database_...
            raise JournalError(str(path), f"cannot be used: {exc}") from exc
        try:
            yield Journal(path, writer, reader)
        finally:
            with anyio.CancelScope(shield=True):
                await reader.close()


@asynccontextmanager
async def open_journal_reader(path: Path) -> AsyncIterator[Journal]:
    """Open the journal at ``path`` read-only: to read runs while no daemon holds it
    (``warden runs`` and ``warden show`` without a daemon).

    Nothing is created, migrated or written (SQLite's ``mode=ro``); the reads are
    ``open_journal``'s, and every write raises ``JournalError`` (its writer is closed
    from the start). Raises ``JournalError`` when the file is missing, is not a warden
    journal, or has a newer schema.
    """
    uri = f"{path.absolute().as_uri()}?mode=ro"  # noqa: ASYNC240 - no I/O: cwd only
    try:
        reader = await aiosqlite.connect(uri, uri=True, isolation_level=None)
    except (sqlite3.Error, OSError) as exc:
        raise JournalError(str(path), f"cannot be read: {exc}") from exc
    try:
        try:
            version = (await _rows_of(reader, "PRAGMA user_version"))[0][0]
            # The writer's connection, never written through: its writer is closed.
            unused = sqlite3.connect(uri, uri=True, check_same_thread=False)
        except sqlite3.Error as exc:
            raise JournalError(str(path), f"cannot be read: {exc}") from exc
        if not 1 <= version <= SCHEMA_VERSION:
            raise JournalError(str(path), f"is not a journal this warden reads (schema "
                                          f"version {version}, this warden's {SCHEMA_VERSION})")
        writer = JournalWriter(path, unused)
        writer.close()
        try:
            yield Journal(path, writer, reader, version=version)
        finally:
            unused.close()
    finally:
        with anyio.CancelScope(shield=True):
            await reader.close()


async def _rows_of(conn: aiosqlite.Connection, sql: str) -> list[Row]:
    return [tuple(row) for row in await conn.execute_fetchall(sql)]

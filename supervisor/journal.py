"""The run journal: SQLite, one writer with group commit.

One writer connection takes every write; writes queued while a transaction is in flight
are committed together in the next one, so many concurrent runs share one fsync (group
commit). A whole transaction (BEGIN, every statement, COMMIT) is one hop to a worker
thread: per-statement hops through aiosqlite cost more CPU than the inserts themselves
(bench/README.md). Callers await their write's commit, so a transition is durable before
its effect happens. Reads use a second connection, through aiosqlite (WAL lets them run
beside the writer). The only module that imports aiosqlite or sqlite3.

Schema (``SCHEMA_VERSION`` 2; a version-1 file is migrated in place at open)::

    runs          id, status, text, scenario, budget_usd, created_at, updated_at,
                  tokens, cost_usd, error, result, plan, epoch
    steps         run_id, idx, role, instruction, status, turns, output, tokens, cost_usd
    model_calls   key (unique), run_id, step, turn, purpose, model, request, response,
                  input_tokens, output_tokens, cache_creation_tokens, cache_read_tokens,
                  cost_usd, latency_ms, created_at
    tool_calls    run_id, step, turn, name, arguments, ok, output, duration_ms, created_at
    effects       key (primary), run_id, step, tool, arguments, state (intent | done),
                  ok, output, duration_ms, created_at, updated_at
    dead_letters  id, stream_seq, msg_id, data, reason, deliveries, created_at, retried_at
    events        seq, run_id, kind, status, message, data, created_at   (append-only)

``model_calls.key`` and ``effects.key`` are the idempotency keys the run supervisor
derives from (run, epoch, step, attempt, turn, call): a replay finds its recorded model
replies and tool outcomes under the same keys and does not call again.

Secrets never reach it: requests are stored as the model saw them (prompt and messages),
never headers, keys or the environment.
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, NamedTuple

import aiosqlite
import anyio
import msgspec
import structlog
from warden.bus.wire import RunSummary, StepSummary, ToolCallRecord, Usage
from warden.supervisor.errors import SupervisorError
from warden.supervisor.journal_schema import INDEXES, MIGRATE_FROM_1, SCHEMA, SCHEMA_VERSION

log = structlog.get_logger("warden.journal")

Statement = tuple[str, tuple[object, ...]]
Row = tuple[Any, ...]
"""A row as read: SQLite's types, checked by the schema, not by mypy."""
_json = msgspec.json.Encoder()


class JournalError(SupervisorError):
    """The journal file cannot be opened or written."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"journal {path!r}: {problem}")


class _Write:
    __slots__ = ("done", "error", "statements")

    def __init__(self, statements: Sequence[Statement], *, awaited: bool) -> None:
        self.statements = statements
        # A bare future: an anyio.Event per write cost a backend lookup and a deque.
        self.done = asyncio.get_running_loop().create_future() if awaited else None
        self.error: BaseException | None = None


class Journal:
    """The journal of runs. A write method returns once its write is committed, unless
    called with ``wait=False`` (see ``_write``)."""

    def __init__(self, path: Path, writer: sqlite3.Connection, reader: aiosqlite.Connection):
        self.path = path
        self._writer = writer
        self._lane = anyio.CapacityLimiter(1)  # one transaction at a time on the writer
        self._reader = reader
        self._pending: list[_Write] = []
        self._wake = anyio.Event()
        self._closing = False
        self.commits = 0
        self.writes = 0

    # -- the writer ---------------------------------------------------------------------

    async def _write(self, statements: Sequence[Statement], *, wait: bool = True) -> None:
        """Queue ``statements`` as one write; with ``wait``, return once it is committed.

        Writes commit in the order they were queued, so a committed write means every
        write queued before it is committed too. That makes ``wait=False`` safe for what
        a replay can rebuild (progress rows, tool calls without side effects): the next
        awaited write (a model reply, an intent, the run's end) makes it durable.
        """
        if self._closing:
            raise JournalError(str(self.path), "is closed")
        write = _Write(statements, awaited=wait)
        self._pending.append(write)
        self._wake.set()
        if write.done is None:
            return
        await write.done
        if write.error is not None:
            raise JournalError(str(self.path), f"write failed: {write.error}") from write.error

    async def _run_writer(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            batch, self._pending = self._pending, []
            if batch:
                await self._commit(batch)
            if self._closing and not self._pending:
                return

    async def _commit(self, batch: list[_Write]) -> None:
        flat = [s for w in batch for s in w.statements]
        try:
            with anyio.CancelScope(shield=True):
                await self._execute(flat)
        except sqlite3.Error as exc:
            # Find the culprit: replay each write in a transaction of its own.
            log.warning("journal_batch_failed", error=str(exc), writes=len(batch))
            for write in batch:
                try:
                    with anyio.CancelScope(shield=True):
                        await self._execute(list(write.statements))
                except sqlite3.Error as single:
                    write.error = single
        self.commits += 1
        self.writes += len(batch)
        for write in batch:
            if write.done is not None:
                if not write.done.done():  # its writer may have been cancelled: no one waits
                    write.done.set_result(None)
            elif write.error is not None:  # nobody waits for it: say so here
                log.error("journal_write_failed", error=str(write.error),
                          statement=write.statements[0][0][:60])

    async def _execute(self, statements: list[Statement]) -> None:
        await anyio.to_thread.run_sync(self._execute_now, statements, limiter=self._lane)

    def _execute_now(self, statements: list[Statement]) -> None:
        """One transaction of ``statements``; runs in a worker thread."""
        conn = self._writer
        try:
            conn.execute("BEGIN IMMEDIATE")
            for sql, group in itertools.groupby(statements, key=lambda s: s[0]):
                conn.executemany(sql, [params for _, params in group])
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    # -- writes -------------------------------------------------------------------------

    async def create_run(
        self,
        run_id: str,
        *,
        text: str,
        status: str,
        scenario: str | None = None,
        budget_usd: float | None = None,
        error: str | None = None,
    ) -> bool:
        """Record a new run; ``False`` (and nothing written) if the id is already known."""
        if await self.run_status(run_id) is not None:
            return False
        now = time.time()
        await self._write(
            [
                (
                    "INSERT OR IGNORE INTO runs (id, status, text, scenario, budget_usd, "
                    "created_at, updated_at, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (run_id, status, text, scenario, budget_usd, now, now, error),
                ),
                _event(run_id, "run_created", status, error or "", None, now),
            ]
        )
        return True

    async def transition(
        self,
        run_id: str,
        status: str,
        *,
        kind: str = "status",
        message: str = "",
        error: str | None = None,
        result: str | None = None,
        plan: str | None = None,
        tokens: int | None = None,
        cost_usd: float | None = None,
        wait: bool = True,
    ) -> None:
        """Set the run's status (and what came with it) and append the event."""
        now = time.time()
        await self._write(
            [
                (
                    "UPDATE runs SET status = ?, updated_at = ?, error = COALESCE(?, error), "
                    "result = COALESCE(?, result), plan = COALESCE(?, plan), "
                    "tokens = COALESCE(?, tokens), cost_usd = COALESCE(?, cost_usd) "
                    "WHERE id = ?",
                    (status, now, error, result, plan, tokens, cost_usd, run_id),
                ),
                _event(run_id, kind, status, message or error or "", None, now),
            ],
            wait=wait,
        )

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
        """Insert or update one step of a run."""
        now = time.time()
        await self._write(
            [
                (
                    "INSERT INTO steps (run_id, idx, role, instruction, status, turns, output, "
                    "tokens, cost_usd) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (run_id, idx) DO UPDATE SET status = excluded.status, "
                    "turns = excluded.turns, output = excluded.output, "
                    "tokens = excluded.tokens, cost_usd = excluded.cost_usd",
                    (run_id, index, role, instruction, status, turns, output, tokens, cost_usd),
                ),
                _event(run_id, "step", status, f"step {index} ({role}): {status}", None, now),
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
        await self._write(statements)

    async def record_intent(
        self, key: str, *, run_id: str, step: int, tool: str, arguments: dict[str, object]
    ) -> None:
        """Commit that the side-effecting call ``key`` is about to act (before it does)."""
        now = time.time()
        await self._write([(
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
        await self._write([
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

    async def bump_epoch(self, run_id: str) -> int:
        """Start a new epoch of the run (``warden resume``); returns it."""
        await self._write([("UPDATE runs SET epoch = epoch + 1 WHERE id = ?", (run_id,))])
        state = await self.run_state(run_id)
        return 0 if state is None else state.epoch

    async def record_dead_letter(
        self, *, stream_seq: int, msg_id: str | None, data: bytes, reason: str, deliveries: int
    ) -> None:
        """Keep a task message that could not be taken in, with why."""
        await self._write([(
            "INSERT INTO dead_letters (stream_seq, msg_id, data, reason, deliveries, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (stream_seq, msg_id, data, reason, deliveries, time.time()),
        )])

    async def mark_retried(self, letter_id: int) -> None:
        await self._write([(
            "UPDATE dead_letters SET retried_at = ? WHERE id = ?", (time.time(), letter_id)
        )])

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
        row = await self._one("SELECT status FROM runs WHERE id = ?", (run_id,))
        return None if row is None else str(row[0])

    async def get_run(self, run_id: str) -> RunSummary | None:
        """The run with its steps, or ``None``."""
        row = await self._one(_RUN_COLUMNS + " WHERE id = ?", (run_id,))
        if row is None:
            return None
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
        return _summary(row, steps)

    async def list_runs(self, *, limit: int = 100, status: str | None = None) -> list[RunSummary]:
        """The newest ``limit`` runs, newest last, optionally of one status."""
        where, params = (" WHERE status = ?", (status,)) if status else ("", ())
        sql = f"{_RUN_COLUMNS}{where} ORDER BY created_at DESC, rowid DESC LIMIT ?"
        rows = await self._rows(sql, (*params, limit))
        return [_summary(r, []) for r in reversed(rows)]

    async def run_state(self, run_id: str) -> RunState | None:
        """What a resuming run supervisor needs of its run, or ``None``."""
        row = await self._one(
            "SELECT id, status, text, scenario, budget_usd, plan, epoch FROM runs WHERE id = ?",
            (run_id,),
        )
        return None if row is None else RunState(*row)

    async def unfinished_runs(self) -> list[RunState]:
        """Runs a daemon must resume at start: queued, planning or running."""
        rows = await self._rows(
            "SELECT id, status, text, scenario, budget_usd, plan, epoch FROM runs "
            "WHERE status IN ('queued', 'planning', 'running') ORDER BY created_at, rowid"
        )
        return [RunState(*row) for row in rows]

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
    id: str
    status: str
    text: str
    scenario: str | None
    budget_usd: float | None
    plan: str | None
    epoch: int


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
    run_id: str, kind: str, status: str, message: str, data: object, now: float
) -> Statement:
    return (
        "INSERT INTO events (run_id, kind, status, message, data, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (run_id, kind, status, message, None if data is None else _json.encode(data).decode(), now),
    )


async def _connect(path: Path) -> aiosqlite.Connection:
    conn = await aiosqlite.connect(path, isolation_level=None)
    await conn.execute("PRAGMA busy_timeout = 5000")
    return conn


def _open_writer(path: Path) -> tuple[sqlite3.Connection, str | None]:
    """The writer connection, schema created or migrated; and the journal mode it got.
    Blocking: runs in a worker thread. Closes the connection if anything fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Used from one worker thread at a time (the lane), never concurrently.
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        writer.execute("PRAGMA busy_timeout = 5000")
        mode = writer.execute("PRAGMA journal_mode = WAL").fetchone()
        writer.execute("PRAGMA synchronous = FULL")
        version = (writer.execute("PRAGMA user_version").fetchone() or (0,))[0]
        if version > SCHEMA_VERSION:
            raise JournalError(str(path), f"has schema version {version}, newer than this "
                               f"warden's {SCHEMA_VERSION}")
        if version == 1:
            writer.executescript(MIGRATE_FROM_1)
        writer.executescript(SCHEMA + INDEXES)
        writer.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        writer.close()
        raise
    return writer, None if mode is None else str(mode[0])


@asynccontextmanager
async def open_journal(path: Path) -> AsyncIterator[Journal]:
    """Open (creating if needed) the journal at ``path`` and run its writer.

    Raises ``JournalError`` with the reason when the file is not usable (not a database,
    read-only, corrupt). On exit, waits for queued writes to commit, then closes.
    """
    try:
        writer, mode = await anyio.to_thread.run_sync(_open_writer, path)
    except (sqlite3.Error, OSError) as exc:
        raise JournalError(str(path), f"cannot be used: {exc}") from exc
    try:
        reader = await _connect(path)
    except BaseException as exc:
        # The reader owns a (non-daemon) thread once connected; the writer is closed here.
        # Pinned by test_a_file_that_is_not_a_database_...
        writer.close()
        if isinstance(exc, sqlite3.Error | OSError):
            raise JournalError(str(path), f"cannot be used: {exc}") from exc
        raise
    if mode is None or mode.lower() != "wal":
        log.warning("journal_not_wal", mode=mode)
    journal = Journal(path, writer, reader)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(journal._run_writer)
            try:
                yield journal
            finally:
                journal._closing = True
                journal._wake.set()
    finally:
        with anyio.CancelScope(shield=True):
            await reader.close()
            await anyio.to_thread.run_sync(writer.close, limiter=journal._lane)

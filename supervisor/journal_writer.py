"""The journal's writer: one SQLite connection, every write, group commit.

One writer connection takes every write; writes queued while a transaction is in flight
are committed together in the next one, so many concurrent runs share one fsync (group
commit). A whole transaction (BEGIN, every statement, COMMIT) is one hop to a worker
thread: per-statement hops through aiosqlite cost more CPU than the inserts themselves
(bench/README.md).

The contract:

- Writes commit in the order they were queued, so a committed write means every write
  queued before it is committed too. ``write(..., wait=False)`` queues and returns;
  ``sync()`` waits for everything queued before it.
- A batch that fails is replayed one write per transaction, so one bad write (a
  constraint, the run state machine's trigger) fails alone: its waiter gets
  ``JournalError``, and the ``on_failure`` hook hears of it, waited for or not.
- Commits are shielded from cancellation: a write that started committing finishes.

The writer knows statements, not runs: the run repository (``supervisor/journal.py``)
builds them. Only this module and that one import ``sqlite3``.
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import structlog
from warden.supervisor.errors import JournalError
from warden.supervisor.journal_audit import CHAIN_FUNCTION, chain_hash
from warden.supervisor.journal_schema import (
    ANOMALY_SCHEMA,
    AUDIT_SCHEMA,
    DRY_RUN_SCHEMA,
    INDEXES,
    MIGRATE_FROM_1,
    MIGRATE_FROM_2,
    MIGRATE_FROM_3,
    MIGRATE_FROM_5,
    SCHEMA,
    SCHEMA_VERSION,
    SPEND_SCHEMA,
    status_guards,
)

__all__ = ("FailureHook", "JournalWriter", "Statement", "open_journal_writer")

log = structlog.get_logger("warden.journal")

Statement = tuple[str, tuple[object, ...]]
FailureHook = Callable[[str, BaseException], None]
"""Called with a failed write's ``tag`` and its error, in the writer's task."""


class _Write:
    __slots__ = ("done", "error", "statements", "tag")

    def __init__(self, statements: Sequence[Statement], *, awaited: bool, tag: str | None) -> None:
        self.statements = statements
        self.tag = tag
        # A bare future: an anyio.Event per write cost a backend lookup and a deque.
        self.done = asyncio.get_running_loop().create_future() if awaited else None
        self.error: BaseException | None = None


class JournalWriter:
    """The one writer of a journal file; obtained from ``open_journal_writer``."""

    def __init__(self, path: Path, connection: sqlite3.Connection) -> None:
        self.path = path
        self._conn = connection
        self._lane = anyio.CapacityLimiter(1)  # one transaction at a time on the connection
        self._pending: list[_Write] = []
        self._wake = anyio.Event()
        self._closing = False
        self.on_failure: FailureHook | None = None
        self.commits = 0
        self.writes = 0

    async def write(
        self, statements: Sequence[Statement], *, wait: bool = True, tag: str | None = None
    ) -> None:
        """Queue ``statements`` as one write (one transaction, or part of one); with
        ``wait``, return once it is committed.

        A cancellation point only with ``wait`` (the write stays queued and commits
        anyway). ``tag`` is handed to ``on_failure`` if the write fails. Raises
        ``JournalError`` when the writer is closed or (with ``wait``) the write failed,
        with the SQLite error as its cause.
        """
        if self._closing:
            raise JournalError(str(self.path), "is closed")
        write = _Write(statements, awaited=wait, tag=tag)
        self._pending.append(write)
        self._wake.set()
        if write.done is None:
            return
        await write.done
        if write.error is not None:
            raise JournalError(str(self.path), f"write failed: {write.error}") from write.error

    async def sync(self) -> None:
        """Wait until every write queued before this call is committed (or failed).

        A cancellation point; costs no transaction of its own when it shares a batch.
        """
        await self.write((), wait=True)

    async def run(self) -> None:
        """Commit queued writes until ``close()``, then the last of them; then return."""
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            batch, self._pending = self._pending, []
            if batch:
                await self._commit(batch)
            if self._closing and not self._pending:
                return

    def close(self) -> None:
        """Take no more writes; ``run`` returns once the queued ones are committed."""
        self._closing = True
        self._wake.set()

    async def _commit(self, batch: list[_Write]) -> None:
        flat = [s for w in batch for s in w.statements]
        try:
            if flat:
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
            if write.error is not None:
                if write.tag is not None and self.on_failure is not None:
                    self.on_failure(write.tag, write.error)
                if write.done is None:  # nobody waits for it: say so here
                    log.error("journal_write_failed", error=str(write.error),
                              statement=write.statements[0][0][:60])
            if write.done is not None and not write.done.done():
                write.done.set_result(None)  # its writer may have been cancelled: no one waits

    async def _execute(self, statements: list[Statement]) -> None:
        await anyio.to_thread.run_sync(self._execute_now, statements, limiter=self._lane)

    def _execute_now(self, statements: list[Statement]) -> None:
        """One transaction of ``statements``; runs in a worker thread."""
        conn = self._conn
        if not statements:
            return
        try:
            conn.execute("BEGIN IMMEDIATE")
            for sql, group in itertools.groupby(statements, key=lambda s: s[0]):
                conn.executemany(sql, [params for _, params in group])
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    async def _close_connection(self) -> None:
        await anyio.to_thread.run_sync(self._conn.close, limiter=self._lane)


def _open_connection(path: Path) -> tuple[sqlite3.Connection, str | None]:
    """The writer connection, schema created or migrated; and the journal mode it got.
    Blocking: runs in a worker thread. Closes the connection if anything fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Used from one worker thread at a time (the lane), never concurrently.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA busy_timeout = 5000")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()
        conn.execute("PRAGMA synchronous = FULL")
        version = (conn.execute("PRAGMA user_version").fetchone() or (0,))[0]
        if version > SCHEMA_VERSION:
            raise JournalError(str(path), f"has schema version {version}, newer than this "
                               f"warden's {SCHEMA_VERSION}")
        migrations = {1: MIGRATE_FROM_1 + MIGRATE_FROM_2, 2: MIGRATE_FROM_2}.get(version, "")
        events = {row[1] for row in conn.execute("PRAGMA table_info(events)")}
        if events and "hash" not in events:  # an events table from before version 4
            migrations += MIGRATE_FROM_3
        runs = {row[1] for row in conn.execute("PRAGMA table_info(runs)")}
        if runs and "tenant" not in runs:  # a runs table from before version 6
            migrations += MIGRATE_FROM_5
        # One transaction: a crash mid-migration leaves the file as it was, not with half
        # its columns added under the old version number (pinned by
        # test_a_version_2_journal_is_migrated_to_3_in_place).
        conn.executescript(f"BEGIN; {migrations} {SCHEMA} {DRY_RUN_SCHEMA} {AUDIT_SCHEMA} "
                           f"{ANOMALY_SCHEMA} {SPEND_SCHEMA} "
                           f"{INDEXES} {status_guards()} "
                           f"PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")
        # Each event's INSERT computes its link of the audit chain (journal_audit.py).
        conn.create_function(CHAIN_FUNCTION, 8, chain_hash, deterministic=True)
    except BaseException:
        conn.close()
        raise
    return conn, None if mode is None else str(mode[0])


@asynccontextmanager
async def open_journal_writer(path: Path) -> AsyncIterator[JournalWriter]:
    """Open (creating or migrating it) the journal file at ``path`` and run its writer.

    Raises ``JournalError`` with the reason when the file is not usable (not a database,
    read-only, corrupt, a newer schema). On exit, takes no more writes, waits for the
    queued ones to commit, then closes the connection (shielded).
    """
    try:
        conn, mode = await anyio.to_thread.run_sync(_open_connection, path)
    except (sqlite3.Error, OSError) as exc:
        raise JournalError(str(path), f"cannot be used: {exc}") from exc
    if mode is None or mode.lower() != "wal":
        log.warning("journal_not_wal", mode=mode)
    writer = JournalWriter(path, conn)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(writer.run)
            try:
                yield writer
            finally:
                writer.close()
    finally:
        with anyio.CancelScope(shield=True):
            await writer._close_connection()

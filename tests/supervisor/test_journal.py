"""The journal on a real SQLite file: commits, group commit, reads, unusable files, and
the run state machine it enforces."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import anyio
import pytest
from warden.bus.wire import ToolCallRecord, Usage
from warden.supervisor.errors import IllegalTransitionError, JournalError, RunNotFoundError
from warden.supervisor.journal import open_journal, open_journal_reader

pytestmark = pytest.mark.anyio


async def test_run_lifecycle_is_committed_and_readable_after_reopening(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    async with open_journal(path) as journal:
        assert await journal.create_run("r-1", text="t", status="queued")
        assert not await journal.create_run("r-1", text="again", status="queued")
        await journal.transition("r-1", "running", plan='{"steps": []}')
        await journal.record_step("r-1", 0, role="code", instruction="do", status="succeeded",
                                  turns=2, output="done", tokens=10, cost_usd=0.01)
        await journal.record_turn(
            "r-1", step=0, turn=0, purpose="step", model="m", request={"q": 1},
            response={"a": 2}, usage=Usage(input_tokens=3, output_tokens=4), cost_usd=0.01,
            latency_ms=1.0,
        )
        await journal.record_outcome(
            "r-1/e0/s0/a0/t0/c0", run_id="r-1", step=0, turn=0,
            record=ToolCallRecord(name="write_file", arguments={"path": "a"}, ok=True,
                                  output="ok", duration_ms=1.0),
        )
        await journal.transition("r-1", "succeeded", result="R", tokens=7, cost_usd=0.01)
    async with open_journal(path) as journal:
        run = await journal.get_run("r-1")
        assert run is not None
        assert (run.status, run.text, run.result, run.tokens) == ("succeeded", "t", "R", 7)
        assert [(s.role, s.status, s.turns) for s in run.steps] == [("code", "succeeded", 2)]
        assert await journal.count_model_calls("r-1") == 1
        assert await journal.tool_call_names("r-1") == ["write_file"]
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT kind FROM events WHERE run_id = 'r-1' ORDER BY seq")
        kinds = [r[0] for r in rows]
        assert kinds == ["run_created", "status", "status"]
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_concurrent_writers_share_commits(tmp_path: Path) -> None:
    async with open_journal(tmp_path / "j.sqlite") as journal:
        async with anyio.create_task_group() as tg:
            for i in range(200):
                tg.start_soon(lambda i=i: journal.create_run(f"r-{i}", text="t", status="queued"))
        runs = await journal.list_runs(limit=1000)
        assert len(runs) == 200
        # Group commit: 200 concurrent writes took far fewer transactions than writes.
        assert journal.writes == 200
        assert journal.commits < 200


async def test_a_committed_write_is_read_back_at_once_under_concurrent_reads(
    tmp_path: Path,
) -> None:
    # Regression: a read statement left open between hops pinned the reader's snapshot,
    # so a run read back just after its final commit could lack its result.
    async with open_journal(tmp_path / "j.sqlite") as journal:

        async def one(i: int) -> None:
            run_id = f"r-{i}"
            await journal.create_run(run_id, text="t", status="queued")
            for status in ("planning", "running"):
                await journal.transition(run_id, status)
                assert await journal.run_status(run_id) == status
            await journal.transition(run_id, "succeeded", result=f"result {i}")
            run = await journal.get_run(run_id)
            assert run is not None and (run.status, run.result) == ("succeeded", f"result {i}")

        async with anyio.create_task_group() as tg:
            for i in range(300):
                tg.start_soon(one, i)


async def test_call_tally_counts_each_runs_model_calls_tool_calls_and_tokens(
    tmp_path: Path,
) -> None:
    async with open_journal(tmp_path / "j.sqlite") as journal:
        for turn in range(2):
            await journal.record_turn(
                "r-1", key=f"r-1/t{turn}", step=0, turn=turn, purpose="step", model="m",
                request={}, response=[], usage=Usage(input_tokens=10, output_tokens=5),
                cost_usd=0.0, latency_ms=0.0)
        record = ToolCallRecord(name="echo", arguments={}, ok=True, output="o", duration_ms=0.1)
        await journal.record_outcome("r-1/t0/c0", run_id="r-1", step=0, turn=0, record=record)
        assert await journal.call_tally() == {"r-1": (2, 1, 30)}


async def test_list_runs_filters_by_status_oldest_first(tmp_path: Path) -> None:
    async with open_journal(tmp_path / "j.sqlite") as journal:
        for i, status in enumerate(["queued", "rejected", "queued"]):
            await journal.create_run(f"r-{i}", text="t", status=status)
        assert [r.id for r in await journal.list_runs()] == ["r-0", "r-1", "r-2"]
        assert [r.id for r in await journal.list_runs(status="rejected")] == ["r-1"]
        assert [r.id for r in await journal.list_runs(limit=1)] == ["r-2"]


async def test_a_file_that_is_not_a_database_is_refused_with_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    path.write_bytes(b"this is not a database, just some text" * 100)
    before = {t.ident for t in threading.enumerate()}
    with pytest.raises(JournalError, match="cannot be used"):
        async with open_journal(path):
            pass
    # No connection is left open: an aiosqlite connection's thread would keep the process
    # from exiting. (anyio's pool threads, where the writer opens, end with the loop.)
    def left() -> list[threading.Thread]:
        return [t for t in threading.enumerate()
                if t.ident not in before and t.name != "AnyIO worker thread"]

    with anyio.fail_after(5):
        while left():  # noqa: ASYNC110
            await anyio.sleep(0.01)


async def test_a_version_1_journal_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    with sqlite3.connect(path) as db:  # the tables of version 1 that changed
        db.executescript(
            "CREATE TABLE runs (id TEXT PRIMARY KEY, status TEXT NOT NULL, text TEXT NOT NULL,"
            " scenario TEXT, budget_usd REAL, created_at REAL NOT NULL, updated_at REAL NOT NULL,"
            " tokens INTEGER NOT NULL DEFAULT 0, cost_usd REAL NOT NULL DEFAULT 0, error TEXT,"
            " result TEXT, plan TEXT);"
            "CREATE TABLE model_calls (id INTEGER PRIMARY KEY, run_id TEXT NOT NULL, step INTEGER,"
            " turn INTEGER, purpose TEXT NOT NULL, model TEXT NOT NULL, request TEXT NOT NULL,"
            " response TEXT NOT NULL, input_tokens INTEGER NOT NULL,"
            " output_tokens INTEGER NOT NULL,"
            " cache_creation_tokens INTEGER NOT NULL, cache_read_tokens INTEGER NOT NULL,"
            " cost_usd REAL NOT NULL, latency_ms REAL NOT NULL, created_at REAL NOT NULL);"
            "INSERT INTO runs VALUES ('old', 'succeeded', 't', NULL, NULL, 1, 2, 0, 0, NULL, 'R',"
            " NULL);"
            "PRAGMA user_version = 1;"
        )
    async with open_journal(path) as journal:
        state = await journal.run_state("old")
        assert state is not None and state.epoch == 0 and not state.dry_run
        assert await journal.recorded_calls("old") == {}
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 6


def _as_version_2(path: Path) -> None:
    """Make the journal at ``path`` what a version-2 warden left: no dry runs, no
    approvals."""
    with sqlite3.connect(path) as db:
        db.executescript("DROP TABLE dry_run_calls; ALTER TABLE runs DROP COLUMN dry_run;"
                         "DROP TABLE approvals; DROP TRIGGER events_audit_head;"
                         "DROP TABLE audit_head; ALTER TABLE events DROP COLUMN hash;"
                         "DROP TABLE run_profiles; DROP TABLE anomalies;"
                         "DROP INDEX model_calls_by_created;"
                         "ALTER TABLE runs DROP COLUMN tenant;"
                         "PRAGMA user_version = 2;")


async def test_a_version_2_journal_is_migrated_to_6_in_place(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    async with open_journal(path) as journal:
        await journal.create_run("old", text="t", status="queued")
    _as_version_2(path)

    async with open_journal(path) as journal:
        state = await journal.run_state("old")
        await journal.create_run("dry-new", text="t", status="queued", dry_run=True)
        new = await journal.run_state("dry-new")

    assert state is not None and not state.dry_run
    assert new is not None and new.dry_run
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 6


async def test_a_version_5_journal_is_migrated_to_6_with_the_runs_tenant(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j.sqlite"
    async with open_journal(path) as journal:
        await journal.create_run("old", text="t", status="queued")
    with sqlite3.connect(path) as db:  # what a version-5 warden left
        db.executescript("DROP INDEX model_calls_by_created;"
                         "ALTER TABLE runs DROP COLUMN tenant; PRAGMA user_version = 5;")

    async with open_journal(path) as journal:
        old = await journal.run_state("old")
        old_summary = await journal.get_run("old")
        await journal.create_run("new", text="t", status="queued", tenant="acme")
        new = await journal.run_state("new")
        new_summary = await journal.get_run("new")

    assert old is not None and old.tenant == "default"
    assert old_summary is not None and old_summary.tenant == "default"
    assert new is not None and new.tenant == "acme"
    assert new_summary is not None and new_summary.tenant == "acme"
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 6
        indexes = {r[1] for r in db.execute("PRAGMA index_list(model_calls)")}
    assert "model_calls_by_created" in indexes


async def test_a_version_2_journal_is_read_without_a_daemon_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    async with open_journal(path) as journal:
        await journal.create_run("old", text="t", status="queued")
    _as_version_2(path)

    async with open_journal_reader(path) as journal:
        run = await journal.get_run("old")

    assert run is not None and not run.dry_run
    with sqlite3.connect(path) as db:  # read-only: not migrated
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2


# -- the run state machine in the journal ------------------------------------------------


def _rows(path: Path, run_id: str) -> tuple[tuple[object, ...], list[tuple[object, ...]]]:
    """The run's row and its event rows, read behind the journal's back."""
    with sqlite3.connect(path) as db:
        run = db.execute("SELECT status, updated_at, error FROM runs WHERE id = ?",
                         (run_id,)).fetchone()
        events = db.execute("SELECT kind, status FROM events WHERE run_id = ? ORDER BY seq",
                            (run_id,)).fetchall()
    return run, events


async def test_a_legal_sequence_of_statuses_is_written_with_an_event_each(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j.sqlite"
    async with open_journal(path) as journal:
        await journal.create_run("r-1", text="t", status="queued")
        for status in ("planning", "running", "running", "needs_human", "queued", "running"):
            await journal.transition("r-1", status, wait=False)
        await journal.transition("r-1", "succeeded")
    run, events = _rows(path, "r-1")
    assert run[0] == "succeeded"
    assert [s for _, s in events] == ["queued", "planning", "running", "running",
                                      "needs_human", "queued", "running", "succeeded"]


ILLEGAL_AFTER = [
    pytest.param(["planning", "running", "succeeded"], "running",
                 id="an-ended-run-does-not-run-again"),
    pytest.param(["cancelled"], "cancelled", id="an-ended-run-does-not-end-twice"),
    pytest.param([], "succeeded", id="a-queued-run-does-not-skip-to-the-end"),
    pytest.param(["planning", "running"], "queued", id="only-a-resume-queues-a-run"),
    pytest.param(["planning"], "rejected", id="rejected-only-at-creation"),
    pytest.param(["planning", "running", "degraded"], "queued", id="degraded-is-not-resumed"),
]


@pytest.mark.parametrize("wait", [True, False], ids=["awaited", "queued-without-waiting"])
@pytest.mark.parametrize(("before", "illegal"), ILLEGAL_AFTER)
async def test_an_illegal_transition_is_refused_and_nothing_is_written(
    tmp_path: Path, before: list[str], illegal: str, wait: bool
) -> None:
    path = tmp_path / "j.sqlite"
    async with open_journal(path) as journal:
        await journal.create_run("r-1", text="t", status="queued")
        for status in before:
            await journal.transition("r-1", status)
        await journal.sync()
        written = _rows(path, "r-1")
        with pytest.raises(IllegalTransitionError) as caught:
            await journal.transition("r-1", illegal, error="boom", wait=wait)
        await journal.sync()
        assert _rows(path, "r-1") == written
    current = before[-1] if before else "queued"
    assert (caught.value.run_id, caught.value.old, caught.value.new) == ("r-1", current, illegal)


async def test_writes_queued_without_waiting_are_checked_against_at_once(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j.sqlite"
    async with open_journal(path) as journal:
        await journal.create_run("r-1", text="t", status="queued")
        await journal.transition("r-1", "planning", wait=False)
        await journal.transition("r-1", "running", wait=False)
        with pytest.raises(IllegalTransitionError, match="from 'running' to 'planning'"):
            await journal.transition("r-1", "planning", wait=False)
    run, events = _rows(path, "r-1")
    assert run[0] == "running"
    assert [s for _, s in events] == ["queued", "planning", "running"]


async def test_a_reopened_journal_still_refuses_with_the_status_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    async with open_journal(path) as journal:
        await journal.create_run("r-1", text="t", status="queued")
        await journal.transition("r-1", "cancelled", error="cancelled by request")
    async with open_journal(path) as journal:
        with pytest.raises(IllegalTransitionError, match="from 'cancelled' to 'running'"):
            await journal.transition("r-1", "running")
        assert not await journal.create_run("r-1", text="again", status="queued")
    run, events = _rows(path, "r-1")
    assert (run[0], run[2]) == ("cancelled", "cancelled by request")
    assert [s for _, s in events] == ["queued", "cancelled"]


async def test_a_run_is_created_only_queued_or_rejected(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    async with open_journal(path) as journal:
        with pytest.raises(IllegalTransitionError, match="run 'r-1' cannot start as 'running'"):
            await journal.create_run("r-1", text="t", status="running")  # type: ignore[arg-type]
        assert await journal.run_status("r-1") is None
        assert await journal.create_run("r-2", text="t", status="rejected", error="bad")


async def test_a_transition_of_an_unknown_run_is_refused(tmp_path: Path) -> None:
    async with open_journal(tmp_path / "j.sqlite") as journal:
        with pytest.raises(RunNotFoundError):
            await journal.transition("nobody", "running")


async def test_the_sql_guard_refuses_a_change_the_journal_could_not_see_coming(
    tmp_path: Path,
) -> None:
    # Another writer ended the run behind this journal's back: the journal's own check
    # passes (it still holds 'running'), the trigger refuses, and the journal says what
    # the file has and reads it from then on.
    path = tmp_path / "j.sqlite"
    async with open_journal(path) as journal:
        await journal.create_run("r-1", text="t", status="queued")
        await journal.transition("r-1", "running")
        with sqlite3.connect(path) as other:
            other.execute("UPDATE runs SET status = 'cancelled' WHERE id = 'r-1'")
        with pytest.raises(IllegalTransitionError) as caught:
            await journal.transition("r-1", "succeeded", result="R")
        assert (caught.value.old, caught.value.new) == ("cancelled", "succeeded")
        with pytest.raises(IllegalTransitionError, match="from 'cancelled' to 'running'"):
            await journal.transition("r-1", "running")
    run, events = _rows(path, "r-1")
    assert run[0] == "cancelled"
    assert [s for _, s in events] == ["queued", "running"]


async def test_sync_waits_for_every_write_queued_before_it(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    async with open_journal(path) as journal:
        await journal.create_run("r-1", text="t", status="queued")
        await journal.transition("r-1", "planning", wait=False)
        await journal.record_step("r-1", 0, role="code", instruction="do", status="running",
                                  wait=False)
        await journal.sync()
        assert await journal.run_status("r-1") == "planning"
        run = await journal.get_run("r-1")
        assert run is not None and [s.status for s in run.steps] == ["running"]


async def test_unfinished_runs_are_those_of_the_unfinished_statuses(tmp_path: Path) -> None:
    async with open_journal(tmp_path / "j.sqlite") as journal:
        paths = {"q": [], "p": ["planning"], "r": ["planning", "running"],
                 "s": ["planning", "running", "succeeded"], "c": ["cancelled"],
                 "n": ["planning", "running", "needs_human"]}
        for run_id, statuses in paths.items():
            await journal.create_run(run_id, text="t", status="queued")
            for status in statuses:
                await journal.transition(run_id, status)
        await journal.create_run("x", text="t", status="rejected")
        assert [s.id for s in await journal.unfinished_runs()] == ["q", "p", "r"]


@pytest.mark.parametrize("ending", ["cancelled", "failed"])
async def test_a_run_that_ends_ends_its_running_steps_in_its_status(
    tmp_path: Path, ending: str
) -> None:
    async with open_journal(tmp_path / "j.sqlite") as journal:
        for run_id in ("r-1", "r-other"):
            await journal.create_run(run_id, text="t", status="queued")
            await journal.transition(run_id, "running")
            await journal.record_step(run_id, 0, role="research", instruction="look",
                                      status="succeeded")
            await journal.record_step(run_id, 1, role="code", instruction="write",
                                      status="running")
        await journal.transition("r-1", ending, error="stopped")
        run = await journal.get_run("r-1")
        other = await journal.get_run("r-other")
    assert run is not None and other is not None
    assert [(s.index, s.status) for s in run.steps] == [(0, "succeeded"), (1, ending)]
    # Only the run that ended: another run's running step is its own.
    assert [(s.index, s.status) for s in other.steps] == [(0, "succeeded"), (1, "running")]


async def test_a_status_that_is_not_an_ending_leaves_running_steps_running(
    tmp_path: Path,
) -> None:
    async with open_journal(tmp_path / "j.sqlite") as journal:
        await journal.create_run("r-1", text="t", status="queued")
        await journal.transition("r-1", "running")
        await journal.record_step("r-1", 0, role="code", instruction="write", status="running")
        await journal.transition("r-1", "awaiting_approval")
        run = await journal.get_run("r-1")
    assert run is not None and [s.status for s in run.steps] == ["running"]


async def test_the_read_only_journal_reads_runs_and_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    async with open_journal(path) as journal:
        await journal.create_run("r-1", text="first", status="queued")
        await journal.create_run("r-2", text="second", status="rejected", error="bad")
    before = path.read_bytes()
    async with open_journal_reader(path) as journal:
        assert [(r.id, r.status) for r in await journal.list_runs()] == [
            ("r-1", "queued"), ("r-2", "rejected")]
        run = await journal.get_run("r-2")
        assert run is not None and run.error == "bad"
        assert await journal.get_run("r-3") is None
        with pytest.raises(JournalError, match="closed"):
            await journal.create_run("r-3", text="t", status="queued")
    assert path.read_bytes() == before


async def test_the_read_only_journal_refuses_a_missing_file_or_another_database(
    tmp_path: Path,
) -> None:
    with pytest.raises(JournalError, match="cannot be read"):
        async with open_journal_reader(tmp_path / "absent.sqlite"):
            pytest.fail("opened a file that does not exist")
    assert not (tmp_path / "absent.sqlite").exists()
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE t (x)")
    with pytest.raises(JournalError, match="not a journal"):
        async with open_journal_reader(other):
            pytest.fail("opened a database that is not a journal")

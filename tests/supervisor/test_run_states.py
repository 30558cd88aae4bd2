"""The run state machine: the paths correct runs take are legal, everything else is
refused with the run and both statuses named, and the journal's SQL guard agrees."""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Iterator

import pytest
from warden.supervisor import journal_schema
from warden.supervisor.errors import IllegalTransitionError
from warden.supervisor.run_states import (
    CANCELLABLE,
    RESUMABLE_BY_HAND,
    STATUSES,
    TERMINAL,
    UNFINISHED,
    check_initial,
    check_transition,
)

LEGAL_PATHS = [
    pytest.param(["queued", "planning", "running", "succeeded"], id="a-fresh-run"),
    pytest.param(["queued", "planning", "planning", "running", "running", "degraded"],
                 id="replays-re-enter-their-status"),
    pytest.param(["queued", "planning", "failed"], id="an-invalid-plan"),
    pytest.param(["queued", "planning", "budget_exhausted"], id="no-budget-for-the-plan"),
    pytest.param(["queued", "planning", "running", "needs_human", "queued", "running",
                  "budget_exhausted"], id="escalated-then-resumed-with-its-plan"),
    pytest.param(["queued", "planning", "running", "failed", "queued", "planning", "running",
                  "succeeded"], id="failed-then-resumed"),
    pytest.param(["queued", "planning", "running", "awaiting_approval", "running",
                  "awaiting_approval", "needs_human"], id="approvals"),
    pytest.param(["queued", "cancelled"], id="cancelled-before-it-started"),
    pytest.param(["queued", "planning", "running", "needs_human", "cancelled"],
                 id="cancelled-while-waiting-for-a-human"),
    pytest.param(["queued", "failed"], id="crashed-past-its-restart-intensity-at-once"),
]


@pytest.mark.parametrize("path", LEGAL_PATHS)
def test_the_paths_of_correct_runs_are_legal(path: list[str]) -> None:
    check_initial("r-1", path[0])
    for old, new in itertools.pairwise(path):
        check_transition("r-1", old, new)


ILLEGAL = [
    pytest.param("succeeded", "running", id="an-ended-run-does-not-run-again"),
    pytest.param("cancelled", "failed", id="an-ended-run-does-not-end-again"),
    pytest.param("degraded", "queued", id="only-needs_human-and-failed-are-resumed"),
    pytest.param("rejected", "queued", id="a-rejected-run-stays-rejected"),
    pytest.param("queued", "rejected", id="rejected-only-at-creation"),
    pytest.param("queued", "succeeded", id="no-skipping-the-run"),
    pytest.param("running", "planning", id="no-going-back-to-planning"),
    pytest.param("running", "queued", id="queued-only-by-a-resume"),
    pytest.param("queued", "queued", id="queued-is-not-re-entered"),
    pytest.param("failed", "cancelled", id="a-failed-run-is-not-cancelled"),
    pytest.param("planning", "succeeded", id="no-success-without-running"),
    pytest.param("running", "finished", id="an-unknown-status-is-never-reached"),
    pytest.param("paused", "running", id="an-unknown-status-goes-nowhere"),
]


@pytest.mark.parametrize(("old", "new"), ILLEGAL)
def test_an_illegal_transition_is_refused_naming_the_run_and_both_statuses(
    old: str, new: str
) -> None:
    with pytest.raises(IllegalTransitionError) as caught:
        check_transition("r-1", old, new)
    assert (caught.value.run_id, caught.value.old, caught.value.new) == ("r-1", old, new)
    assert str(caught.value) == f"run 'r-1' cannot go from {old!r} to {new!r}"


@pytest.mark.parametrize("status", ["planning", "running", "succeeded", "needs_human"])
def test_a_run_is_created_only_queued_or_rejected(status: str) -> None:
    check_initial("r-1", "queued")
    check_initial("r-1", "rejected")
    with pytest.raises(IllegalTransitionError, match=f"run 'r-1' cannot start as {status!r}"):
        check_initial("r-1", status)


def test_every_status_is_either_terminal_or_unfinished() -> None:
    assert TERMINAL | UNFINISHED == set(STATUSES)
    assert not TERMINAL & UNFINISHED
    assert UNFINISHED == {"queued", "planning", "running", "awaiting_approval"}


def test_every_unfinished_run_can_be_cancelled_or_failed_from_outside() -> None:
    for status in UNFINISHED:
        check_transition("r-1", status, "cancelled")
        check_transition("r-1", status, "failed")


def test_the_runs_resumable_by_hand_are_exactly_the_terminal_ones_that_can_be_queued() -> None:
    assert RESUMABLE_BY_HAND == {"needs_human", "failed"}
    queueable = set()
    for status in TERMINAL:
        try:
            check_transition("r-1", status, "queued")
        except IllegalTransitionError:
            continue
        queueable.add(status)
    assert queueable == RESUMABLE_BY_HAND


def test_the_cancellable_runs_are_exactly_those_with_a_transition_to_cancelled() -> None:
    cancellable = set()
    for status in STATUSES:
        try:
            check_transition("r-1", status, "cancelled")
        except IllegalTransitionError:
            continue
        cancellable.add(status)
    assert cancellable == CANCELLABLE


@pytest.fixture
def guarded() -> Iterator[sqlite3.Connection]:
    """An in-memory ``runs`` table with the journal's status guards."""
    db = sqlite3.connect(":memory:", isolation_level=None)
    db.executescript("CREATE TABLE runs (id TEXT PRIMARY KEY, status TEXT NOT NULL);"
                     + journal_schema.status_guards())
    yield db
    db.close()


def test_the_sql_guard_allows_exactly_the_transitions_the_state_machine_allows(
    guarded: sqlite3.Connection,
) -> None:
    for old, new in itertools.product([*STATUSES, "bogus"], repeat=2):
        guarded.execute("DELETE FROM runs")
        guarded.execute("INSERT INTO runs VALUES ('r', 'queued')")
        # Put the row in ``old`` behind the guard's back, then ask for ``new``.
        guarded.execute("DROP TRIGGER runs_status_guard")
        guarded.execute("UPDATE runs SET status = ?", (old,))
        guarded.executescript(journal_schema.status_guards())
        try:
            check_transition("r", old, new)
            allowed = True
        except IllegalTransitionError:
            allowed = False
        try:
            guarded.execute("UPDATE runs SET status = ? WHERE id = 'r'", (new,))
            refused = False
        except sqlite3.IntegrityError as exc:
            assert journal_schema.GUARD_MESSAGE in str(exc)
            refused = True
        assert refused != allowed, (old, new)


def test_the_sql_guard_refuses_to_create_a_run_in_a_non_initial_status(
    guarded: sqlite3.Connection,
) -> None:
    guarded.execute("INSERT INTO runs VALUES ('a', 'queued')")
    guarded.execute("INSERT INTO runs VALUES ('b', 'rejected')")
    with pytest.raises(sqlite3.IntegrityError, match=journal_schema.GUARD_MESSAGE):
        guarded.execute("INSERT OR IGNORE INTO runs VALUES ('c', 'running')")


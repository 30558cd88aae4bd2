"""SIGKILL the daemon at random moments while ledger runs are in flight; every run still
finishes exactly once, with each of its side effects exactly once."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.chaos.harness import (
    ChaosPlan,
    Cluster,
    chaos_seed,
    check_invariants,
    kill_line,
    run_chaos,
)

pytestmark = pytest.mark.integration

KILLS = 10
RUNS = 100
FIRST_WAVE = 50


def test_every_run_succeeds_exactly_once_through_ten_random_sigkills(tmp_path: Path) -> None:
    seed = chaos_seed()
    print(f"chaos seed {seed} (rerun with CHAOS_SEED={seed})")
    # 50 runs at once, then a few more to every later daemon; at 250 ms a model call, a
    # run needs about 2.5 s without a kill, longer than any daemon here lives.
    plan = ChaosPlan(
        kills=KILLS, run_ids=tuple(f"kd-{i:03d}" for i in range(RUNS)), first_wave=FIRST_WAVE,
        latency_ms=250, min_delay=0.3, max_delay=1.5, startup_kill_share=0.2,
        finish_timeout=45,
    )
    with Cluster(tmp_path) as cluster:
        outcome = run_chaos(cluster, plan, seed=seed,
                            progress=lambda record: print(kill_line(record)))
    print(outcome.figures())
    assert len(outcome.kills) == KILLS
    # The chaos was real: most kills found runs in flight (a startup kill may find none).
    in_flight = [k.in_flight for k in outcome.kills]
    assert sum(1 for n in in_flight if n > 0) >= KILLS - 2, (outcome.explain(), in_flight)
    assert outcome.report.ok, outcome.explain()
    assert outcome.report.succeeded == RUNS
    assert outcome.report.ledger_lines == 3 * RUNS
    assert outcome.report.duplicate_keys == 0
    assert outcome.report.integrity == "ok"
    assert outcome.final_exit == 0, outcome.explain()
    assert not outcome.leftovers, outcome.explain()


def _journal(data_dir: Path, runs: dict[str, list[str]]) -> None:
    """A journal with just what the invariants read: runs and their status events."""
    data_dir.mkdir()
    con = sqlite3.connect(data_dir / "journal.sqlite")
    con.executescript(
        "CREATE TABLE runs (id TEXT PRIMARY KEY, status TEXT NOT NULL);"
        "CREATE TABLE events (seq INTEGER PRIMARY KEY, run_id TEXT, kind TEXT, status TEXT);"
    )
    for run_id, statuses in runs.items():
        con.execute("INSERT INTO runs VALUES (?, ?)", (run_id, statuses[-1]))
        con.executemany("INSERT INTO events (run_id, kind, status) VALUES (?, 'status', ?)",
                        [(run_id, s) for s in statuses])
    con.commit()
    con.close()


def test_the_invariants_pass_a_clean_journal_and_ledger(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _journal(data, {"a": ["planning", "running", "succeeded"]})
    (data / "ledger.txt").write_text("a/s0 a one\na/s1 a two\na/s2 a three\n")
    report = check_invariants(data, ["a"])
    assert report.ok, report.explain()
    assert (report.succeeded, report.ledger_lines, report.integrity) == (1, 3, "ok")


def test_the_invariants_catch_every_kind_of_violation(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _journal(data, {
        "twice": ["running", "succeeded", "running", "succeeded"],
        "failed": ["running", "failed"],
        "stuck": ["running"],
        "resumed": ["running", "succeeded", "running"],
        "stranger": ["succeeded"],
    })
    (data / "ledger.txt").write_text(
        "k1 twice x\nk1 twice x\nk2 twice y\nk9 ghost z\nk3 failed a\nk4 failed b\n"
        "k5 failed c\nk6 failed d\ntorn-without-newline"
    )
    report = check_invariants(data, ["twice", "failed", "stuck", "resumed", "missing"])
    found = report.explain(limit=100)
    for expected in (
        "'twice' reached a terminal status 2 times",
        "'failed' ended 'failed', not 'succeeded'",
        "'stuck' reached a terminal status 0 times",
        "'resumed' moved on after its terminal status",
        "'missing' is not in the journal",
        "were never submitted: ['stranger']",
        "1 duplicate ledger keys",
        "ledger lines of runs never submitted: ['ghost']",
        "'failed' has 4 ledger lines, more than 3",
        "torn last line",
    ):
        assert expected in found, f"{expected!r} not in:\n{found}"
    assert report.duplicate_keys == 1
    assert not report.ok

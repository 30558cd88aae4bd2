"""The daemon SIGKILLs itself at each named crash point (``WARDEN_CRASH_AT``); restarted
without it, every run finishes exactly once, with each side effect exactly once."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.chaos.harness import (
    CRASH_POINTS,
    TERMINAL,
    Cluster,
    check_invariants,
    publish_tasks,
    wait_for_terminal,
)

pytestmark = pytest.mark.integration

RUNS = 6


def test_the_harness_knows_every_crash_point_and_terminal_status_of_the_core() -> None:
    from warden.config.crashpoints import POINTS
    from warden.supervisor.run import TERMINAL as CORE_TERMINAL

    assert set(CRASH_POINTS) == set(POINTS)
    assert TERMINAL == CORE_TERMINAL


@pytest.mark.parametrize("nth", [1, 3], ids=["first_pass", "third_pass"])
@pytest.mark.parametrize("point", CRASH_POINTS)
def test_runs_succeed_exactly_once_after_the_daemon_dies_at(
    point: str, nth: int, tmp_path: Path
) -> None:
    crash_at = f"{point}:{nth}"
    run_ids = [f"cp-{i}" for i in range(RUNS)]
    with Cluster(tmp_path) as cluster:
        doomed = cluster.start_daemon(latency_ms=20, crash_at=crash_at)
        assert doomed.wait_ready(), doomed.log_tail()
        # The daemon may die while these are published, and a publish without an ack may
        # or may not have landed: the client sends every task again, same ids (the acked
        # ones too, since a duplicate must change nothing).
        publish_tasks(doomed.url, run_ids, credentials=doomed.client)
        status = doomed.wait_exit(30)
        assert status == -signal.SIGKILL, (
            f"WARDEN_CRASH_AT={crash_at}: daemon {'still runs' if status is None else status}"
            f"\n{doomed.log_tail()}"
        )
        daemon = cluster.start_daemon(latency_ms=20)
        assert daemon.wait_ready(), daemon.log_tail()
        assert publish_tasks(daemon.url, run_ids, credentials=daemon.client) == run_ids
        wait_for_terminal(cluster.data_dir, run_ids, timeout=45, daemon=daemon)
        assert daemon.stop() == 0, daemon.log_tail()
        report = check_invariants(cluster.data_dir, run_ids)
        leftovers = cluster.wait_no_processes()
    assert report.ok, f"WARDEN_CRASH_AT={crash_at}\n{report.explain()}"
    assert report.succeeded == RUNS and report.ledger_lines == 3 * RUNS
    assert not leftovers, leftovers

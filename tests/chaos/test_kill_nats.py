"""SIGKILL an external nats-server under a running daemon, restart it on the same port and
store; the daemon rides out each outage and every run still finishes exactly once."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.chaos.harness import (
    ChaosError,
    Cluster,
    chaos_seed,
    check_invariants,
    publish_all,
    try_read_journal,
    wait_for_terminal,
)

pytestmark = pytest.mark.integration

RUNS = 20
OUTAGES = 3
# The daemon's defaults: a request in flight when the connection drops fails at once
# (BusConnectionError) and is retried after the reconnect, without counting against the
# worker's breaker; a side-effecting tool call is reconciled first.
DAEMON_SETTINGS: dict[str, str] = {}  # the defaults: a dropped connection fails requests at once


def test_runs_succeed_exactly_once_when_nats_server_is_killed_and_restarted(
    tmp_path: Path,
) -> None:
    seed = chaos_seed()
    print(f"chaos seed {seed} (rerun with CHAOS_SEED={seed})")
    rng = random.Random(seed)
    run_ids = [f"kn-{i:02d}" for i in range(RUNS)]
    with Cluster(tmp_path) as cluster:
        nats = cluster.start_nats()
        daemon = cluster.start_daemon(latency_ms=250, nats_url=nats.url,
                                      settings=DAEMON_SETTINGS)
        assert daemon.wait_ready(), daemon.log_tail()
        # A fresh wave before each outage and one after the last, so every outage finds
        # runs in flight and the last wave proves the intake came back too.
        waves = [run_ids[:8], *(run_ids[i:i + 4] for i in range(8, RUNS, 4))]
        assert len(waves) == OUTAGES + 1
        submitted: list[str] = []
        in_flight_at_kill = []
        for outage, wave in enumerate(waves[:-1]):
            publish_all(daemon.url, wave, credentials=daemon.client)
            submitted += wave
            # Random moments are the chaos: how long the runs go on, how long NATS is away.
            if daemon.wait_exit(rng.uniform(0.2, 1.0)) is not None:
                raise ChaosError(f"daemon exited before outage {outage}:\n{daemon.log_tail()}")
            snapshot = try_read_journal(cluster.data_dir)
            in_flight_at_kill.append(len(snapshot.unfinished(submitted)) if snapshot else -1)
            nats.kill()
            if daemon.wait_exit(rng.uniform(0.1, 1.5)) is not None:
                raise ChaosError(f"daemon exited during outage {outage}:\n{daemon.log_tail()}")
            nats.start()
        publish_all(daemon.url, waves[-1], credentials=daemon.client)
        print(f"runs in flight at each nats-server kill: {in_flight_at_kill}")
        assert all(n > 0 for n in in_flight_at_kill), in_flight_at_kill
        wait_for_terminal(cluster.data_dir, run_ids, timeout=45, daemon=daemon)
        assert daemon.running(), "the daemon did not ride out the outages"
        assert daemon.stop() == 0, daemon.log_tail()
        report = check_invariants(cluster.data_dir, run_ids)
        nats.stop()
        leftovers = cluster.wait_no_processes()
    assert report.ok, f"seed {seed}\n{report.explain()}"
    assert report.succeeded == RUNS and report.ledger_lines == 3 * RUNS
    assert not leftovers, leftovers

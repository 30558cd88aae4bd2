"""Two daemons on one NATS server (issue 9, points 5 and 6): each answers for itself, and
only one takes tasks.

Measured before: every daemon answered ``warden.api.*`` and the CLI kept the first reply
(``warden show`` failed 41 of 60 times, ``cancel`` said "no run" although it worked), and
both consumed the task stream, splitting runs between two journals. Here, with real
``warden up`` processes on the test's nats-server and the real CLI: the second daemon's
intake refuses in one line naming the first, and through the first one's ``--data-dir``
20 x ``show``, ``cancel`` and ``submit --wait`` are right 20 of 20.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anyio
import pytest
from warden.supervisor.daemon import read_daemon_file

from tests.integration.harness import LOOP_SCRIPT
from tests.integration.warden_process import WardenUp, warden_up

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]

ROUNDS = 20


def _settings(tmp_path: Path, nats_url: str, *, workers: bool = True) -> dict[str, object]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    script = tmp_path / "scripts.toml"
    script.write_text(LOOP_SCRIPT, encoding="utf-8")
    return {
        "local_workers": workers,
        "nats": {"url": nats_url},
        "models": {"provider": "scripted", "scripted_latency_ms": 50.0,
                   "script_files": [str(script)]},
        "limits": {"max_turns_per_step": 1000},
        # The `loop` runs must still be running when cancelled: no loop detection.
        "policy": {"loop_threshold": 0},
    }


def _cli(daemon: WardenUp, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI with ``daemon``'s config and environment, but not its data dir."""
    return subprocess.run([sys.executable, "-m", "warden", *args, "--config", str(daemon.config)],
                          capture_output=True, text=True, timeout=60, env=daemon.env, check=False)


def _wait_for_line(path: Path, needle: str, within: float = 30.0) -> list[str]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines()
                 if needle in line]
        if lines:
            return lines
        time.sleep(0.05)
    raise AssertionError(f"no {needle!r} in {path} within {within:g}s")


def _wait_for_status(daemon: WardenUp, run_id: str, within: float = 30.0) -> str:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        status = daemon.journal_status(run_id)
        if status is not None:
            return status
        time.sleep(0.05)
    raise AssertionError(f"run {run_id!r} not in the first daemon's journal in {within:g}s")


@pytest.mark.anyio
async def test_the_second_daemon_refuses_intake_and_the_cli_talks_to_the_daemon_it_asked_for(
    tmp_path: Path, nats_url: str,
) -> None:
    # The nats_server fixture is async; the processes and the CLI are driven from a thread.
    await anyio.to_thread.run_sync(_two_daemons, tmp_path, nats_url)


def _two_daemons(tmp_path: Path, nats_url: str) -> None:
    with warden_up(tmp_path / "a", _settings(tmp_path / "a", nats_url)) as first:
        first_id = read_daemon_file(first.data_dir.resolve())
        assert first_id is not None and first_id.daemon_id
        # The second runs no workers: workers of every daemon share the `workers` queue
        # group, and each keeps a run's workspace under its own data dir, so a run's
        # steps served by two daemons' workers see two workspaces (measured: fizzbuzz
        # "failed: fizzbuzz.py is not a file"). The README says so under "Several daemons".
        second_settings = _settings(tmp_path / "b", nats_url, workers=False)
        with warden_up(tmp_path / "b", second_settings) as second:
            refused = _wait_for_line(tmp_path / "b" / "warden-up.log", "intake_refused")
            second_info = read_daemon_file(second.data_dir.resolve())
            assert second_info is not None and second_info.daemon_id != first_id.daemon_id

            # Each daemon answers ping for itself; the second says it is in standby.
            ping = first.cli("runs", "--limit", "1")
            assert ping.returncode == 0, ping.stderr

            # With --nats and no daemon chosen, the CLI lists both and asks.
            nowhere = ["--nats", nats_url, "--data-dir", str(tmp_path / "nowhere")]
            ambiguous = _cli(first, "runs", *nowhere)
            picked = _cli(first, "runs", *nowhere, "--daemon", second_info.daemon_id or "")

            def submit_wait(i: int) -> tuple[int, str]:
                done = first.submit_wait(f"Write fizzbuzz(n) in Python, with tests. #{i}",
                                         timeout=90)
                status = json.loads(done.stdout)["status"] if done.returncode == 0 else "?"
                return done.returncode, status

            def cancel(i: int) -> tuple[int, str, str]:
                run_id = f"loop-{i}"
                sent = first.cli("submit", "look around", "--scenario", "loop", "--id", run_id)
                assert sent.returncode == 0, sent.stderr
                _wait_for_status(first, run_id)
                out = first.cli("cancel", run_id)
                return out.returncode, out.stdout.strip(), first.journal_status(run_id) or ""

            def show(i: int) -> tuple[int, str]:
                out = first.cli("show", f"loop-{i}")
                return out.returncode, out.stdout

            with ThreadPoolExecutor(max_workers=4) as pool:
                started = time.monotonic()
                waited = list(pool.map(submit_wait, range(ROUNDS)))
                print(f"submit --wait x{ROUNDS}: {time.monotonic() - started:.1f}s")
                started = time.monotonic()
                cancelled = list(pool.map(cancel, range(ROUNDS)))
                print(f"cancel x{ROUNDS}: {time.monotonic() - started:.1f}s")
                started = time.monotonic()
                shown = list(pool.map(show, range(ROUNDS)))
                print(f"show x{ROUNDS}: {time.monotonic() - started:.1f}s")
            second_runs = second.journal_status("loop-0")
            again = first.cli("submit", "another text", "--id", "loop-0")
            newest = first.cli("runs", "--limit", "5", "--json")
            every = first.cli("runs", "--all", "--json")

    assert len(refused) == 1
    assert first_id.daemon_id in refused[0]
    assert ambiguous.returncode == 2
    assert "2 warden daemons answer" in ambiguous.stderr
    assert first_id.daemon_id in ambiguous.stderr and second_info.daemon_id in ambiguous.stderr
    assert picked.returncode == 0, picked.stderr
    assert waited == [(0, "succeeded")] * ROUNDS
    assert cancelled == [(0, f"loop-{i}: cancelled", "cancelled") for i in range(ROUNDS)]
    assert [code for code, _ in shown] == [0] * ROUNDS
    assert all(f"loop-{i}" in out and "cancelled" in out for i, (_, out) in enumerate(shown))
    assert second_runs is None  # nothing split into the second journal
    assert again.returncode == 0
    assert newest.returncode == 0 and len(json.loads(newest.stdout)) == 5
    assert "(older runs: warden runs --before " in newest.stderr
    assert every.returncode == 0 and every.stderr == ""
    assert len(json.loads(every.stdout)) == 2 * ROUNDS
    assert "run loop-0 already exists (cancelled); the text given was not submitted" in (
        again.stderr)

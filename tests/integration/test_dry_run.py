"""Dry runs through the real daemon (real nats-server, real SQLite) and the real CLI: the
``ledger`` scenario with ``--dry-run`` against a ``warden up`` process leaves
``ledger.txt`` untouched and ``show`` lists its three intercepted calls; a dry run and
the real run of one submission id share no run, key or effect."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from warden.bus.wire import ErrorReply, RunSummary, TaskSubmission, encoder, reply_decoder
from warden.supervisor.cli import submit_and_follow
from warden.supervisor.dry_run import dry_run_id

from tests.integration.harness import api, make_settings, running_daemon, show
from tests.integration.warden_process import warden_up

pytestmark = pytest.mark.integration

LEDGER_CALLS = [("research", 0), ("code", 1), ("review", 2)]
"""The ledger scenario's steps: each appends one line with its role as the text."""


def ledger_lines(data_dir: str) -> list[str]:
    path = Path(data_dir) / "ledger.txt"
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.timeout(120)
def test_a_dry_run_of_the_ledger_leaves_it_untouched_and_show_lists_three_calls(
    tmp_path: Path,
) -> None:
    # A real `warden up` process and the real CLI against it (warden_process.py).
    with warden_up(tmp_path, {"models": {"provider": "scripted"}}) as daemon:
        submitted = daemon.submit_wait("ledger", "--scenario", "ledger", "--dry-run",
                                       timeout=60)
        run_id = dry_run_id(submitted.run_id)
        shown = daemon.cli("show", run_id)
        shown_json = daemon.cli("show", run_id, "--json")
        with closing(sqlite3.connect(f"file:{daemon.data_dir / 'journal.sqlite'}?mode=ro",
                                     uri=True)) as db:
            effects = [str(row[0]) for row in db.execute(
                "SELECT key FROM effects WHERE run_id = ?", (run_id,))]

    assert (submitted.returncode, shown.returncode, shown_json.returncode) == (0, 0, 0), \
        submitted.stderr
    assert not (daemon.data_dir / "ledger.txt").exists()
    run = json.loads(submitted.stdout)
    assert json.loads(shown_json.stdout) == run
    assert (run["id"], run["status"], run["dry_run"]) == (run_id, "succeeded", True)
    calls = run["intercepted"]
    assert [(c["tool"], c["arguments"], c["decision"], c["step"]) for c in calls] == [
        ("ledger_append", {"text": role}, "intercepted", step) for role, step in LEDGER_CALLS]
    for call in calls:  # each answered by the tool's simulation, run by a worker
        assert call["simulated"] is True
        assert call["output"] == (f"would append to ledger.txt as {call['key']}: "
                                  f"{call['arguments']['text']!r}")
    assert sorted(effects) == sorted(c["key"] for c in calls)
    text = shown.stdout
    assert "dry run  yes: its side-effecting tool calls were not executed" in text
    assert "would have done (3 calls):" in text
    for role, step in LEDGER_CALLS:
        assert f'step {step} turn 0  ledger_append {{"text":"{role}"}}' in text
        assert (f"would have returned: would append to ledger.txt as "
                f"{run_id}/e0/s{step}/a0/t0/c0: '{role}'") in text


@pytest.mark.anyio
async def test_a_dry_run_and_the_real_run_of_one_id_share_no_key_or_effect(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path)
    async with running_daemon(settings) as (daemon, client):
        for task in (TaskSubmission(id=dry_run_id("same"), text="ledger", scenario="ledger",
                                    dry_run=True),
                     TaskSubmission(id="same", text="ledger", scenario="ledger")):
            status = await submit_and_follow(client, task, wait=True, progress=False,
                                             timeout=60)
            assert status == "succeeded"
        dry, real = await show(client, "dry-same"), await show(client, "same")
        dry_keys = set(await daemon.journal.effects("dry-same"))
        real_keys = set(await daemon.journal.effects("same"))

    assert dry.dry_run and not real.dry_run and real.intercepted == []
    assert len(dry_keys) == len(real_keys) == 3 and not dry_keys & real_keys
    assert all(key.startswith("dry-same/") for key in dry_keys)
    lines = ledger_lines(settings.data_dir)
    assert sorted(line.split()[0] for line in lines) == sorted(real_keys)  # the real run's
    assert all(line.split()[1] == "same" for line in lines)


@pytest.mark.anyio
async def test_the_api_submits_a_dry_run_under_its_own_id_and_refuses_a_real_one_there(
    tmp_path: Path,
) -> None:
    async with running_daemon(make_settings(tmp_path)) as (_, client):
        dry = reply_decoder.decode(await api(client, "submit", encoder.encode(
            {"id": "via-api", "text": "ledger", "scenario": "ledger", "dry_run": True})))
        refused = reply_decoder.decode(await api(client, "submit", encoder.encode(
            {"id": "dry-via-api", "text": "ledger"})))

    assert isinstance(dry, RunSummary) and dry.id == "dry-via-api"
    assert isinstance(refused, ErrorReply) and refused.field == "id"
    assert "only dry runs' ids do" in refused.error

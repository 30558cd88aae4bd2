"""``warden replay`` and ``warden eval`` end to end: a run made on a real daemon (real
nats-server, SQLite file, scripted model) is replayed by the real CLI against its recorded
calls: the same decisions and result exit 0; a changed config or an altered journal exits
1 naming the first divergence; the shipped scenarios of ``examples/eval`` pass, and a
changed policy or allowlist fails the scenario it affects, with the reason."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

import anyio
import pytest
from warden.supervisor import cli as cli_module
from warden.supervisor.cli import main
from warden.supervisor.daemon import JOURNAL_FILE

from tests.integration.harness import make_settings, run_task, running_daemon

pytestmark = pytest.mark.anyio

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "eval"


@pytest.fixture(autouse=True)
def _tests_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    """``main`` would configure logging for a command line (test_approvals.py says why)."""
    monkeypatch.setattr(cli_module, "configure_logging", lambda *_, **__: None)


async def cli(tmp_path: Path, *args: str) -> int:
    """``warden ARGS --data-dir ...`` in this process (in a thread: it runs its own loop)."""
    return await anyio.to_thread.run_sync(main, [*args, "--data-dir", str(tmp_path / "data")])


def config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "changed.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


async def ledger_run(tmp_path: Path) -> str:
    """The id of a ``ledger`` run (three steps, three ledger appends) that succeeded."""
    async with running_daemon(make_settings(tmp_path)) as (_, client):
        run = await run_task(client, "append three lines", scenario="ledger")
    assert run.status == "succeeded", run.error
    return run.id


async def test_replay_reproduces_a_ledger_run_beside_its_daemon_and_saves_a_passing_scenario(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    async with running_daemon(make_settings(tmp_path)) as (_, client):
        run = await run_task(client, "append three lines", scenario="ledger")
        assert run.status == "succeeded", run.error
        ledger = (tmp_path / "data" / "ledger.txt").read_text(encoding="utf-8")
        # Beside the running daemon (its journal is read read-only).
        assert await cli(tmp_path, "replay", run.id) == 0
        out = capsys.readouterr().out
        assert f"replay of {run.id}: 8 model calls, 3 tool calls (3 allowed), 3 steps" in out
        assert "replayed  succeeded" in out
        assert "same: the same plan, calls, decisions, steps and result" in out
        saved = tmp_path / "scenarios" / "ledger.json"
        assert await cli(tmp_path, "replay", run.id, "--json", "--save", str(saved)) == 0
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["same"] is True and verdict["divergences"] == []
    assert verdict["recorded"] == verdict["replayed"]
    assert verdict["replayed"]["status"] == "succeeded"
    # Nothing was executed again: the ledger has its three lines, not six.
    assert (tmp_path / "data" / "ledger.txt").read_text(encoding="utf-8") == ledger
    assert len(ledger.splitlines()) == 3
    assert await cli(tmp_path, "eval", str(saved.parent)) == 0
    assert "1 of 1 scenarios pass" in capsys.readouterr().out


async def test_replay_names_the_first_divergence_of_a_changed_policy_or_an_altered_journal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    run_id = await ledger_run(tmp_path)  # no daemon from here on: the journal file is read
    capsys.readouterr()
    blocked = config(tmp_path, '[policy]\nblocked_patterns = ["code"]\n')
    assert await cli(tmp_path, "replay", run_id, "--config", blocked) == 1
    out = capsys.readouterr().out
    assert ("DIVERGED at step 1 attempt 0 turn 0 call 0: decision on 'ledger_append': "
            "recorded allowed; replayed refused by policy.blocked_patterns") in out

    with closing(sqlite3.connect(tmp_path / "data" / JOURNAL_FILE)) as db, db:
        db.execute("UPDATE effects SET output = 'tampered' WHERE key = ?",
                   (f"{run_id}/e0/s0/a0/t0/c0",))
    assert await cli(tmp_path, "replay", run_id, "--json") == 1
    first = json.loads(capsys.readouterr().out)["divergences"][0]
    # The altered outcome goes back to the model in the next turn: its request differs.
    assert (first["where"], first["what"]) == (
        "step 0 attempt 0 turn 1", "step request (research) differs in 'messages'")
    assert "tampered" in first["replayed"] and "tampered" not in first["recorded"]


async def test_replay_of_an_unknown_run_or_without_a_journal_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    assert await cli(tmp_path, "replay", "r-nope") == 2
    assert "no journal at" in capsys.readouterr().err
    await ledger_run(tmp_path)
    assert await cli(tmp_path, "replay", "r-nope") == 2
    assert "no run 'r-nope' in the journal" in capsys.readouterr().err


async def test_the_shipped_scenarios_pass_under_the_default_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    assert len(list(EXAMPLES.glob("*.json"))) >= 3
    assert await cli(tmp_path, "eval", str(EXAMPLES), "--json") == 0
    results = json.loads(capsys.readouterr().out)
    assert {r["scenario"] for r in results} >= {"ledger", "ledger_dry_run", "fizzbuzz"}
    assert all(r["passed"] for r in results), results


@pytest.mark.parametrize(("change", "failing", "reason"), [
    ('[policy]\nblocked_patterns = ["slug"]\n', "slugify",
     "decision on 'write_file': recorded allowed; replayed refused by "
     "policy.blocked_patterns"),
    ('[roles.review]\ntools = ["list_files", "read_file", "ledger_append"]\n', "fizzbuzz",
     "step request (review) differs in 'tools'"),
])
async def test_a_changed_policy_or_allowlist_fails_the_scenario_it_affects_with_a_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: str, failing: str, reason: str,
) -> None:
    assert await cli(tmp_path, "eval", str(EXAMPLES), "--config", config(tmp_path, change)) == 1
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:-1]}
    assert rows[failing].split()[1] == "FAIL"
    assert reason in rows[failing]
    assert "scenarios pass" not in rows


async def test_eval_of_a_folder_without_scenarios_is_a_usage_error_and_a_bad_file_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    assert await cli(tmp_path, "eval", str(tmp_path)) == 2
    assert "holds no scenario" in capsys.readouterr().err
    (tmp_path / "broken.json").write_text('{"name": "broken"}', encoding="utf-8")
    assert await cli(tmp_path, "eval", str(tmp_path)) == 1
    row = capsys.readouterr().out.splitlines()[1]
    assert row.split()[:2] == ["broken", "FAIL"]
    assert "is not a scenario file" in row and "recording" in row

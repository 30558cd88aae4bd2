"""``warden watch RUN`` end to end on a real daemon: it re-attaches to a run held in
``awaiting_approval``, shows where it stands, follows its events to its end and exits by
its status; a run that ended is printed at once; an unknown run is a usage error; and
``--timeout`` gives up with exit 3. The approved run then replays with its recorded
decision (``warden replay``)."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
from warden.bus.wire import TaskSubmission, encoder
from warden.supervisor import cli as cli_module
from warden.supervisor.cli import main, new_run_id

from tests.integration.harness import make_settings, run_task, running_daemon

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def _tests_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    """``main`` would configure logging for a command line (test_approvals.py says why)."""
    monkeypatch.setattr(cli_module, "configure_logging", lambda *_, **__: None)


async def cli(tmp_path: Path, *args: str) -> int:
    """``warden ARGS --data-dir ...`` in this process (in a thread: it runs its own loop)."""
    return await anyio.to_thread.run_sync(main, [*args, "--data-dir", str(tmp_path / "data")])


async def test_watch_attaches_to_a_run_awaiting_approval_and_follows_it_to_its_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    # The research step's ledger append (medium risk) waits: this role auto-approves low.
    settings = make_settings(tmp_path, roles__research__auto_approve="low")
    async with running_daemon(settings) as (daemon, client):
        run_id = new_run_id()
        await client.publish_task(encoder.encode(TaskSubmission(
            id=run_id, text="append three lines", scenario="ledger")), msg_id=run_id)
        with anyio.fail_after(30):
            while not (pending := await daemon.journal.approvals()):  # noqa: ASYNC110
                await anyio.sleep(0.02)
        assert await cli(tmp_path, "watch", run_id, "--timeout", "0.5") == 3
        assert f"run {run_id} did not end within 0.5s" in capsys.readouterr().err

        ended: list[int] = []

        async def watch() -> None:
            ended.append(await cli(tmp_path, "watch", run_id))

        err = ""
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            with anyio.fail_after(30):  # until watch has shown where the run stands
                while f"{run_id}  awaiting_approval: " not in err:
                    err += capsys.readouterr().err
                    await anyio.sleep(0.02)
            assert await cli(tmp_path, "approve", pending[0].id) == 0
        captured = capsys.readouterr()
    err += captured.err
    assert ended == [0]
    assert "(following its events)" in err
    events = [line for line in err.splitlines() if line.startswith(f"{run_id}  ")]
    assert any("awaiting_approval" in line and "status:" in line for line in events)
    assert events[-1].split()[1] == "succeeded"
    assert "status   succeeded" in captured.out

    # The run that waited replays with its recorded decision under the same config ...
    same = tmp_path / "same.toml"
    same.write_text('[roles.research]\nauto_approve = "low"\n', encoding="utf-8")
    assert await cli(tmp_path, "replay", run_id, "--config", str(same)) == 0
    assert "same: " in capsys.readouterr().out
    # ... and, under one where that call needs no approval, names the difference.
    assert await cli(tmp_path, "replay", run_id, "--json") == 1
    first = json.loads(capsys.readouterr().out)["divergences"][0]
    assert first["what"] == "approval of 'ledger_append'"
    assert first["recorded"].endswith("approved")
    assert first["replayed"] == "not asked (no longer needs one)"


async def test_watch_of_an_ended_or_unknown_run_answers_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    async with running_daemon(make_settings(tmp_path)) as (_, client):
        succeeded = await run_task(client, "append three lines", scenario="ledger")
        failed = await run_task(client, "judge it", scenario="failing_review")
        assert (succeeded.status, failed.status) == ("succeeded", "failed")
        capsys.readouterr()
        with anyio.fail_after(20):
            assert await cli(tmp_path, "watch", succeeded.id) == 0
            out = capsys.readouterr().out
            assert await cli(tmp_path, "watch", failed.id, "--json") == 1
            shown = json.loads(capsys.readouterr().out)
            assert await cli(tmp_path, "watch", "r-nope") == 2
    assert f"run      {succeeded.id}" in out and "status   succeeded" in out
    assert (shown["id"], shown["status"]) == (failed.id, "failed")
    assert "r-nope" in capsys.readouterr().err

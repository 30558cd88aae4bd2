"""Durable runs in-process: a restarted daemon resumes runs, replays without repeating
calls or effects; on_failure strategies; cancel and resume by request."""

from __future__ import annotations

import collections
from pathlib import Path

import anyio
import pytest
from warden.bus.wire import RunQuery, RunSummary, TaskSubmission, encoder, reply_decoder
from warden.supervisor.run import TERMINAL

from tests.integration.harness import api, make_settings, run_task, running_daemon, show, wait_for

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


def ledger_lines(settings_data_dir: str) -> list[list[str]]:
    path = Path(settings_data_dir) / "ledger.txt"
    if not path.exists():
        return []
    return [line.split(" ", 2) for line in path.read_text().splitlines()]


async def test_runs_cut_off_by_a_shutdown_resume_at_the_next_start_exactly_once(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path, models__scripted_latency_ms=40.0)
    ids = [f"led-{i}" for i in range(12)]
    async with running_daemon(settings) as (daemon, client):
        for run_id in ids:
            task = TaskSubmission(id=run_id, text="ledger", scenario="ledger")
            await client.publish_task(encoder.encode(task), msg_id=run_id)

        async def some_in_flight() -> bool:
            return len(ledger_lines(settings.data_dir)) >= 6

        await wait_for(some_in_flight)
        calls_before = {r: await daemon.journal.count_model_calls(r) for r in ids}
    # Shut down mid-flight: the runs were cancelled where they stood, not finished.
    assert any(c < 8 for c in calls_before.values())
    async with running_daemon(settings) as (daemon, client):

        async def all_done() -> list[RunSummary]:
            runs = [await show(client, r) for r in ids]
            return runs if all(r.status in TERMINAL for r in runs) else []

        runs = await wait_for(all_done, timeout=60)
        calls_after = {r: await daemon.journal.count_model_calls(r) for r in ids}
    assert [r.status for r in runs] == ["succeeded"] * len(ids)
    lines = ledger_lines(settings.data_dir)
    keys = [line[0] for line in lines]
    assert len(keys) == len(set(keys)), "a side effect happened twice"
    assert collections.Counter(line[1] for line in lines) == {r: 3 for r in ids}
    # No model call was repeated: each run has exactly its 8 recorded calls.
    assert calls_after == dict.fromkeys(ids, 8)


async def test_on_failure_skip_goes_on_and_escalate_stops_for_a_human(tmp_path: Path) -> None:
    skip = make_settings(tmp_path / "skip", limits__step_retries=0,
                         roles__review__on_failure="skip")
    async with running_daemon(skip) as (_daemon, client):
        run = await run_task(client, "judge it", scenario="failing_review")
    assert run.status == "succeeded"
    assert run.steps[0].status == "skipped"
    escalate = make_settings(tmp_path / "esc", limits__step_retries=0,
                             roles__review__on_failure="escalate")
    async with running_daemon(escalate) as (_daemon, client):
        run = await run_task(client, "judge it", scenario="failing_review")
    assert run.status == "needs_human"
    assert "failed 1 times" in (run.error or "")


async def test_cancel_stops_a_run_and_resume_goes_on_from_where_it_stopped(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path, models__scripted_latency_ms=300.0,
                             limits__step_retries=0, roles__review__on_failure="escalate")
    async with running_daemon(settings) as (daemon, client):
        task = TaskSubmission(id="slow-1", text="ledger", scenario="ledger")
        await client.publish_task(encoder.encode(task), msg_id="slow-1")

        async def started() -> bool:
            return (await daemon.journal.run_status("slow-1")) == "running"

        await wait_for(started)
        raw = await api(client, "cancel", encoder.encode(RunQuery(run_id="slow-1")),
                                   timeout=5)
        assert isinstance(reply_decoder.decode(raw), RunSummary)

        async def cancelled() -> bool:
            return (await daemon.journal.run_status("slow-1")) == "cancelled"

        await wait_for(cancelled)
        again = reply_decoder.decode(
            await api(client, "cancel", encoder.encode(RunQuery(run_id="slow-1")), timeout=5))
        assert "already ended: cancelled" in getattr(again, "error", "")
        # A run that escalated can be resumed; completed steps are not done again.
        esc = await run_task(client, "judge it", scenario="failing_review")
        assert esc.status == "needs_human"
        raw = await api(client, "resume", encoder.encode(RunQuery(run_id=esc.id)),
                                   timeout=5)
        assert isinstance(reply_decoder.decode(raw), RunSummary)

        async def ended_again() -> RunSummary | None:
            run = await show(client, esc.id)
            return run if run.status in TERMINAL and run.status != "queued" else None

        with anyio.fail_after(30):
            resumed = await wait_for(ended_again)
        calls = await daemon.journal.count_model_calls(esc.id)
    assert resumed.status == "needs_human"  # the same script fails again: escalated again
    assert calls == 1 + 1 + 1  # the plan once (not re-planned), the step in each epoch

"""Every terminal transition publishes, whoever makes it; runs live in the supervision tree.

Against a whole daemon in-process on a real nats-server and SQLite file: a client waiting
on ``warden.done.<run>`` hears a run cancelled by request and a run whose supervisor kept
crashing; ``warden submit --wait`` (a real CLI process) returns for a cancelled run; a
crashed run supervisor is restarted as a replay; the daemon outlives any run's crashes.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from warden.bus import subjects
from warden.bus.connection import Bus
from warden.bus.wire import (
    RunEvent,
    RunQuery,
    RunSummary,
    TaskSubmission,
    encoder,
    event_decoder,
    reply_decoder,
)
from warden.supervisor.daemon import Daemon
from warden.supervisor.run import RunSupervisor

from tests.integration.harness import api, make_settings, run_task, running_daemon, show, wait_for

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


class Ending:
    """The first ``RunEvent`` heard on a run's ``warden.done.<run>``."""

    def __init__(self) -> None:
        self.heard = anyio.Event()
        self.event: RunEvent | None = None

    async def wait(self, seconds: float = 20.0) -> RunEvent:
        with anyio.fail_after(seconds):
            await self.heard.wait()
        assert self.event is not None
        return self.event


@asynccontextmanager
async def ending_of(client: Bus, run_id: str) -> AsyncIterator[Ending]:
    """Listen on ``warden.done.<run_id>`` from now on."""
    ending = Ending()
    async with client.subscribe(subjects.run_done(run_id)) as endings, \
            anyio.create_task_group() as tg:

        async def listen() -> None:
            async for envelope in endings:
                ending.event = event_decoder.decode(envelope.data)
                ending.heard.set()
                return

        tg.start_soon(listen)
        yield ending
        tg.cancel_scope.cancel()


async def submit(client: Bus, run_id: str, text: str, scenario: str | None = None) -> None:
    task = TaskSubmission(id=run_id, text=text, scenario=scenario)
    await client.publish_task(encoder.encode(task), msg_id=run_id)


async def until_status(daemon: Daemon, run_id: str, status: str) -> None:
    async def reached() -> bool:
        return await daemon.journal.run_status(run_id) == status

    await wait_for(reached)


async def cancel(client: Bus, run_id: str) -> RunSummary:
    raw = await api(client, "cancel", encoder.encode(RunQuery(run_id=run_id)),
                               timeout=10)
    reply = reply_decoder.decode(raw)
    assert isinstance(reply, RunSummary), reply
    return reply


async def test_a_client_waiting_on_done_hears_a_run_cancelled_by_request(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path, models__scripted_latency_ms=300.0)
    async with running_daemon(settings) as (daemon, client):
        async with ending_of(client, "slow-1") as heard:
            await submit(client, "slow-1", "ledger", scenario="ledger")
            await until_status(daemon, "slow-1", "running")
            reply = await cancel(client, "slow-1")
            ending = await heard.wait()
        run = await show(client, "slow-1")
    assert reply.status == "cancelled"  # the reply comes once the run has stopped
    assert (ending.run_id, ending.kind, ending.status) == ("slow-1", "status", "cancelled")
    assert ending.message == "cancelled by request"
    assert (run.status, run.error) == ("cancelled", "cancelled by request")


async def test_a_run_waiting_for_a_human_is_cancelled_with_its_ending_published(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path, limits__step_retries=0,
                             roles__review__on_failure="escalate")
    async with running_daemon(settings) as (_daemon, client):
        run = await run_task(client, "judge it", scenario="failing_review")
        assert run.status == "needs_human"
        async with ending_of(client, run.id) as heard:
            await cancel(client, run.id)
            ending = await heard.wait()
    assert ending.status == "cancelled"


async def test_a_run_whose_supervisor_keeps_crashing_ends_failed_and_says_so_on_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    crashes: list[str] = []

    async def crash(self: RunSupervisor) -> str:
        crashes.append(self.run_id)
        raise RuntimeError(f"crash {len(crashes)}")

    settings = make_settings(tmp_path, supervision__max_restarts=2, supervision__period_s=60.0)
    async with running_daemon(settings) as (daemon, client):
        with monkeypatch.context() as patched:
            patched.setattr(RunSupervisor, "run", crash)
            async with ending_of(client, "doomed") as heard:
                await submit(client, "doomed", "fizzbuzz")
                ending = await heard.wait()
        run = await show(client, "doomed")
        # One run's crashes never reach the daemon: the next run succeeds, and neither
        # the runs subtree nor any other child of the root was restarted.
        after = await run_task(client, "fizzbuzz")
        children = daemon.root.which_children()
    assert crashes == ["doomed"] * 3  # the first start and max_restarts restarts
    assert (ending.run_id, ending.status) == ("doomed", "failed")
    assert ending.message == "run crashed: RuntimeError('crash 3')"
    assert (run.status, run.error) == ("failed", "run crashed: RuntimeError('crash 3')")
    assert after.status == "succeeded"
    assert [c.name for c in children] == [
        "worker.research", "worker.code", "worker.review", "approvals", "anomalies", "runs",
        "api", "intake", "http"]
    assert all(c.running and c.restarts == 0 for c in children)


async def test_a_crashed_run_supervisor_is_restarted_as_a_replay_from_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_run_steps = RunSupervisor._run_steps
    crashed: list[str] = []

    async def crash_once_after_planning(self: RunSupervisor, plan: object) -> None:
        if not crashed:
            crashed.append(self.run_id)
            raise RuntimeError("crash after planning")
        await real_run_steps(self, plan)  # type: ignore[arg-type]

    monkeypatch.setattr(RunSupervisor, "_run_steps", crash_once_after_planning)
    async with running_daemon(make_settings(tmp_path)) as (daemon, client):
        run = await run_task(client, "Write fizzbuzz(n) in Python, with pytest tests.")
        calls = await daemon.journal.count_model_calls(run.id)
    assert crashed == [run.id]
    assert run.status == "succeeded", run.error
    # The plan was taken from the journal, not asked for again: plan + 7 turns + synthesis.
    assert calls == 1 + 2 + 3 + 2 + 1


async def test_warden_submit_wait_returns_for_a_run_cancelled_by_request(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path, models__scripted_latency_ms=300.0)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WARDEN_")}
    async with running_daemon(settings) as (daemon, client):
        async with await anyio.open_process(
            [sys.executable, "-m", "warden", "submit", "ledger", "--scenario", "ledger",
             "--id", "cli-1", "--wait", "--json", "--timeout", "60",
             "--data-dir", settings.data_dir],
            env=env,
        ) as proc:
            await until_status(daemon, "cli-1", "running")
            await cancel(client, "cli-1")
            assert proc.stdout is not None
            out = b""
            with anyio.fail_after(30):
                async for chunk in proc.stdout:
                    out += chunk
                code = await proc.wait()
    assert code == 1  # the run ended other than succeeded
    assert json.loads(out.decode())["status"] == "cancelled"
